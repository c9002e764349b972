"""Rows of the new-commerce files as Graph exports them (documented PascalCase columns) and as the
v1 line-item API pages them (camelCase plus v1-only fields), both from the facts in recon.py.

Reconciliation columns: Microsoft's "new commerce invoice reconciliation file" table
(PartnerId ... CreditReasonCode) plus the later SubscriptionStartDate/EndDate, ReferenceId,
ProductQualifiers, PromotionId and ProductCategory. No v1-only field (invoiceLineItemType,
billingProvider, totalForCustomer) is in a v2 row. Usage columns: the Graph attribute set of
the daily-rated usage export (``basic`` is its documented subset).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from simulator.lineseed import REGIONS, fake_guid, mix, scaled, tdiv
from simulator.recon import EUP_PLACES, PEC_TEXT, QTY_PLACES, TAX_PERCENT, UNIT_PLACES, NceFiles

_CREDIT_REASONS = {"credit": "Azure Consumption Credit", "adjustment": ""}
_ADJUSTMENTS = {"credit": '["Azure consumption credit"]', "adjustment": '["Price adjustment for service outage"]'}
USAGE_BASIC = frozenset((
    "AdditionalInfo", "BenefitOrderId", "BenefitType", "BillingCurrency", "BillingPreTaxTotal", "ChargeEndDate",
    "ChargeStartDate", "ChargeType", "CreditPercentage", "CreditType", "CustomerId", "CustomerName",
    "EffectiveUnitPrice", "EntitlementId", "InvoiceNumber", "PartnerId", "PartnerName", "PCToBCExchangeRate",
    "PricingCurrency", "PricingPreTaxTotal", "ProductId", "PublisherName", "Quantity", "ResourceURI", "SkuId",
    "SkuName", "SubscriptionId", "UnitPrice", "UnitType", "UsageDate"))


def _money(cents: int) -> Decimal:
    return scaled(cents, 2)


def _product(facts: dict) -> tuple[str, str, str, str, str, str, str]:
    """(ProductId, SkuId, AvailabilityId, ProductName, PublisherName, ProductCategory, UnitType)."""
    if "meter" in facts:
        meter = facts["meter"]
        return meter[6], facts["sku"], meter[7], meter[0], "Microsoft", "Azure", meter[3]
    if facts["kind"] == "license":
        product_id, sku_id, availability_id, name = facts["product"]
        return product_id, sku_id, availability_id, name, "Microsoft Corporation", "OnlineServicesNCE", "Licenses"
    return facts["product"]


def recon_row(files: NceFiles, facts: dict) -> dict:
    """One reconciliation line in the documented v2 columns."""
    ctx, kind, h = files.ctx, facts["kind"], facts["h"]
    cid, cname, cdomain, country = facts["customer"]
    product_id, sku_id, availability_id, name, publisher, category, unit_type = _product(facts)
    meter = facts.get("meter")
    subtotal = facts["cents"]
    tax = tdiv(subtotal * TAX_PERCENT, 100)
    quantity, billable = _quantities(facts)
    return {
        "PartnerId": ctx.partner.tenant_id, "CustomerId": cid, "CustomerName": cname, "CustomerDomainName": cdomain,
        "CustomerCountry": country, "InvoiceNumber": ctx.invoice_number, "MpnId": str(ctx.partner.mpn_id),
        "ResellerMpnId": "", "OrderId": f"{mix(h ^ 19):016x}{mix(h ^ 23):016x}"[:32], "OrderDate": files._start,
        "ProductId": product_id, "SkuId": sku_id, "AvailabilityId": availability_id,
        "SkuName": f"{meter[1]} - {meter[2]}" if meter else name, "ProductName": name,
        "ChargeType": _charge_type(facts), "UnitPrice": _unit_price(facts),
        "Quantity": quantity, "Subtotal": _money(subtotal), "TaxTotal": _money(tax), "Total": _money(subtotal + tax),
        "Currency": ctx.currency,
        "PriceAdjustmentDescription": PEC_TEXT if facts.get("pec") else _ADJUSTMENTS.get(kind, ""),
        "PublisherName": publisher, "PublisherId": "", "SubscriptionDescription": "Azure plan" if meter else name,
        "SubscriptionId": facts["subscription"], "ChargeStartDate": files._start, "ChargeEndDate": files._end,
        "TermAndBillingCycle": facts.get("term") or ("1 Year Subscription" if kind in ("reservation", "savings_plan")
                                                    else "One-Time" if kind == "marketplace" else ""),
        "EffectiveUnitPrice": _eup(facts), "UnitType": unit_type,
        "AlternateId": f"{mix(h ^ 29):012x}"[:12], "BillableQuantity": billable,
        "BillingFrequency": "Monthly" if kind in ("license", "reservation", "savings_plan") else "",
        "PricingCurrency": "USD", "PCToBCExchangeRate": files.rate, "PCToBCExchangeRateDate": files._end,
        "MeterDescription": f"{meter[0]} - {meter[2]} ({meter[3]})" if meter else "",
        "ReservationOrderId": fake_guid(h ^ 41) if kind in ("reservation", "savings_plan") else "",
        "CreditReasonCode": _CREDIT_REASONS.get(kind, ""),
        "SubscriptionStartDate": files._start, "SubscriptionEndDate": files._end, "ReferenceId": "",
        "ProductQualifiers": [], "PromotionId": "", "ProductCategory": category,
    }


def _charge_type(facts: dict) -> str:
    kind = facts["kind"]
    if kind == "license":
        return facts["charge"]
    return {"credit": "customerCredit", "adjustment": "adjustment"}.get(kind, "new")


def _quantities(facts: dict) -> tuple[Decimal | int, Decimal | int]:
    """(Quantity, BillableQuantity): usage lines bill the month's consumption against Quantity 1."""
    if "quantities" in facts and facts["kind"] not in ("credit", "adjustment"):
        return 1, scaled(sum(facts["quantities"]), QTY_PLACES)
    if "billable" in facts:
        return facts["billable"], facts["billable"]
    return 1, 1


