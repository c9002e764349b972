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
from typing import Iterator, NamedTuple

from simulator.data import Customer, Invoice, Partner, Subscription

_MASK = (1 << 64) - 1
TAX_PERCENT = 10

OFFICE_BILLING = "office_billing"
AZURE_BILLING = "azure_billing"
AZURE_USAGE = "azure_usage"
ONETIME_BILLING = "onetime_billing"
DAILY_RATED_USAGE = "daily_rated_usage"
BILLING_KINDS = (OFFICE_BILLING, AZURE_BILLING, ONETIME_BILLING)
# the attributes.objectType Partner Center gives the items of each stream (the last key of an item)
OBJECT_TYPES = {
    OFFICE_BILLING: "LicenseBasedLineItem",
    AZURE_BILLING: "UsageBasedLineItem",
    AZURE_USAGE: "DailyUsageLineItem",
    ONETIME_BILLING: "OneTimeInvoiceLineItem",
    DAILY_RATED_USAGE: "DailyRatedUsageLineItem",
}

# (provider, invoicelineitemtype) as written in query strings -> stream kind
V1_STREAMS = {
    ("office", "billinglineitems"): OFFICE_BILLING,
    ("azure", "billinglineitems"): AZURE_BILLING,
    ("azure", "usagelineitems"): AZURE_USAGE,
    ("onetime", "billinglineitems"): ONETIME_BILLING,
    ("onetime", "usagelineitems"): DAILY_RATED_USAGE,
}

class Meter(NamedTuple):
    """An Azure meter as usage rows name it (service and resource type make its resource URI)."""

    category: str
    subcategory: str
    name: str
    unit: str
    service: str
    resource_type: str


_METERS = [
    Meter("Virtual Machines", "D/DS Series", "D2 v3/D2s v3", "1 Hour", "Microsoft.Compute", "virtualMachines"),
    Meter("Storage", "Standard Page Blob", "LRS Data Stored", "1 GB/Month", "Microsoft.Storage", "storageAccounts"),
    Meter("Azure App Service", "Standard Plan", "S1", "1 Hour", "Microsoft.Web", "sites"),
    Meter("Bandwidth", "Data Transfer", "Data Transfer Out (GB) - Zone 1", "1 GB", "Microsoft.Network", "publicIPAddresses"),
    Meter("SQL Database", "Single Standard", "S0 DTUs", "1/Day", "Microsoft.Sql", "servers"),
]
_REGIONS = ["EASTUS", "WESTEUROPE", "NORTHEUROPE", "EASTUS2", "UKSOUTH"]


def _meter(h: int) -> Meter:
    """The Azure meter of a usage row; the same hash bits pick it in every stream."""
    return _METERS[(h >> 24) % len(_METERS)]


