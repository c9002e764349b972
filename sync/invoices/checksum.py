"""The usage checksum: the reconciliation file's Azure lines against the daily-rated usage file.

Per invoice, overall, per subscription and per meter (``ProductId`` + ``SkuId``: unique per
subscription and meter in both files), the pre-tax total of the reconciliation lines
(``Subtotal``) of every subscription with Azure usage or Azure lines (``ProductCategory`` Azure,
the Azure plan product) is compared with the sum of the usage lines' ``BillingPreTaxTotal``.

The difference (reconciliation minus usage) is explained where the lines allow it, per cause:

* ``one_file``: reservations, savings plans and marketplace items appear in the reconciliation
  file only (a ``ReservationOrderId``; ``ProductCategory`` SaaS or a ``PublisherName`` other than
  Microsoft; or named in ``ChargeType``/``ProductName``/``SkuName``/``BenefitType``); usage of a meter the reconciliation file has
  no line for appears in the usage file only;
* ``credits``: credits and adjustments (``CreditReasonCode``, or a credit/refund/adjustment
  ``ChargeType``), on either side;
* ``taxes``: a reconciliation line without ``Subtotal`` is counted by its ``Total``; its
  ``TaxTotal`` is explained as tax;
* ``currency``: usage converted at another ``PCToBCExchangeRate`` than the reconciliation line of
  its subscription: ``EffectiveUnitPrice x BillableQuantity x (recon rate - usage rate)``;
* ``rounding``: a reconciliation line whose ``Subtotal`` equals Microsoft's formula
  ``ROUNDDOWN(ROUNDDOWN(EffectiveUnitPrice x BillableQuantity, 2) x PCToBCExchangeRate, 2)``
  contributes ``Subtotal - EffectiveUnitPrice x BillableQuantity x PCToBCExchangeRate``; a usage
  line the same way against its unrounded product.

What the tolerance is held against is the difference less its rounding part (Microsoft's own
formula is not a discrepancy): ``passed`` when that is zero for every subscription and the invoice
(the files differ only by Microsoft's rounding; the arithmetic runs in a 100-digit context, so a
rounding residue is exact, never a 1e-27 remainder of the default 28 digits), ``within_tolerance``
when it is not zero but each subscription and the whole invoice stay within the provider's
tolerance (an amount in the provider currency, or a percentage of the reconciliation total),
``mismatch`` otherwise.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterator

from shared.providers import Tolerance

from .lines import Line
from .money import exact, plain, usage_subtotal

ZERO = Decimal(0)
# Meters compared per invoice; past this, meters are compared at subscription level only, so
# memory stays bounded (about 500 bytes a meter: 50 MB at the cap) for invoices with millions of
# Azure lines. (A 1,000,000-line simulated invoice has 500,000 meters; real ones far fewer.)
MAX_METERS = 100_000
AZURE_PLAN_PRODUCT = "DZH318Z0BQ3P"  # the Azure plan's product id in reconciliation files
CAUSES = ("one_file", "credits", "taxes", "currency", "rounding")
_ONE_FILE = re.compile(r"reserv|savings ?plan|marketplace|\bsaas\b", re.IGNORECASE)
_CREDIT = re.compile(r"credit|refund|adjust", re.IGNORECASE)
_ONE_FILE_COLUMNS = ("chargeTypeOriginal", "productName", "skuName", "benefitType", "productCategory")


class ChecksumStatus(enum.StrEnum):
    PASSED = "passed"
    WITHIN_TOLERANCE = "within_tolerance"
    MISMATCH = "mismatch"
    NOT_APPLICABLE = "not_applicable"  # no usage file for this invoice (no Azure lines)


@dataclass
class Totals:
    recon: Decimal = ZERO
    usage: Decimal = ZERO
    causes: dict[str, Decimal] = field(default_factory=dict)
    recon_lines: int = 0

    @property
    def difference(self) -> Decimal:
        return self.recon - self.usage

    @property
    def explained(self) -> Decimal:
        return sum(self.causes.values(), ZERO)

    @property
    def counted(self) -> Decimal:
        """The difference the tolerance is held against: less its rounding part."""
        return self.difference - self.causes.get("rounding", ZERO)

    def explain(self, cause: str, amount: Decimal) -> None:
        if amount:
            total = self.causes.get(cause, ZERO) + amount
            if total:
                self.causes[cause] = total
            else:
                self.causes.pop(cause, None)

    def add(self, other: "Totals") -> None:
        self.recon += other.recon
        self.usage += other.usage
        for cause, amount in other.causes.items():
            self.explain(cause, amount)

    def cause_text(self) -> str:
        return "; ".join(f"{cause} {plain(self.causes[cause])}" for cause in CAUSES if self.causes.get(cause))


class MeterTotals:
    """A meter's totals, slotted: an invoice has about as many meters as Azure lines, so this is
    the checksum's per-line-sized structure (causes only rounding, or one_file once settled)."""

    __slots__ = ("recon", "usage", "rounding", "one_file", "recon_lines")

    def __init__(self) -> None:
        self.recon = self.usage = self.rounding = self.one_file = ZERO
        self.recon_lines = 0

    def explain(self, cause: str, amount: Decimal) -> None:
        self.rounding += amount  # the only cause added line by line

    @property
    def causes(self) -> dict[str, Decimal]:
        return {k: v for k, v in (("one_file", self.one_file), ("rounding", self.rounding)) if v}

    difference = Totals.difference
    explained = Totals.explained
    counted = Totals.counted
    cause_text = Totals.cause_text