def _unit_price(facts: dict) -> Decimal:
    if facts["kind"] in ("credit", "adjustment"):
        return _eup(facts)
    return scaled(facts["unit"], UNIT_PLACES)


def _eup(facts: dict) -> Decimal:
    if facts["kind"] in ("credit", "adjustment"):
        return scaled(facts["units"], 2)
    return scaled(facts["eup"], EUP_PLACES)


def usage_row(files: NceFiles, facts: dict, day: int, index: int) -> dict:
    """One daily-rated usage row in the Graph usage export's columns."""
    ctx, h, meter = files.ctx, facts["h"], facts["meter"]
    cid, cname, cdomain, country = facts["customer"]
    quantity, pricing, billing = files.usage_amounts(facts, day, index)
    azure_sub = fake_guid(h ^ 31)
    group = f"rg-{(h >> 44) % 40:02d}"
    usage_day = files.ctx.period_start.replace(hour=0, minute=0, second=0) + \
        dt.timedelta(days=(h >> 20) % max(1, files._days - 2) + day)
    return {
        "PartnerId": ctx.partner.tenant_id, "PartnerName": ctx.partner.company_name, "CustomerId": cid,
        "CustomerName": cname, "CustomerDomainName": cdomain, "CustomerCountry": country,
        "MpnId": str(ctx.partner.mpn_id), "Tier2MpnId": "", "InvoiceNumber": ctx.invoice_number,
        "ProductId": meter[6], "SkuId": facts["sku"], "AvailabilityId": meter[7],
        "SkuName": f"{meter[1]} - {meter[2]}", "ProductName": meter[0], "PublisherName": "Microsoft",
        "PublisherId": "", "SubscriptionId": facts["subscription"], "SubscriptionDescription": "Azure plan",
        "ChargeStartDate": files._start, "ChargeEndDate": files._end,
        "UsageDate": usage_day.strftime("%Y-%m-%dT%H:%M:%SZ"), "MeterType": meter[3], "MeterCategory": meter[0],
        "MeterId": fake_guid(h ^ 37), "MeterSubCategory": meter[1], "MeterName": meter[2], "MeterRegion": "",
        "Unit": meter[3], "ResourceLocation": REGIONS[(h >> 50) % len(REGIONS)], "ConsumedService": meter[4],
        "ResourceGroup": group,
        "ResourceURI": f"/subscriptions/{azure_sub}/resourceGroups/{group}/providers/{meter[4]}/{meter[5]}/res{h % 1000}",
        "Tags": "", "AdditionalInfo": "", "ServiceInfo1": "", "ServiceInfo2": "", "ChargeType": "new",
        "UnitPrice": scaled(facts["unit"], UNIT_PLACES), "Quantity": scaled(quantity, QTY_PLACES),
        "UnitType": meter[3], "BillingPreTaxTotal": billing, "BillingCurrency": ctx.currency,
        "PricingPreTaxTotal": pricing, "PricingCurrency": "USD", "EntitlementId": azure_sub,
        "EntitlementDescription": "Azure subscription", "PCToBCExchangeRate": files.usage_rate,
        "PCToBCExchangeRateDate": files._end, "EffectiveUnitPrice": scaled(facts["eup"], EUP_PLACES),
        "PartnerEarnedCreditPercentage": 15 if facts["pec"] else 0, "CreditPercentage": 0, "CreditType": "",
        "BenefitOrderId": "", "BenefitId": "", "BenefitType": _benefit(files, facts),
    }


