"""What a test planted in one invoice's billing files (the control API's billing knobs).

Every invoice has a plan; the default plan plants nothing, so the reconciliation file, the
daily-rated usage file and the invoice total agree to within Microsoft's rounding.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from simulator.clock import iso, parse_iso

# Pricing currency is USD; the billing currency's PCToBCExchangeRate (9 decimals, as Microsoft prints).
EXCHANGE_RATES = {"USD": Decimal("1"), "EUR": Decimal("0.846202666"), "GBP": Decimal("0.771236514"),
                  "AUD": Decimal("1.512734019"), "SEK": Decimal("9.873410552"), "DKK": Decimal("6.312084117")}

# Lines a plan can add after the regular ones. Which file each kind appears in:
RECON_ONLY = ("reservation", "savings_plan", "marketplace", "credit", "adjustment", "unknown_customer")
BOTH_FILES = ("unknown_subscription",)
USAGE_ONLY = ("usage_only",)
EXTRA_KINDS = RECON_ONLY + BOTH_FILES + USAGE_ONLY
NOT_READY_ANSWERS = ("5000", "empty")


class PlanError(ValueError):
    """A knob value the simulator cannot apply (the control API answers 400)."""


def _decimal(value, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PlanError(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise PlanError(f"{name} must be finite")
    return number


@dataclass
class BillingPlan:
    exchange_rate: Decimal | None = None        # None: EXCHANGE_RATES[invoice currency]
    usage_exchange_rate: Decimal | None = None  # None: the reconciliation file's rate
    extras: list[str] = field(default_factory=list)
    usage_mismatch: dict[str, Decimal] = field(default_factory=dict)  # subscription id (lower) -> amount
    usage_ready: bool = True
    usage_available_at: dt.datetime | None = None   # on the simulator clock; None: when usage_ready
    usage_not_ready: str = "5000"               # "5000": the export fails; "empty": succeeds with no blobs
    # a specialization name: the discounted (partner-earned-credit) usage lines say in BenefitType
    # that their discount is that Azure specialization's, so the pricing modes differ on them
    specialization_discount: str = ""

    def rate_for(self, currency: str) -> Decimal:
        if self.exchange_rate is not None:
            return self.exchange_rate
        return EXCHANGE_RATES.get(currency.upper(), Decimal("1"))

    def usage_available(self, now: dt.datetime) -> bool:
        if self.usage_available_at is not None:
            return now >= self.usage_available_at
        return self.usage_ready

    def to_json(self) -> dict:
        return {"exchangeRate": None if self.exchange_rate is None else str(self.exchange_rate),
                "usageExchangeRate": None if self.usage_exchange_rate is None else str(self.usage_exchange_rate),
                "extras": list(self.extras),
                "usageMismatch": {sub: str(amount) for sub, amount in self.usage_mismatch.items()},
                "usageReady": self.usage_ready,
                "usageAvailableAt": iso(self.usage_available_at) if self.usage_available_at else None,
                "usageNotReady": self.usage_not_ready, "specializationDiscount": self.specialization_discount}

    def apply(self, changes: dict, now: dt.datetime) -> None:
        """Apply control-API knobs (camelCase or snake_case); raises PlanError on bad input."""
        known = {"exchangeRate", "extras", "usageMismatch", "usageReady", "usageDelayDays", "usageAvailableAt",
                 "usageNotReady", "specializationDiscount", "usageExchangeRate"}
        changes = {_camel(k): v for k, v in changes.items()}
        unknown = set(changes) - known
        if unknown:
            raise PlanError(f"unknown billing knobs: {sorted(unknown)}")
        if "exchangeRate" in changes:
            self.exchange_rate = _rate(changes["exchangeRate"], "exchangeRate")
        if "extras" in changes:
            self.extras = _extras(changes["extras"])
        if "usageExchangeRate" in changes:
            self.usage_exchange_rate = _rate(changes["usageExchangeRate"], "usageExchangeRate")
        if "specializationDiscount" in changes:
            name = changes["specializationDiscount"]
            if not isinstance(name, str) or len(name) > 100:
                raise PlanError("specializationDiscount must be a specialization's name (text, at most 100 characters)")
            self.specialization_discount = name.strip()
        if "usageMismatch" in changes:
            mismatch = changes["usageMismatch"]
            if not isinstance(mismatch, dict):
                raise PlanError("usageMismatch must be an object {subscriptionId: amount}")
            self.usage_mismatch = {str(k).lower(): _decimal(v, "usageMismatch amount") for k, v in mismatch.items()}
        self._apply_readiness(changes, now)

    def _apply_readiness(self, changes: dict, now: dt.datetime) -> None:
        if "usageReady" in changes:
            self.usage_ready, self.usage_available_at = bool(changes["usageReady"]), None
        if "usageDelayDays" in changes:
            days = _decimal(changes["usageDelayDays"], "usageDelayDays")
            self.usage_available_at = now + dt.timedelta(days=float(days))
        if "usageAvailableAt" in changes:
            value = changes["usageAvailableAt"]
            try:
                self.usage_available_at = parse_iso(value) if value else None
            except (TypeError, ValueError, AttributeError):
                raise PlanError("usageAvailableAt must be an ISO-8601 time") from None
        if "usageNotReady" in changes:
            if changes["usageNotReady"] not in NOT_READY_ANSWERS:
                raise PlanError(f"usageNotReady must be one of {NOT_READY_ANSWERS}")
            self.usage_not_ready = changes["usageNotReady"]


def _rate(value, name: str) -> Decimal | None:
    """An exchange-rate knob: None (the default rate) or a positive number."""
    rate = None if value is None else _decimal(value, name)
    if rate is not None and rate <= 0:
        raise PlanError(f"{name} must be positive")
    return rate


def _camel(name: str) -> str:
    head, *rest = str(name).split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _extras(value) -> list[str]:
    """A list of kinds, or {kind: count}."""
    if isinstance(value, dict):
        try:
            value = [kind for kind, count in value.items() for _ in range(int(count))]
        except (TypeError, ValueError):
            raise PlanError("extras counts must be integers") from None
    if not isinstance(value, list) or any(kind not in EXTRA_KINDS for kind in value):
        raise PlanError(f"extras must list kinds from {EXTRA_KINDS} (or map them to counts)")
    return list(value)