@dataclass
class SubscriptionTotals(Totals):
    customer: str = ""
    has_usage: bool = False
    azure: bool = False
    rate: Decimal | None = None  # the reconciliation's exchange rate for this subscription
    meters: dict[str, MeterTotals] = field(default_factory=dict)


@dataclass(frozen=True)
class MismatchRow:
    subscription: str
    customer: str
    meter: str
    recon: Decimal
    usage: Decimal
    difference: Decimal
    cause: str
    unexplained: Decimal


@dataclass
class ChecksumResult:
    status: ChecksumStatus
    overall: Totals
    allowed: Decimal
    tolerance: str
    rows: list[MismatchRow]
    subscriptions_over: int
    # the worst subscription, as an amount and as a percentage of its reconciliation total
    # (what an override tolerance at acceptance is checked against)
    worst_amount: Decimal = ZERO
    worst_percent: Decimal = ZERO

    def to_fields(self) -> dict[str, Any]:
        overall = self.overall
        return {"checksum_status": self.status.value, "checksum_recon_total": plain(overall.recon),
                "checksum_usage_total": plain(overall.usage), "checksum_difference": plain(overall.difference),
                "checksum_explained": plain(overall.explained), "checksum_explained_by": overall.cause_text(),
                "checksum_allowed_difference": plain(self.allowed), "checksum_tolerance": self.tolerance,
                "checksum_subscriptions_over": self.subscriptions_over,
                "checksum_counted": plain(overall.counted), "checksum_worst_amount": plain(self.worst_amount),
                "checksum_worst_percent": plain(self.worst_percent)}

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "difference": plain(self.overall.difference),
                "explained": plain(self.overall.explained),
                "explainedBy": {c: plain(v) for c, v in self.overall.causes.items()},
                "reconTotal": plain(self.overall.recon), "usageTotal": plain(self.overall.usage),
                "allowedDifference": plain(self.allowed), "subscriptionsOver": self.subscriptions_over}


def _rate(line: Line) -> Decimal:
    return line.amount("pcToBCExchangeRate") or Decimal(1)


def _is_credit(line: Line) -> bool:
    return bool(line.entity.get("creditReasonCode")) or bool(_CREDIT.search(line.entity.get("chargeTypeOriginal") or ""))