def _benefit(files: NceFiles, facts: dict) -> str:
    """The discounted lines name the planted specialization (``specializationDiscount``)."""
    name = files.plan.specialization_discount
    return f"Azure specialization discount: {name}" if name and facts["pec"] else ""


def basic(row: dict) -> dict:
    return {key: value for key, value in row.items() if key in USAGE_BASIC}


# ---- v1 renderings (Partner Center /v1 line items: camelCase, v1 extras) ----------------------
_V1_NAMES = {"MpnId": "mpnId", "PCToBCExchangeRate": "pcToBCExchangeRate",
             "PCToBCExchangeRateDate": "pcToBCExchangeRateDate", "ResourceURI": "resourceUri", "Unit": "unitOfMeasure",
             "Total": "totalForCustomer"}


def _camel(key: str) -> str:
    return _V1_NAMES.get(key) or key[:1].lower() + key[1:]


def v1_recon_item(row: dict) -> dict:
    """A v1 ``OneTimeInvoiceLineItem`` with the same values as the v2 row."""
    item = {_camel(key): value for key, value in row.items()}
    item.update({"quoteId": "", "resellerMpnId": 0, "providerName": "Microsoft Corporation", "providerId": "",
                 "discountDetails": "", "invoiceLineItemType": "billing_line_items", "billingProvider": "one_time",
                 "attributes": {"objectType": "OneTimeInvoiceLineItem"}})
    return item


def v1_usage_item(row: dict) -> dict:
    """A v1 ``DailyRatedUsageLineItem`` with the same values as the v2 row."""
    item = {_camel(key): value for key, value in row.items() if key not in ("PartnerEarnedCreditPercentage",
                                                                              "CreditPercentage", "Tier2MpnId")}
    pec = row["PartnerEarnedCreditPercentage"]
    item.update({"resellerMpnId": "", "rateOfPartnerEarnedCredit": Decimal(pec) / 100, "hasPartnerEarnedCredit": pec > 0,
                 "rateOfCredit": 0, "invoiceLineItemType": "usage_line_items", "billingProvider": "marketplace",
                 "attributes": {"objectType": "DailyRatedUsageLineItem"}})
    return item
