"""Deterministic per-line randomness shared by every line-item module (no state, no lists)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

MASK = (1 << 64) - 1

# (MeterCategory, MeterSubCategory, MeterName, Unit, ConsumedService, resource type, ProductId, AvailabilityId)
METERS = [
    ("Virtual Machines", "D/DS Series", "D2 v3/D2s v3", "1 Hour", "Microsoft.Compute", "virtualMachines",
     "DZH318Z0BQ4D", "DZH318Z0BQ5L"),
    ("Storage", "Standard Page Blob", "LRS Data Stored", "1 GB/Month", "Microsoft.Storage", "storageAccounts",
     "DZH318Z0BNZ5", "DZH318Z08B80"),
    ("Azure App Service", "Standard Plan", "S1", "1 Hour", "Microsoft.Web", "sites", "DZH318Z0BPHF", "DZH318Z0BPJ1"),
    ("Bandwidth", "Data Transfer", "Data Transfer Out (GB) - Zone 1", "1 GB", "Microsoft.Network",
     "publicIPAddresses", "DZH318Z0BNVX", "DZH318Z0BNW3"),
    ("SQL Database", "Single Standard", "S0 DTUs", "1/Day", "Microsoft.Sql", "servers", "DZH318Z0BQ35", "DZH318Z0BQ3B"),
]
REGIONS = ["EASTUS", "WESTEUROPE", "NORTHEUROPE", "EASTUS2", "UKSOUTH"]


def mix(value: int) -> int:
    """splitmix64 finaliser: cheap, well spread, deterministic across runs and platforms."""
    z = (value + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def fake_guid(h: int) -> str:
    x = f"{mix(h):016x}{mix(h ^ 0x5555):016x}"
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:32]}"


def date_text(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def tdiv(numerator: int, denominator: int) -> int:
    """Integer division toward zero: Excel's ROUNDDOWN on scaled integers."""
    return numerator // denominator if numerator >= 0 else -((-numerator) // denominator)


def round_half_even_drop(value: int, digits: int) -> int:
    """Drop ``digits`` decimal digits of a scaled integer, rounding half to even."""
    quotient, remainder = divmod(value, 10 ** digits)
    half = 5 * 10 ** (digits - 1)
    if remainder > half or (remainder == half and quotient % 2):
        quotient += 1
    return quotient


def scaled(value: int, places: int) -> Decimal:
    """The exact Decimal value/10**places (built from text: no context rounding)."""
    return Decimal(f"{value}e-{places}")
