"""The usage checksum of a legacy (D) invoice: its Azure billing lines against its daily usage.

Legacy Azure (0145P) has no daily-rated usage file: the v1 daily usage line items
(``DailyUsageLineItem``) carry quantities (``consumedQuantity``) and no amounts, while the
billing line items (``UsageBasedLineItem``) carry one line per subscription and meter
(``resourceGuid``) with its ``consumedQuantity`` and ``pretaxCharges``. So the check is on
quantities, priced at the billing line's own rate to stay in money (the provider's tolerance is
an amount or a percentage): per subscription and meter, the usage counts
``pretaxCharges x used quantity / billed quantity``. The difference is therefore
``(billed - used quantity) x pretaxCharges / billed quantity`` and exactly 0 when the quantities
agree (one division per meter, after every line is in, so no per-line rounding residue). Usage of
a meter the invoice bills nothing for cannot be priced and counts 0; Office (license) lines are
not compared. The states and the mismatch report are the new-commerce checksum's.
"""
from __future__ import annotations

from decimal import Decimal

from shared.providers import Tolerance

from .checksum import ZERO, ChecksumResult, UsageChecksum
from .lines import Line
from .money import exact
from .reconciliation import V1_AZURE


class LegacyUsageChecksum(UsageChecksum):
    """Streams the legacy Azure billing lines (all of them first), then the daily usage lines."""

    def __init__(self) -> None:
        super().__init__()
        self._billed: dict[tuple[str, str], list[Decimal]] = {}  # (subscription, meter) -> [quantity, amount]
        self._used: dict[tuple[str, str], Decimal] = {}
        self._priced = False

    def _meter_key(self, line: Line) -> str:
        return str(line.entity.get("meterId") or "").lower()

    @exact
    def add_recon(self, line: Line) -> None:
        if line.source != V1_AZURE.name:
            return  # Office (license) lines have no usage
        sub = self._sub(line)
        amount = line.amount("subtotal")
        if amount is None:
            amount = line.amount("total") or ZERO
            sub.explain("taxes", line.amount("tax") or ZERO)
        sub.recon += amount
        sub.azure = True
        meter = self._meter(sub, line)
        if meter is not None:
            meter.recon += amount
            meter.recon_lines += 1
        billed = self._billed.setdefault((line.subscription_id or "-", self._meter_key(line)), [ZERO, ZERO])
        billed[0] += line.billable_quantity() or ZERO
        billed[1] += amount

    @exact
    def add_usage(self, line: Line) -> None:
        self.usage_lines += 1
        sub = self._sub(line)
        sub.has_usage = True
        self._meter(sub, line)
        key = (line.subscription_id or "-", self._meter_key(line))
        self._used[key] = self._used.get(key, ZERO) + (line.billable_quantity() or ZERO)

    @exact
    def _price_usage(self) -> None:
        if self._priced:
            return
        self._priced = True
        for (subscription, meter_key), used in self._used.items():
            quantity, amount = self._billed.get((subscription, meter_key), (ZERO, ZERO))
            priced = amount if used == quantity else (amount * used / quantity if quantity else ZERO)
            sub = self.subscriptions[subscription]
            sub.usage += priced
            meter = sub.meters.get(meter_key)
            if meter is not None:
                meter.usage += priced

    def result(self, tolerance: Tolerance) -> ChecksumResult:
        self._price_usage()
        return super().result(tolerance)


__all__ = ["LegacyUsageChecksum"]