def _is_marketplace(line: Line) -> bool:
    """A marketplace (third-party) item: ``ProductCategory`` SaaS, or a publisher other than
    Microsoft (Microsoft's own lines name "Microsoft Corporation" or no publisher)."""
    publisher = str(line.entity.get("publisherName") or "").strip().lower()
    return str(line.entity.get("productCategory") or "").strip().lower() == "saas" or \
        bool(publisher) and not publisher.startswith("microsoft")


def _is_one_file(line: Line) -> bool:
    """Reservations and savings plans (a ``ReservationOrderId``, or named), marketplace items."""
    return bool(line.entity.get("reservationOrderId")) or _is_marketplace(line) or \
        any(_ONE_FILE.search(str(line.entity.get(c) or "")) for c in _ONE_FILE_COLUMNS)


def _meter_key(line: Line) -> str:
    product, sku = line.entity.get("productId") or "", line.entity.get("skuId") or ""
    return f"{product}|{sku}".lower() if product or sku else ""


def _rounding(amount: Decimal, line: Line, rate: Decimal) -> Decimal:
    """``amount`` less its unrounded product when it is Microsoft's rounded one (else 0)."""
    price, quantity = line.amount("effectiveUnitPrice"), line.billable_quantity()
    if price is None or quantity is None:
        return ZERO
    exact = price * quantity * rate
    return amount - exact if usage_subtotal(price, quantity, rate) == amount or abs(amount - exact) < Decimal("0.01") \
        else ZERO


