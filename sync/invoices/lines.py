"""Reconciliation and usage lines as table rows, read by the column names Microsoft documents.

Graph v2 files use PascalCase names (``Total``, ``BillableQuantity``, ``PCToBCExchangeRate``,
``EffectiveUnitPrice``, ``PriceAdjustmentDescription``, ``CreditReasonCode``); Partner Center v1
uses camelCase (``totalForCustomer``, ``pcToBCExchangeRate``, ...). Keys are matched in any case,
so one candidate list serves both; numbers may arrive as strings. Amounts are stored as exact
decimal strings (:mod:`sync.invoices.money`); the raw JSON keeps every digit too.

Partitions: ``<provider>|<invoice>|<generation>|<customer>`` (escaped) for lines and usage
alike, so one invoice's rows for one customer stay together, a large invoice spreads over many
partitions that are written in parallel, and each import (``generation``) writes its own rows
beside the previous import's until it is complete (:mod:`sync.invoices.store`). Row keys are
``<source>-<index>`` (9 digits), the line's position in its source.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Mapping

from shared.jsonlines import JsonLine
from shared.jsonutil import as_enum, as_text, lower_keys
from shared.tables import escape_key

from ..resources import canonical_id
from ..streams import MAX_RAW_UTF16_UNITS, utf16_units
from .money import dumps_exact, plain, to_decimal

ROW_KEY_DIGITS = 9
NO_CUSTOMER = "-"  # the partition part of lines without a customer id


def _text(value: Any) -> str | None:
    text = value if type(value) is str else as_text(value)  # noqa: E721 - the common case, fast
    return text if text is not None and text.strip() else None


def _enum(value: Any) -> str | None:
    return as_enum(_text(value))


def _id(value: Any) -> str | None:
    text = _text(value)
    return None if text is None else canonical_id(text)


def _amount(value: Any) -> Decimal | None:
    """Marks a money or quantity column: stored as exact decimal text, kept as the Decimal."""
    return to_decimal(value)


Column = tuple[str, tuple[str, ...], Callable[[Any], Any]]

# Columns both files share (candidate keys lower-cased; the first present wins).
_COMMON: tuple[Column, ...] = (
    ("customerId", ("customerid",), _text),
    ("customerName", ("customername", "customercompanyname"), _text),
    ("subscriptionId", ("subscriptionid",), _text),
    ("productId", ("productid", "offerid"), _text),
    ("skuId", ("skuid", "sku"), _text),
    ("productName", ("productname", "offername", "servicename"), _text),
    ("skuName", ("skuname", "resourcename"), _text),
    ("chargeType", ("chargetype",), _enum),
    ("chargeTypeOriginal", ("chargetype",), _text),  # as Microsoft wrote it
    ("quantity", ("quantity", "consumedquantity", "overagequantity"), _amount),
    ("billableQuantity", ("billablequantity",), _amount),
    ("unitPrice", ("unitprice", "listprice"), _amount),
    ("effectiveUnitPrice", ("effectiveunitprice", "pretaxeffectiverate"), _amount),
    ("pcToBCExchangeRate", ("pctobcexchangerate",), _amount),
    ("pcToBCExchangeRateDate", ("pctobcexchangeratedate",), _text),
    ("pricingCurrency", ("pricingcurrency",), _text),
    ("chargeStart", ("chargestartdate",), _text),
    ("chargeEnd", ("chargeenddate",), _text),
    ("invoiceNumber", ("invoicenumber",), _text),
    ("meterId", ("meterid", "resourceguid"), _text),
    ("meterName", ("metername", "meterdescription"), _text),
    ("benefitType", ("benefittype",), _text),
    ("lineItemType", ("invoicelineitemtype",), _enum),
    ("billingProvider", ("billingprovider",), _enum),
)

RECON_COLUMNS: tuple[Column, ...] = _COMMON + (
    ("customerDomain", ("customerdomainname", "domainname"), _text),
    ("orderId", ("orderid",), _text),
    ("subtotal", ("subtotal", "pretaxcharges", "amount"), _amount),
    ("tax", ("taxtotal", "tax", "taxamount"), _amount),
    ("total", ("total", "totalforcustomer", "posttaxtotal"), _amount),
    ("currency", ("currency", "billingcurrency"), _text),
    ("priceAdjustmentDescription", ("priceadjustmentdescription",), _text),
    ("creditReasonCode", ("creditreasoncode",), _text),
    ("productCategory", ("productcategory", "metercategory"), _text),
    ("unitType", ("unittype",), _text),
    ("termAndBillingCycle", ("termandbillingcycle",), _text),
    ("reservationOrderId", ("reservationorderid",), _text),
    ("publisherName", ("publishername",), _text),
)

USAGE_COLUMNS: tuple[Column, ...] = _COMMON + (
    ("usageDate", ("usagedate",), _text),
    ("meterCategory", ("metercategory",), _text),
    ("meterSubCategory", ("metersubcategory",), _text),
    ("meterRegion", ("meterregion", "region"), _text),
    ("unitOfMeasure", ("unit", "unitofmeasure"), _text),
    ("resourceUri", ("resourceuri",), _text),
    ("entitlementId", ("entitlementid",), _text),
    ("billingPreTaxTotal", ("billingpretaxtotal",), _amount),
    ("pricingPreTaxTotal", ("pricingpretaxtotal",), _amount),
    ("billingCurrency", ("billingcurrency", "currency"), _text),
    ("pecPercentage", ("partnerearnedcreditpercentage",), _amount),
    ("pecRate", ("rateofpartnerearnedcredit",), _amount),
    ("hasPartnerEarnedCredit", ("haspartnerearnedcredit",), _text),
    ("creditType", ("credittype",), _text),
    ("creditPercentage", ("creditpercentage", "rateofcredit"), _amount),
    ("benefitId", ("benefitid",), _text),
    ("benefitOrderId", ("benefitorderid",), _text),
)

RECON_TOTAL = ("total", "totalforcustomer", "posttaxtotal")


def first(lowered: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = lowered.get(key)
        if value is not None and value != "":
            return value
    return None


def decimal_of(lowered: Mapping[str, Any], *keys: str) -> Decimal | None:
    return to_decimal(first(lowered, keys))


def invoice_prefix(provider_id: str, invoice_id: str) -> str:
    """Every partition of an invoice starts with this (a range query finds them all)."""
    return escape_key(f"{provider_id}|{invoice_id}|")


def generation_prefix(provider_id: str, invoice_id: str, generation: str) -> str:
    """Every partition of one import of an invoice starts with this."""
    return invoice_prefix(provider_id, invoice_id) + escape_key(generation) + "|"


@functools.lru_cache(maxsize=4096)  # one invoice's lines name a few thousand customers at most
def partition_for(provider_id: str, invoice_id: str, customer_id: str | None, generation: str) -> str:
    return generation_prefix(provider_id, invoice_id, generation) + escape_key(customer_id or NO_CUSTOMER)


def row_key(source: str, index: int) -> str:
    return f"{source}-{index:0{ROW_KEY_DIGITS}d}"


@dataclass(frozen=True)
class Line:
    """One line as stored and as the checks see it (``lowered``: the upstream keys lower-cased;
    ``amounts``: the money and quantity columns as parsed, so the checks do not parse the stored
    text again)."""

    entity: dict[str, Any]
    lowered: Mapping[str, Any]
    source: str
    amounts: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def customer_id(self) -> str | None:
        return self.entity.get("customer_key")

    @property
    def subscription_id(self) -> str | None:
        return _id(self.entity.get("subscriptionId") or self.entity.get("entitlementId"))

    def billable_quantity(self) -> Decimal | None:
        """``BillableQuantity`` where the file has it (the quantity Microsoft reconciles with),
        else ``Quantity``."""
        billable = self.amount("billableQuantity")
        return billable if billable is not None else self.amount("quantity")

    def amount(self, column: str) -> Decimal | None:
        if column in self.amounts:
            return self.amounts[column]
        return to_decimal(self.entity.get(column))


def build_row(item: Mapping[str, Any], columns: tuple[Column, ...], *, provider_id: str, invoice_id: str,
              source: str, index: int, generation: str) -> Line:
    """The table entity of one upstream line (recon or usage, by ``columns``)."""
    lowered = lower_keys(item)
    customer = _id(first(lowered, ("customerid",)))
    entity: dict[str, Any] = {
        "PartitionKey": partition_for(provider_id, invoice_id, customer, generation),
        "RowKey": row_key(source, index),
        "provider_id": provider_id, "invoice_id": invoice_id, "source": source, "line_index": index,
        "generation": generation,
    }
    if customer:
        entity["customer_key"] = customer
    amounts: dict[str, Decimal] = {}
    get = lowered.get
    for name, keys, convert in columns:
        for key in keys:  # first(lowered, keys), inlined: this loop runs ~40 times a line
            value = get(key)
            if value is not None and value != "":
                break
        else:
            continue
        value = convert(value)
        if value is None:
            continue
        if convert is _amount:
            amounts[name] = value
            value = plain(value)
        entity[name] = value
    # a line read from JSON Lines keeps Microsoft's own text (every digit as written)
    raw = item.text if isinstance(item, JsonLine) else dumps_exact(item)
    # a character is at most two UTF-16 units: only long texts need counting
    if len(raw) * 2 <= MAX_RAW_UTF16_UNITS or utf16_units(raw) <= MAX_RAW_UTF16_UNITS:
        entity["raw"] = raw
        entity["raw_truncated"] = False
    else:
        entity["raw_truncated"] = True
    return Line(entity, lowered, source, amounts)


def recon_total(line: Line) -> Decimal:
    return decimal_of(line.lowered, *RECON_TOTAL) or Decimal(0)


__all__ = ["Line", "NO_CUSTOMER", "RECON_COLUMNS", "USAGE_COLUMNS", "build_row", "decimal_of", "first",
           "generation_prefix", "invoice_prefix", "partition_for", "recon_total", "row_key"]
