"""New-commerce reconciliation lines and the daily-rated usage rows behind them, generated lazily.

One invoice (or one unbilled period and currency) has two files that must agree the way
Microsoft's do:

* the **reconciliation file**: regular line ``i`` is license-based when ``i`` is even (an NCE
  seat subscription) and usage-based when odd (one Azure meter of one Azure subscription for the
  month: ``Quantity`` 1, ``BillableQuantity`` the month's consumption). Subtotals follow
  Microsoft's published formulas from the effective (PEC-discounted, prorated) price:
  usage ``ROUNDDOWN(ROUNDDOWN(EffectiveUnitPrice * BillableQuantity, 2) * PCToBCExchangeRate, 2)``,
  licenses ``ROUNDDOWN(EffectiveUnitPrice * PCToBCExchangeRate, 2) * BillableQuantity``;
  tax is 10 % of the subtotal rounded toward zero; ``Total = Subtotal + TaxTotal``.
* the **daily-rated usage file**: every usage-based line ``2k+1`` has exactly ``DAYS_PER_LINE``
  rows ``3k .. 3k+2`` whose ``Quantity`` values add up to its ``BillableQuantity``, with the same
  prices and rate; ``BillingPreTaxTotal = EffectiveUnitPrice * Quantity * PCToBCExchangeRate``
  (22 decimals), so the sums differ from the recon subtotal by the formula's rounding only.

The pair (``SubscriptionId``, ``SkuId``) of a usage-based line is unique within a file (the SKU
numbers the meter within each round over subscription x meter), so both files join on it exactly. Lines a
:class:`~simulator.billing_plan.BillingPlan` adds come after the regular ones in each file.
Amounts are scaled integers until they are rendered as exact Decimals.
"""
from __future__ import annotations

import hashlib
from decimal import Decimal

from simulator.billing_plan import BillingPlan, BOTH_FILES, USAGE_ONLY
from simulator.lineseed import METERS, fake_guid, mix, round_half_even_drop, scaled, tdiv

UNIT_PLACES, EUP_PLACES, QTY_PLACES, RATE_PLACES = 22, 24, 6, 9
DAYS_PER_LINE = 3
TAX_PERCENT = 10
PEC_TEXT = '["15.0% Partner earned credit for services managed"]'
_SKU_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTVWXZ"
_EXTRA_PRODUCTS = {  # kind -> (ProductId, SkuId, AvailabilityId, ProductName, PublisherName, ProductCategory, UnitType)
    "reservation": ("DZH318Z0BQ7Z", "00DV", "DZH318Z0BQ80", "Reserved VM Instance, Standard_D2s_v3, US East, 1 Year",
                    "Microsoft Corporation", "Azure", "1 Hour"),
    "savings_plan": ("CFQ7TTC0QNDN", "0001", "CFQ7TTC0QNDP", "Azure savings plan for compute, 1 Year",
                     "Microsoft Corporation", "Azure", "1 Hour"),
    "marketplace": ("DZH318Z0BMQ2", "0002", "DZH318Z0BMQ4", "Contoso Backup for Microsoft 365 (SaaS)",
                    "Contoso ISV Ltd", "SaaS", "Licenses"),
    "unknown_customer": ("CFQ7TTC0LF8Q", "0001", "CFQ7TTC0K5BF", "Microsoft 365 Business Premium",
                         "Microsoft Corporation", "OnlineServicesNCE", "Licenses"),
}


def recon_count(regular: int, extras: list[str]) -> int:
    return regular + sum(1 for kind in extras if kind not in USAGE_ONLY)