class UsageChecksum:
    """Streams reconciliation lines (all of them first), then usage lines; memory per subscription
    (and meter), never per line."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, SubscriptionTotals] = {}
        self.usage_lines = 0
        self._meter_count = 0
        self._settled = False

    def _sub(self, line: Line) -> SubscriptionTotals:
        key = line.subscription_id or "-"
        found = self.subscriptions.get(key)
        if found is None:
            found = self.subscriptions[key] = SubscriptionTotals(customer=line.customer_id or "")
        return found

    def _meter_key(self, line: Line) -> str:
        return _meter_key(line)

    def _meter(self, sub: SubscriptionTotals, line: Line) -> MeterTotals | None:
        meter = self._meter_key(line)
        if not meter:
            return None
        found = sub.meters.get(meter)
        if found is None and self._meter_count < MAX_METERS:  # beyond: subscription level only
            found = sub.meters[meter] = MeterTotals()
            self._meter_count += 1
        return found

    @exact
    def add_recon(self, line: Line) -> None:
        sub = self._sub(line)
        subtotal = line.amount("subtotal")
        pretax = subtotal if subtotal is not None else (line.amount("total") or ZERO)
        if subtotal is None:
            sub.explain("taxes", line.amount("tax") or ZERO)
        sub.recon += pretax
        # reservations, savings plans, marketplace items and credits are Azure plan lines too:
        # their subscription is compared even when it has no usage this period
        if _is_one_file(line):
            sub.azure = True
            sub.explain("one_file", pretax)
            return
        if _is_credit(line):
            sub.azure = True
            sub.explain("credits", pretax)
            return
        sub.azure = sub.azure or str(line.entity.get("productCategory") or "").lower() == "azure" \
            or "usage" in (line.entity.get("chargeType") or "") \
            or str(line.entity.get("productId") or "").upper() == AZURE_PLAN_PRODUCT
        rate = _rate(line)
        sub.rate = sub.rate if sub.rate is not None else rate
        rounding = _rounding(pretax, line, rate)
        sub.explain("rounding", rounding)
        meter = self._meter(sub, line)
        if meter is not None:
            meter.recon += pretax
            meter.recon_lines += 1
            meter.explain("rounding", rounding)

    @exact
    def add_usage(self, line: Line) -> None:
        self.usage_lines += 1
        sub = self._sub(line)
        sub.has_usage = True
        rate = _rate(line)
        amount = line.amount("billingPreTaxTotal")
        if amount is None:
            amount = (line.amount("pricingPreTaxTotal") or ZERO) * rate
        sub.usage += amount
        meter = self._meter(sub, line)
        if meter is not None:
            meter.usage += amount
        if _is_credit(line):
            sub.explain("credits", -amount)
            return
        rounding = _rounding(amount, line, rate)
        sub.explain("rounding", -rounding)
        if meter is not None:
            meter.explain("rounding", -rounding)
        price, quantity = line.amount("effectiveUnitPrice"), line.billable_quantity()
        if sub.rate is not None and sub.rate != rate and price is not None and quantity is not None:
            sub.explain("currency", price * quantity * (sub.rate - rate))

    def _settle(self) -> None:
        """Usage of a meter without a reconciliation line is in the usage file only (once)."""
        if self._settled:
            return
        self._settled = True
        for sub in self.subscriptions.values():
            for meter in sub.meters.values():
                if not meter.recon_lines and meter.usage:
                    sub.explain("rounding", -meter.rounding)  # the whole meter is one_file
                    sub.explain("one_file", -meter.usage)
                    meter.rounding, meter.one_file = ZERO, -meter.usage

    def compared(self) -> Iterator[tuple[str, SubscriptionTotals]]:
        """The subscriptions the checksum covers: every one with usage or Azure reconciliation lines."""
        for key, sub in sorted(self.subscriptions.items()):
            if sub.has_usage or sub.azure:
                yield key, sub

    @exact
    def result(self, tolerance: Tolerance) -> ChecksumResult:
        self._settle()
        overall = Totals()
        rows: list[MismatchRow] = []
        over = 0
        only_rounding = True
        worst_amount = worst_percent = ZERO
        for key, sub in self.compared():
            overall.add(sub)
            only_rounding = only_rounding and sub.counted == 0
            worst_amount = max(worst_amount, abs(sub.counted))
            if sub.counted:
                worst_percent = max(worst_percent, _percent(sub.counted, sub.recon))
            if abs(sub.counted) > tolerance.allowed_difference(sub.recon):
                over += 1
            if sub.difference:
                rows.append(_row(key, sub, ""))
            rows.extend(_row(key, meter, name, customer=sub.customer)  # meters beyond Microsoft's rounding
                        for name, meter in sorted(sub.meters.items()) if meter.counted)
        if not self.usage_lines and not any(True for _ in self.compared()):
            return ChecksumResult(ChecksumStatus.NOT_APPLICABLE, overall, ZERO, str(tolerance), [], 0)
        allowed = tolerance.allowed_difference(overall.recon)
        if only_rounding and overall.counted == 0:
            status = ChecksumStatus.PASSED
        elif over == 0 and abs(overall.counted) <= allowed:
            status = ChecksumStatus.WITHIN_TOLERANCE
        else:
            status = ChecksumStatus.MISMATCH
        rows.sort(key=lambda r: (-abs(r.difference), r.subscription, r.meter))
        return ChecksumResult(status, overall, allowed, str(tolerance), rows, over, worst_amount, worst_percent)


def _percent(part: Decimal, whole: Decimal) -> Decimal:
    return Decimal(100) if not whole else abs(part) * 100 / abs(whole)


def within(tolerance: Tolerance, *, counted: Decimal, recon: Decimal, worst_amount: Decimal,
           worst_percent: Decimal) -> bool:
    """Whether stored checksum figures pass ``tolerance`` (an acceptance's override)."""
    if abs(counted) > tolerance.allowed_difference(recon):
        return False
    return worst_percent <= tolerance.value if tolerance.is_percent else worst_amount <= tolerance.value


def _row(key: str, totals: Any, meter: str, *, customer: str | None = None) -> MismatchRow:
    customer = customer if customer is not None else getattr(totals, "customer", "")
    return MismatchRow(key, customer, meter, totals.recon, totals.usage, totals.difference, totals.cause_text(),
                       totals.difference - totals.explained)


__all__ = ["CAUSES", "ChecksumResult", "ChecksumStatus", "MismatchRow", "Totals", "UsageChecksum", "within"]