def _mix(value: int) -> int:
    """splitmix64 finaliser: cheap, well spread, deterministic across runs and platforms."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _fake_guid(h: int) -> str:
    x = f"{_mix(h):016x}{_mix(h ^ 0x5555):016x}"
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:32]}"


def charge_cents(h: int) -> tuple[int, int, int, int, int]:
    """(quantity, unit price, subtotal, tax, total) in cents; about 1 line in 20 is a refund."""
    quantity = 1 + h % 25
    unit = 150 + (h >> 8) % 4000
    subtotal = quantity * unit
    if (h >> 40) % 20 == 0:
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


class LineItemStream:
    def __init__(self, kind: str, count: int, ctx: StreamContext):
        self.kind, self.count, self.ctx = kind, count, ctx
        digest = hashlib.sha256(f"{ctx.seed}|{ctx.key}|{kind}".encode()).digest()
        self._base = int.from_bytes(digest[:8], "big")
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
        row = self._build(index, self.hash(index))
        row["attributes"] = {"objectType": OBJECT_TYPES[self.kind]}
        return row

    def items(self, start: int, stop: int) -> Iterator[dict]:
        for index in range(max(0, start), min(stop, self.count)):
            yield self.item(index)

    def total_cents(self) -> int:
        """Exact sum of line totals; usage streams carry no invoice charges."""
        if self.kind not in BILLING_KINDS:
            return 0
        base, total = self._base, 0
        for index in range(self.count):
            total += charge_cents(_mix(base + index))[4]
        return total

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
            "orderId": str(568_000_000_000_000_000 + (h % 10**15)), "serviceName": meter.category,
            "serviceType": meter.subcategory, "resourceGuid": _fake_guid(h ^ 17), "resourceName": meter.name,
            "region": "", "consumedQuantity": round(((h >> 12) % 100000) / 100, 4),
            "chargeStartDate": self._start, "chargeEndDate": self._end, "unit": meter.unit,
            "billingProvider": "azure",
        }

    def _azure_billing(self, index: int, h: int) -> dict:
        qty, unit, subtotal, tax, total = charge_cents(h)
        row = {"detailLineItemId": index + 1, "sku": "7UD-00001", "includedQuantity": 0,
               "overageQuantity": qty, "listPrice": _money(unit), "currency": self.ctx.currency,
               "pretaxCharges": _money(subtotal), "taxAmount": _money(tax), "postTaxTotal": _money(total),
               "pretaxEffectiveRate": _money(unit), "postTaxEffectiveRate": round(unit * 1.1 / 100, 6),
               "chargeType": "Assess usage fee for current cycle", "invoiceLineItemType": "billing_line_items"}
        row.update(self._azure_common(index, h))
        return row

    def _azure_usage(self, index: int, h: int) -> dict:
        row = {"customerBillableAccount": str(1_300_000_000 + h % 100_000_000),
               "usageDate": self._days[(h >> 20) % len(self._days)], "invoiceLineItemType": "usage_line_items"}
        row.update(self._azure_common(index, h))
        return row

    def _onetime(self, index: int, h: int) -> dict:
        ctx = self.ctx
        cid, cname, cdomain, country, sub = self._customer(h)
        qty, unit, subtotal, tax, total = charge_cents(h)
        if sub is not None and sub.nce:
            product_id, sku_id, availability_id = sub.offer_id.split(":")
            product_name, subscription_id = sub.offer_name, sub.id
            term = "1 Year Subscription" if sub.term_duration == "P1Y" else "1 Month Subscription"
        else:
            product_id, sku_id, availability_id = "DZH318Z0BQ3P", "001F", "DZH318Z0DR0H"
            product_name, subscription_id, term = "Azure plan", _fake_guid(h ^ 3), "1 Month Subscription"
        pec = (h >> 32) % 4 == 0
        return {
            "partnerId": ctx.partner.tenant_id, "customerId": cid, "customerName": cname,
            "customerDomainName": cdomain, "customerCountry": country, "invoiceNumber": ctx.invoice_number,
            "quoteId": "", "mpnId": str(ctx.partner.mpn_id), "resellerMpnId": 0,
            "orderId": f"{_mix(h ^ 19):016x}{_mix(h ^ 23):016x}"[:32], "orderDate": self._start + "Z",
            "productId": product_id, "skuId": sku_id, "availabilityId": availability_id,
            "productName": product_name, "skuName": product_name,
            "productQualifiers": [], "chargeType": "cancel" if subtotal < 0 else "new",
            "unitPrice": _money(unit), "effectiveUnitPrice": _money(unit * 85 // 100 if pec else unit),
            "unitType": "Licenses", "quantity": qty, "subtotal": _money(subtotal), "taxTotal": _money(tax),
            "totalForCustomer": _money(total), "currency": ctx.currency,
            "providerName": "Microsoft Corporation", "providerId": "", "publisherName": "Microsoft Corporation",
            "publisherId": "", "subscriptionDescription": product_name, "subscriptionId": subscription_id,
            "subscriptionStartDate": self._start + "Z", "subscriptionEndDate": self._end + "Z",
            "chargeStartDate": self._start + "Z", "chargeEndDate": self._end + "Z",
            "termAndBillingCycle": term, "alternateId": f"{_mix(h ^ 29):012x}"[:12],
            "referenceId": "", "priceAdjustmentDescription": "[\"15.0% Partner earned credit for services managed\"]" if pec else "",
            "discountDetails": "", "pricingCurrency": ctx.currency, "pcToBCExchangeRate": 1,
            "pcToBCExchangeRateDate": self._end + "Z", "billableQuantity": qty,
            "meterDescription": "", "reservationOrderId": "", "billingFrequency": "Monthly",
            "creditReasonCode": "", "promotionId": "",
            "invoiceLineItemType": "billing_line_items", "billingProvider": "one_time",
        }

    def _daily_rated(self, index: int, h: int) -> dict:
        ctx = self.ctx
        cid, cname, cdomain, country, sub = self._customer(h)
        meter = _meter(h)
        quantity = round(((h >> 12) % 100000) / 1000, 6)
        unit_price = round(0.01 + ((h >> 30) % 5000) / 10000, 6)
        pretax = round(quantity * unit_price, 6)
        azure_sub = _fake_guid(h ^ 31)
        group = f"rg-{(h >> 44) % 40:02d}"
        pec_rate = 0.15 if (h >> 32) % 4 == 0 else 0
        return {
            "partnerId": ctx.partner.tenant_id, "partnerName": ctx.partner.company_name, "customerId": cid,
            "customerName": cname, "customerDomainName": cdomain, "customerCountry": country,
            "invoiceNumber": ctx.invoice_number, "mpnId": str(ctx.partner.mpn_id), "resellerMpnId": "",
            "productId": "DZH318Z0BQ3Q", "skuId": "0001", "availabilityId": "DZH318Z0BQ3R",
            "skuName": meter.name, "productName": meter.category, "publisherName": "Microsoft", "publisherId": "",
            "subscriptionId": sub.id if sub else _fake_guid(h ^ 3), "subscriptionDescription": "Azure plan",
            "chargeStartDate": self._start + "Z", "chargeEndDate": self._end + "Z",
            "usageDate": self._days[(h >> 20) % len(self._days)] + "Z", "meterType": meter.unit,
            "meterCategory": meter.category, "meterId": _fake_guid(h ^ 37), "meterSubCategory": meter.subcategory,
            "meterName": meter.name, "meterRegion": "", "unitOfMeasure": meter.unit,
            "resourceLocation": _REGIONS[(h >> 50) % len(_REGIONS)], "consumedService": meter.service,
            "resourceGroup": group,
            "resourceUri": f"/subscriptions/{azure_sub}/resourceGroups/{group}/providers/{meter.service}/{meter.resource_type}/res{index % 1000}",
            "tags": "", "additionalInfo": "", "serviceInfo1": "", "serviceInfo2": "",
            "chargeType": "new", "unitPrice": unit_price, "quantity": quantity, "unitType": meter.unit,
            "billingPreTaxTotal": pretax, "billingCurrency": ctx.currency, "pricingPreTaxTotal": pretax,
            "pricingCurrency": ctx.currency, "entitlementId": azure_sub, "entitlementDescription": "Azure subscription",
            "pcToBCExchangeRate": 1, "pcToBCExchangeRateDate": self._end + "Z",
            "effectiveUnitPrice": round(unit_price * (1 - pec_rate), 6), "rateOfPartnerEarnedCredit": pec_rate,
            "hasPartnerEarnedCredit": pec_rate > 0, "creditType": "", "rateOfCredit": 0,
            "invoiceLineItemType": "usage_line_items", "billingProvider": "marketplace",
        }


def export_row(stream: LineItemStream, index: int) -> dict:
    """One JSON Lines row of a Graph export. Recon rows keep the v1 OneTime field names in
    camelCase; usage rows use the PascalCase attribute names of the Graph usage export."""
    item = stream.item(index)
    item.pop("attributes", None)
    if stream.kind != DAILY_RATED_USAGE:
        return item
    return {
        "PartnerId": item["partnerId"], "PartnerName": item["partnerName"], "CustomerId": item["customerId"],
        "CustomerName": item["customerName"], "CustomerDomainName": item["customerDomainName"],
        "CustomerCountry": item["customerCountry"], "MpnId": item["mpnId"], "Tier2MpnId": "",
        "InvoiceNumber": item["invoiceNumber"], "ProductId": item["productId"], "SkuId": item["skuId"],
        "AvailabilityId": item["availabilityId"], "SkuName": item["skuName"], "ProductName": item["productName"],
        "PublisherName": item["publisherName"], "PublisherId": item["publisherId"],
        "SubscriptionId": item["subscriptionId"], "SubscriptionDescription": item["subscriptionDescription"],
        "ChargeStartDate": item["chargeStartDate"], "ChargeEndDate": item["chargeEndDate"],
        "UsageDate": item["usageDate"], "MeterType": item["meterType"], "MeterCategory": item["meterCategory"],
        "MeterId": item["meterId"], "MeterSubCategory": item["meterSubCategory"], "MeterName": item["meterName"],
        "MeterRegion": item["meterRegion"], "Unit": item["unitOfMeasure"],
        "ResourceLocation": item["resourceLocation"], "ConsumedService": item["consumedService"],
        "ResourceGroup": item["resourceGroup"], "ResourceURI": item["resourceUri"], "Tags": item["tags"],
        "AdditionalInfo": item["additionalInfo"], "ServiceInfo1": "", "ServiceInfo2": "",
        "ChargeType": item["chargeType"], "UnitPrice": item["unitPrice"], "Quantity": item["quantity"],
        "UnitType": item["unitType"], "BillingPreTaxTotal": item["billingPreTaxTotal"],
        "BillingCurrency": item["billingCurrency"], "PricingPreTaxTotal": item["pricingPreTaxTotal"],
        "PricingCurrency": item["pricingCurrency"], "EntitlementId": item["entitlementId"],
        "EntitlementDescription": item["entitlementDescription"], "PCToBCExchangeRate": 1,
        "PCToBCExchangeRateDate": item["pcToBCExchangeRateDate"], "EffectiveUnitPrice": item["effectiveUnitPrice"],
        "PartnerEarnedCreditPercentage": int(item["rateOfPartnerEarnedCredit"] * 100),
        "CreditPercentage": 0, "CreditType": "", "BenefitOrderId": "", "BenefitId": "", "BenefitType": "",
    }


def invoice_stream_counts(invoice: Invoice) -> dict[str, int]:
    """Line counts per stream: D invoices are legacy Office + Azure, G invoices new commerce."""
    n = invoice.line_items
    if invoice.is_new_commerce:
        return {ONETIME_BILLING: n, DAILY_RATED_USAGE: n}
    return {OFFICE_BILLING: n - n // 3, AZURE_BILLING: n // 3, AZURE_USAGE: n}


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