def usage_count(regular: int, extras: list[str]) -> int:
    bearing = sum(1 for kind in extras if kind in BOTH_FILES or kind in USAGE_ONLY)
    return DAYS_PER_LINE * (regular // 2 + bearing)


def _sku(cycle: int) -> str:
    text = ""
    for _ in range(4):
        cycle, digit = divmod(cycle, len(_SKU_ALPHABET))
        text = _SKU_ALPHABET[digit] + text
    return text


class NceFiles:
    """Both files of one stream context; ``ctx`` is a :class:`simulator.line_items.StreamContext`."""

    def __init__(self, ctx, regular: int, plan: BillingPlan | None = None):
        self.ctx, self.regular, self.plan = ctx, regular, plan or BillingPlan()
        self.rate = self.plan.rate_for(ctx.currency)
        self._rate = int(self.rate * 10 ** RATE_PLACES)
        # the usage file's rate: the reconciliation file's unless a test planted another
        self.usage_rate = self.plan.usage_exchange_rate or self.rate
        self._usage_rate = int(self.usage_rate * 10 ** RATE_PLACES)
        digest = hashlib.sha256(f"{ctx.seed}|{ctx.key}|onetime_billing".encode()).digest()
        self._base = int.from_bytes(digest[:8], "big")
        self._start, self._end = ctx.period_start.strftime("%Y-%m-%dT%H:%M:%SZ"), \
            ctx.period_end.strftime("%Y-%m-%dT%H:%M:%SZ")
        self._days = max(1, (ctx.period_end - ctx.period_start).days + 1)
        by_id = {c.id: c for c in ctx.customers}
        owned = [(by_id[s.customer_id], s) for s in ctx.subscriptions if s.customer_id in by_id]
        self._licenses = [p for p in owned if p[1].nce] or owned or [(None, None)]
        azure = [p for p in owned if not p[1].nce] or owned or [(None, None)]
        self._pairs = [(c, s, m) for c, s in azure for m in range(len(METERS))]
        kinds = self.plan.extras
        self._recon_extras = [p for p, kind in enumerate(kinds) if kind not in USAGE_ONLY]
        self._usage_extras = [p for p, kind in enumerate(kinds) if kind in BOTH_FILES or kind in USAGE_ONLY]
        self._mismatch_rows = self._mismatch_targets()
        self.recon_count = recon_count(regular, kinds)
        self.usage_count = usage_count(regular, kinds)

    # ---- facts ----------------------------------------------------------------------------
    def _customer(self, customer, h: int) -> tuple[str, str, str, str]:
        if customer is None:
            return fake_guid(h ^ 0x0C), "Unknown customer", "unknown.onmicrosoft.com", "US"
        return customer.id, customer.company_name, customer.domain, customer.country

    def _usage_facts(self, k: int, h: int, *, subscription_id: str | None = None, sku: str | None = None) -> dict:
        """Usage-based line number ``k``: its meter, subscription, prices and daily quantities."""
        customer, sub, meter = self._pairs[k % len(self._pairs)]
        unit = 10 ** 21 + h % (9 * 10 ** 21)                      # 0.1 .. 1.0, 22 decimals
        pec = (h >> 32) % 4 == 0
        quantities = [1 + mix(h ^ (day + 1)) % 40_000_000 for day in range(DAYS_PER_LINE)]  # up to 40 units/day
        return {"h": h, "customer": self._customer(customer, h),
                "subscription": subscription_id or (sub.id if sub else fake_guid(h ^ 3)),
                "meter": METERS[meter], "sku": sku or _sku(k // len(self._pairs) * len(METERS) + meter), "unit": unit,
                "eup": unit * 85 if pec else unit * 100, "pec": pec, "quantities": quantities}

    def usage_line_cents(self, facts: dict) -> int:
        billable = sum(facts["quantities"])
        inner = tdiv(facts["eup"] * billable, 10 ** (EUP_PLACES + QTY_PLACES - 2))
        return tdiv(inner * self._rate, 10 ** RATE_PLACES)

    def license_cents(self, eup: int, billable: int) -> int:
        return tdiv(eup * self._rate, 10 ** (EUP_PLACES + RATE_PLACES - 2)) * billable

    def _license_facts(self, h: int) -> dict:
        customer, sub = self._licenses[h % len(self._licenses)]
        unit_cents = 400 + (h >> 8) % 3600
        roll = (h >> 40) % 20
        charge = {0: "cancel", 1: "removeQuantity", 2: "addQuantity", 3: "renew"}.get(roll, "cycleCharge")
        seats = 1 + h % 25
        eup = unit_cents * 10 ** (EUP_PLACES - 2)
        if charge in ("addQuantity", "removeQuantity", "cancel"):   # prorated for the days left
            eup = eup * (1 + (h >> 50) % (self._days - 1 or 1)) // self._days
        if sub is not None and sub.nce:
            product = tuple(sub.offer_id.split(":")[:3]) + (sub.offer_name,)
            term = "1 Year Subscription" if sub.term_duration == "P1Y" else "1 Month Subscription"
        else:
            product, term = ("CFQ7TTC0LH18", "0001", "CFQ7TTC0J2C9", "Microsoft 365 Business Basic"), \
                "1 Month Subscription"
        return {"h": h, "customer": self._customer(customer, h),
                "subscription": sub.id if sub else fake_guid(h ^ 3), "product": product, "term": term,
                "charge": charge, "unit": unit_cents * 10 ** (UNIT_PLACES - 2), "eup": eup,
                "billable": -seats if charge in ("cancel", "removeQuantity") else seats}

    # ---- amounts (the invoice total streams these; no rows are built) -------------------------
    def recon_cents(self, index: int) -> int:
        """Subtotal + tax of reconciliation line ``index``, in cents of the billing currency."""
        subtotal = self._subtotal_cents(index)
        return subtotal + tdiv(subtotal * TAX_PERCENT, 100)

    def _subtotal_cents(self, index: int) -> int:
        h = mix(self._base + index)
        if index >= self.regular:
            return self._extra_facts(self._recon_extras[index - self.regular])["cents"]
        if index % 2:
            return self.usage_line_cents(self._usage_facts(index // 2, h))
        facts = self._license_facts(h)
        return self.license_cents(facts["eup"], facts["billable"])

    def total_cents(self) -> int:
        return sum(self.recon_cents(i) for i in range(self.recon_count))

    # ---- extra lines a plan adds --------------------------------------------------------------
    def _extra_facts(self, position: int) -> dict:
        kind = self.plan.extras[position]
        h = mix(self._base ^ (0xE7 << 56) ^ position)
        if kind in ("unknown_subscription", "usage_only"):
            facts = self._usage_facts(position, h, sku=f"X{position:03d}",
                                      subscription_id=fake_guid(h ^ 0x5B) if kind == "unknown_subscription" else None)
            return {**facts, "kind": kind, "cents": self.usage_line_cents(facts)}
        if kind in ("credit", "adjustment"):
            facts = self._usage_facts(position, h, sku=f"C{position:03d}")
            amount = -(100 + h % 5000) if kind == "credit" else -(1 + h % 300)
            return {**facts, "kind": kind, "cents": tdiv(amount * self._rate, 10 ** RATE_PLACES), "units": amount}
        unit_cents = 2_000 + h % 90_000
        eup = unit_cents * 10 ** (EUP_PLACES - 2)
        # reservations, savings plans and marketplace items are bought under the Azure plan subscription
        owner = None if kind == "unknown_customer" else self._pairs[h % len(self._pairs)]
        return {"kind": kind, "h": h, "unit": unit_cents * 10 ** (UNIT_PLACES - 2), "eup": eup,
                "customer": self._customer(owner[0] if owner else None, h),
                "subscription": owner[1].id if owner and owner[1] else fake_guid(h ^ 0x5C),
                "product": _EXTRA_PRODUCTS[kind], "cents": self.license_cents(eup, 1)}

    def _mismatch_targets(self) -> dict[int, Decimal]:
        """usage row index -> amount: a planted mismatch lands on the first usage row of the first
        usage-based line of its subscription (raises KeyError when the file has none)."""
        targets: dict[int, Decimal] = {}
        for subscription, amount in self.plan.usage_mismatch.items():
            first = next((k for k, (_, sub, _) in enumerate(self._pairs)
                          if sub is not None and sub.id.lower() == subscription), None)
            if first is None or first >= self.regular // 2:
                raise KeyError(subscription)
            targets[DAYS_PER_LINE * first] = amount
        return targets

    # ---- rows (rendering lives in recon_rows) ---------------------------------------------------
    def recon_facts(self, index: int) -> dict:
        h = mix(self._base + index)
        if index >= self.regular:
            return self._extra_facts(self._recon_extras[index - self.regular])
        if index % 2:
            facts = self._usage_facts(index // 2, h)
            return {**facts, "kind": "usage", "cents": self.usage_line_cents(facts)}
        facts = self._license_facts(h)
        return {**facts, "kind": "license", "cents": self.license_cents(facts["eup"], facts["billable"])}

    def usage_facts(self, index: int) -> tuple[dict, int]:
        """The usage-based line behind usage row ``index`` and the row's day within it."""
        line, day = divmod(index, DAYS_PER_LINE)
        if line < self.regular // 2:
            return self._usage_facts(line, mix(self._base + 2 * line + 1)), day
        return self._extra_facts(self._usage_extras[line - self.regular // 2]), day

    def usage_amounts(self, facts: dict, day: int, index: int) -> tuple[int, Decimal, Decimal]:
        """(quantity scaled 1e6, PricingPreTaxTotal, BillingPreTaxTotal) of one usage row."""
        quantity = facts["quantities"][day]
        pricing = round_half_even_drop(facts["eup"] * quantity, EUP_PLACES + QTY_PLACES - UNIT_PLACES)
        billing = round_half_even_drop(facts["eup"] * quantity * self._usage_rate,
                                       EUP_PLACES + QTY_PLACES + RATE_PLACES - UNIT_PLACES)
        pricing_total, billing_total = scaled(pricing, UNIT_PLACES), scaled(billing, UNIT_PLACES)
        planted = self._mismatch_rows.get(index)
        if planted is not None:
            billing_total += planted
            pricing_total += (planted / self.usage_rate).quantize(Decimal(1).scaleb(-UNIT_PLACES))
        return quantity, pricing_total, billing_total
