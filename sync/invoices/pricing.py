"""What a usage line costs the partner, what a markup applies to, and its legacy billing period.

Every usage row keeps the price fields the files carry (``unitPrice``, ``effectiveUnitPrice``,
partner earned credit ``pecPercentage``/``pecRate``/``hasPartnerEarnedCredit``, credit
``creditType``/``creditPercentage`` and the pricing benefit ``benefitType``/``benefitId``/
``benefitOrderId``) and gets two amounts in the billing currency:

* ``partnerCost`` (what the partner pays): ``BillingPreTaxTotal``; when absent,
  ``EffectiveUnitPrice x BillableQuantity (else Quantity) x PCToBCExchangeRate``.
* ``customerPriceBasis`` (what a markup is applied to), by the provider's Azure Specialization:
  ``none``: the effective price as Microsoft charged it, no specialization adjustment
  (= ``partnerCost``); ``pass-through``: the discounted cost (= ``partnerCost``, the discount
  goes to the customer); ``retain``: the undiscounted cost, ``partnerCost`` plus the line's
  specialization discount ``(UnitPrice - EffectiveUnitPrice) x quantity x rate``, kept as margin.
  A line has a specialization discount when a pricing benefit field (``benefitType``,
  ``priceAdjustmentDescription``, ``creditType``) names a specialization or one the partner
  holds; other lines' basis is ``partnerCost`` in every mode.

Billing Start Date: legacy Azure usage is billed in periods that start on that day of the month
(clamped to the month's last day); each legacy usage line gets ``billingPeriodStart`` and
``billingPeriodEnd`` (the day before the next start) from its ``usageDate``.
"""
from __future__ import annotations

import calendar
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Iterable

from shared.clock import parse_iso
from shared.providers import AzureSpecializationMode
from shared.reference_data import AZURE_SPECIALIZATIONS

from .lines import Line
from .money import exact, plain

_BENEFIT_COLUMNS = ("benefitType", "priceAdjustmentDescription", "creditType")


class Pricing:
    def __init__(self, mode: AzureSpecializationMode | str, held: Iterable[str] = ()):
        self.mode = AzureSpecializationMode(mode or AzureSpecializationMode.NONE)
        words = {"specialization", "specialisation"}
        for key in held:
            words.add(key.lower())
            words.add(AZURE_SPECIALIZATIONS.get(key, key).lower())
        self._words = tuple(words)

    def _has_specialization(self, line: Line) -> bool:
        text = " ".join(str(line.entity.get(c) or line.lowered.get(c.lower()) or "") for c in _BENEFIT_COLUMNS).lower()
        return any(word in text for word in self._words)

    @exact
    def apply(self, line: Line) -> None:
        """Add ``partnerCost`` and ``customerPriceBasis`` to the line's entity."""
        quantity = line.billable_quantity()
        rate = line.amount("pcToBCExchangeRate") or Decimal(1)
        price, effective = line.amount("unitPrice"), line.amount("effectiveUnitPrice")
        cost = line.amount("billingPreTaxTotal")
        if cost is None and effective is not None and quantity is not None:
            cost = effective * quantity * rate
        if cost is None:
            return
        basis = cost
        if (self.mode is AzureSpecializationMode.RETAIN and price is not None and effective is not None
                and quantity is not None and self._has_specialization(line)):
            basis = cost + (price - effective) * quantity * rate
        line.entity["partnerCost"] = plain(cost)
        line.entity["customerPriceBasis"] = plain(basis)


def billing_period(usage_day: date, start_day: int) -> tuple[date, date]:
    """The billing period (first day, last day) holding ``usage_day`` for a period start day."""
    def start_in(year: int, month: int) -> date:
        return date(year, month, min(start_day, calendar.monthrange(year, month)[1]))

    start = start_in(usage_day.year, usage_day.month)
    if start > usage_day:
        year, month = (usage_day.year - 1, 12) if usage_day.month == 1 else (usage_day.year, usage_day.month - 1)
        start = start_in(year, month)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start, start_in(year, month) - timedelta(days=1)


def assign_billing_period(entity: dict[str, Any], start_day: int | None) -> None:
    """``billingPeriodStart``/``End`` of a legacy usage row from its usage date."""
    moment = parse_iso(entity.get("usageDate") or entity.get("chargeStart"))
    if moment is None:
        return
    first, last = billing_period(moment.date(), start_day or 1)
    entity["billingPeriodStart"] = first.isoformat()
    entity["billingPeriodEnd"] = last.isoformat()


__all__ = ["Pricing", "assign_billing_period", "billing_period"]
