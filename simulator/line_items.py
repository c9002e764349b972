"""Invoice line items generated lazily from (seed, invoice id, stream, index).

Nothing here holds a list of line items: any item can be produced from its index, so pages
and export blobs of millions of rows are generated on the fly. Charges are integer cents so
an invoice total is an exact sum that can be computed by streaming the charge function once.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from typing import Iterator

from simulator.billing_plan import BillingPlan
from simulator.data import Customer, Invoice, Partner, Subscription
from simulator.lineseed import METERS, fake_guid, mix, scaled
from simulator.recon import NceFiles, recon_count, usage_count
from simulator.recon_rows import basic, recon_row, usage_row, v1_recon_item, v1_usage_item

TAX_PERCENT = 10

OFFICE_BILLING = "office_billing"
AZURE_BILLING = "azure_billing"
AZURE_USAGE = "azure_usage"
ONETIME_BILLING = "onetime_billing"
DAILY_RATED_USAGE = "daily_rated_usage"
BILLING_KINDS = (OFFICE_BILLING, AZURE_BILLING, ONETIME_BILLING)
NCE_KINDS = (ONETIME_BILLING, DAILY_RATED_USAGE)
LEGACY_USAGE_DAYS = 3    # v1 legacy Azure: daily usage rows per billing line

# (provider, invoicelineitemtype) as written in query strings -> stream kind
V1_STREAMS = {
    ("office", "billinglineitems"): OFFICE_BILLING,
    ("azure", "billinglineitems"): AZURE_BILLING,
    ("azure", "usagelineitems"): AZURE_USAGE,
    ("onetime", "billinglineitems"): ONETIME_BILLING,
    ("onetime", "usagelineitems"): DAILY_RATED_USAGE,
}
_mix, _fake_guid = mix, fake_guid


def _meter(h: int) -> tuple[str, ...]:
    """The Azure meter of a usage row; the same hash bits pick it in every stream."""
    return METERS[(h >> 24) % len(METERS)]


def charge_cents(h: int, positive: bool = False) -> tuple[int, int, int, int, int]:
    """(quantity, unit price, subtotal, tax, total) in cents; about 1 line in 20 is a refund
    (never for legacy Azure, whose billing lines are metered consumption)."""
    quantity = 1 + h % 25
    unit = 150 + (h >> 8) % 4000
    subtotal = quantity * unit
    if not positive and (h >> 40) % 20 == 0:
        subtotal = -subtotal
    tax = subtotal * TAX_PERCENT // 100
    return quantity, unit, subtotal, tax, subtotal + tax


def _money(cents: int) -> float:
    return round(cents / 100, 2)


def _date(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class StreamContext:
    """What every line of one stream shares; built once per request, cheap to keep."""
    seed: int
    key: str                 # invoice id, or e.g. "unbilled-current-USD"
    invoice_number: str      # "" for unbilled lines
    partner: Partner
    customers: tuple[Customer, ...]
    subscriptions: tuple[Subscription, ...]
    period_start: dt.datetime
    period_end: dt.datetime
    currency: str = "USD"
    plan: BillingPlan | None = None


def _stream_base(ctx: StreamContext, kind: str) -> int:
    digest = hashlib.sha256(f"{ctx.seed}|{ctx.key}|{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class LineItemStream:
    """``count`` is the number of lines for v1 legacy kinds; for the new-commerce kinds it is the
    number of regular reconciliation lines, and the stream's ``count`` becomes that file's length."""

    def __init__(self, kind: str, count: int, ctx: StreamContext):
        self.kind, self.count, self.ctx = kind, count, ctx
        self._base = _stream_base(ctx, kind)
        # legacy Azure usage rows are derived from the billing line they add up to
        self._azure_billing_base = _stream_base(ctx, AZURE_BILLING)
        self.nce = NceFiles(ctx, count, ctx.plan) if kind in NCE_KINDS else None
        if self.nce is not None:
            self.count = self.nce.recon_count if kind == ONETIME_BILLING else self.nce.usage_count
        days = max(1, (ctx.period_end - ctx.period_start).days + 1)
        self._days = [_date(ctx.period_start + dt.timedelta(days=d)) for d in range(days)]
        self._start, self._end = _date(ctx.period_start), _date(ctx.period_end)
        self._customers = ctx.customers or (None,)
        self._subs_by_customer: dict[str, list[Subscription]] = {}
        for sub in ctx.subscriptions:
            self._subs_by_customer.setdefault(sub.customer_id, []).append(sub)
        self._build = {OFFICE_BILLING: self._office, AZURE_BILLING: self._azure_billing,
                       AZURE_USAGE: self._azure_usage, ONETIME_BILLING: self._onetime,
                       DAILY_RATED_USAGE: self._daily_rated}[kind]

    def hash(self, index: int) -> int:
        return _mix(self._base + index)

    def item(self, index: int) -> dict:
        return self._build(index, self.hash(index))

    def items(self, start: int, stop: int) -> Iterator[dict]:
        for index in range(max(0, start), min(stop, self.count)):
            yield self._build(index, self.hash(index))

    def total_cents(self) -> int:
        """Exact sum of line totals; usage streams carry no invoice charges."""
        if self.kind not in BILLING_KINDS:
            return 0
        if self.kind == ONETIME_BILLING:
            return self.nce.total_cents()
        base, total = self._base, 0
        positive = self.kind == AZURE_BILLING
        for index in range(self.count):
            total += charge_cents(_mix(base + index), positive=positive)[4]
        return total

    def export_row(self, index: int, attribute_set: str = "full") -> dict:
        """One JSON Lines row of a Graph export, in the documented v2 columns."""
        if self.kind == ONETIME_BILLING:
            return recon_row(self.nce, self.nce.recon_facts(index))
        facts, day = self.nce.usage_facts(index)
        row = usage_row(self.nce, facts, day, index)
        return basic(row) if attribute_set == "basic" else row

    # ---- shared pieces -------------------------------------------------------------------
    def _customer(self, h: int):
        customer = self._customers[h % len(self._customers)]
        if customer is None:
            return _fake_guid(h), "Unknown customer", "unknown.onmicrosoft.com", "US", None
        subs = self._subs_by_customer.get(customer.id)
        sub = subs[(h >> 16) % len(subs)] if subs else None
        return customer.id, customer.company_name, customer.domain, customer.country, sub

    # ---- v1 shapes (field names follow Microsoft's samples) -----------------------------
    def _office(self, index: int, h: int) -> dict:
        ctx = self.ctx
        cid, cname, cdomain, _, sub = self._customer(h)
        qty, unit, subtotal, tax, total = charge_cents(h)
        offer_id = sub.offer_id if sub else _fake_guid(h ^ 7).upper()
        name = (sub.offer_name if sub else "OFFICE 365 E3").upper()
        return {
            "partnerId": ctx.partner.tenant_id, "customerId": cid, "customerName": cname,
            "mpnId": ctx.partner.mpn_id, "tier2MpnId": -1, "orderId": str(560_000_000_000_000_000 + (h % 10**15)),
            "subscriptionId": sub.id if sub else _fake_guid(h ^ 3),
            "syndicationPartnerSubscriptionNumber": _fake_guid(h ^ 11).upper(),
            "offerId": offer_id, "durableOfferId": _fake_guid(h ^ 13).upper(), "offerName": name,
            "domainName": cdomain, "billingCycleType": "MONTHLY", "subscriptionName": name,
            "subscriptionDescription": name, "subscriptionStartDate": self._start,
            "subscriptionEndDate": _date(self.ctx.period_end + dt.timedelta(days=365)),
            "chargeStartDate": self._start, "chargeEndDate": self._end,
            "chargeType": "Cancel" if subtotal < 0 else "New", "unitPrice": _money(unit), "quantity": qty,
            "amount": _money(subtotal), "totalOtherDiscount": 0.0, "subtotal": _money(subtotal),
            "tax": _money(tax), "totalForCustomer": _money(total), "currency": ctx.currency,
            "invoiceLineItemType": "billing_line_items", "billingProvider": "office",
            "attributes": {"objectType": "LicenseBasedLineItem"},
        }

    def _azure_common(self, index: int, h: int) -> dict:
        ctx = self.ctx
        cid, cname, cdomain, _, sub = self._customer(h)
        meter = _meter(h)
        return {
            "partnerId": ctx.partner.tenant_id, "partnerName": ctx.partner.company_name,
            "partnerBillableAccountId": str(1_010_000_000 + ctx.partner.mpn_id % 1_000_000),
            "customerId": cid, "domainName": cdomain, "customerCompanyName": cname,
            "mpnId": ctx.partner.mpn_id, "tier2MpnId": -1, "invoiceNumber": ctx.invoice_number,
            "subscriptionId": (sub.id if sub else _fake_guid(h ^ 3)), "subscriptionName": "Microsoft Azure",
            "subscriptionDescription": "Microsoft Azure", "billingCycleType": "Monthly",
            "orderId": str(568_000_000_000_000_000 + (h % 10**15)), "serviceName": meter[0],
            "serviceType": meter[1], "resourceGuid": _fake_guid(h ^ 17), "resourceName": meter[2],
            "region": "",
            "chargeStartDate": self._start, "chargeEndDate": self._end, "unit": meter[3],
            "billingProvider": "azure",
        }

    def _azure_billing(self, index: int, h: int) -> dict:
        qty, unit, subtotal, tax, total = charge_cents(h, positive=True)
        row = {"detailLineItemId": index + 1, "sku": "7UD-00001", "includedQuantity": 0,
               "overageQuantity": qty, "listPrice": _money(unit), "currency": self.ctx.currency,
               "pretaxCharges": _money(subtotal), "taxAmount": _money(tax), "postTaxTotal": _money(total),
               "pretaxEffectiveRate": _money(unit), "postTaxEffectiveRate": round(unit * 1.1 / 100, 6),
               "chargeType": "Assess usage fee for current cycle", "invoiceLineItemType": "billing_line_items"}
        row.update(self._azure_common(index, h))
        row["consumedQuantity"] = qty
        row["attributes"] = {"objectType": "UsageBasedLineItem"}
        return row

    def _azure_usage(self, index: int, h: int) -> dict:
        """Daily usage row ``index``: day ``index % 3`` of billing line ``index // 3`` (same
        subscription, resource and meter); the three days' consumedQuantity add up to the
        billing line's exactly."""
        line, day = divmod(index, LEGACY_USAGE_DAYS)
        billing_h = _mix(self._azure_billing_base + line)
        hundredths = (1 + billing_h % 25) * 100
        first = 1 + _mix(billing_h ^ 1) % (hundredths - 2)
        second = 1 + _mix(billing_h ^ 2) % (hundredths - first - 1)
        consumed = (first, second, hundredths - first - second)[day]
        row = {"customerBillableAccount": str(1_300_000_000 + billing_h % 100_000_000),
               "usageDate": self._days[((billing_h >> 20) + day) % len(self._days)],
               "invoiceLineItemType": "usage_line_items"}
        row.update(self._azure_common(line, billing_h))
        row["consumedQuantity"] = scaled(consumed, 2)
        row["attributes"] = {"objectType": "DailyUsageLineItem"}
        return row

    def _onetime(self, index: int, h: int) -> dict:
        return v1_recon_item(self.export_row(index))

    def _daily_rated(self, index: int, h: int) -> dict:
        return v1_usage_item(self.export_row(index))


def invoice_stream_counts(invoice: Invoice, plan: BillingPlan | None = None) -> dict[str, int]:
    """Line counts per stream: D invoices are legacy Office + Azure, G invoices new commerce."""
    n = invoice.line_items
    if invoice.is_new_commerce:
        extras = plan.extras if plan else []
        return {ONETIME_BILLING: recon_count(n, extras), DAILY_RATED_USAGE: usage_count(n, extras)}
    return {OFFICE_BILLING: n - n // 3, AZURE_BILLING: n // 3, AZURE_USAGE: LEGACY_USAGE_DAYS * (n // 3)}


class InvoiceTotals:
    """Caches each invoice's exact total, computed once by streaming its charge function."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cents: dict[str, int] = {}

    def total_cents(self, invoice: Invoice, make_stream) -> int:
        with self._lock:
            if invoice.id in self._cents:
                return self._cents[invoice.id]
        total = sum(make_stream(invoice, kind).total_cents()
                    for kind in invoice_stream_counts(invoice) if kind in BILLING_KINDS)
        with self._lock:
            self._cents[invoice.id] = total
        return total

    def forget(self, invoice_id: str) -> None:
        """A billing plan changed the invoice's lines: its total is computed again on next use."""
        with self._lock:
            self._cents.pop(invoice_id, None)
