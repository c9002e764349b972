"""Invoice line items and their reconciliation against the invoice total.

* Line sources are :class:`~sync.streams.Stream` s of the ``invoicelineitems`` table whose parent
  is the invoice: Partner Center v1 (``/invoices/{id}/lineitems``: ``office`` and ``azure``
  billing with size/offset, ``onetime`` billing with seek) or the Graph v2 billed
  reconciliation export (``recon``, ``path=None``: read by the Graph client).
* :func:`build_line_row`: one table entity per line. Common fields are flattened and parsed
  defensively: keys in any case (camelCase from v1, PascalCase from some exports), numbers that
  arrive as strings, enums passed through lower-cased. The raw JSON is kept when it fits.
  Rows are written by :class:`sync.rows.RowWriter` in RowKey order (a merge-join with the
  stored partition, :class:`sync.rows.StoredInKeyOrder`), so memory stays flat for an invoice
  of a million lines; stored rows that upstream no longer has are marked removed.
* :func:`reconcile`: line count and sum of line totals against the invoice total, within the
  provider's usage mismatch tolerance.

Row keys are ``<source>-<index>`` (9 digits): the position of the line in its source's order.
Partner Center and the export return lines in a stable order for an invoice (lines are not
added to a billed invoice; corrections come as new adjustment invoices), so the index is a
stable id. If the order did change, the rows at the affected indexes would simply be rewritten
with the lines now there: the table still equals upstream and the sums stay right.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping
from urllib.parse import quote

from shared.jsonutil import as_enum, as_text, get_path, lower_keys
from shared.paging import PagingStyle
from shared.providers import Tolerance

from ..streams import INVOICES, MAX_RAW_UTF16_UNITS, Stream, utf16_units

LINE_ITEMS_TABLE = "invoicelineitems"
V1_PAGE_SIZE = 2000  # documented default and maximum for reconciliation line items
ROW_KEY_DIGITS = 9


class ReconciliationStatus(enum.StrEnum):
    """``recon_status`` of an invoice row."""

    RECONCILED = "reconciled"  # lines add up to the invoice total within the tolerance
    MISMATCH = "mismatch"
    PENDING = "pending"  # no line data yet; the next invoices timer enqueues the import again
    FAILED = "failed"
    INVOICE_NOT_FOUND = "rejected"  # the invoice does not exist (404): the import's outcome
    CONSENT_REQUIRED = "consent_required"


# --------------------------------------------------------------------------------------------
# Sources: streams under the invoice, read in name order so that row keys only grow
# --------------------------------------------------------------------------------------------


def _v1_lines(billing_provider: str, paging: PagingStyle) -> Stream:
    return Stream(name=billing_provider, table=LINE_ITEMS_TABLE, path="/invoices/{parent_id}/lineitems",
                  paging=paging, params={"provider": billing_provider, "invoicelineitemtype": "billinglineitems"},
                  parent=INVOICES.name, page_size=V1_PAGE_SIZE, columns=())


V1_AZURE = _v1_lines("azure", PagingStyle.OFFSET)  # legacy Azure (0145P) billing
V1_OFFICE = _v1_lines("office", PagingStyle.OFFSET)  # legacy license-based
V1_ONETIME = _v1_lines("onetime", PagingStyle.SEEK)  # new commerce billed recon
V2_RECON = Stream(name="recon", table=LINE_ITEMS_TABLE, path=None, paging=PagingStyle.NONE, parent=INVOICES.name,
                  columns=())  # Graph billed reconciliation export

# invoiceDetails[].billingProvider -> v1 source (billing line items only: usage lines carry no charge)
_DETAIL_PROVIDERS = {"office": V1_OFFICE, "azure": V1_AZURE, "one_time": V1_ONETIME, "onetime": V1_ONETIME,
                     "all": V1_ONETIME}


def escape_path(segment: str) -> str:
    return quote(str(segment), safe="")


def v1_sources_for(invoice: Mapping[str, Any], *, legacy: bool) -> tuple[Stream, ...]:
    """The v1 billing sources an invoice lists in ``invoiceDetails``; by kind when it lists none."""
    found: dict[str, Stream] = {}
    for detail in get_path(invoice, "invoiceDetails") or []:
        if not isinstance(detail, Mapping):
            continue
        item_type = str(get_path(detail, "invoiceLineItemType") or "").lower().replace("_", "")
        if item_type and item_type != "billinglineitems":
            continue
        source = _DETAIL_PROVIDERS.get(str(get_path(detail, "billingProvider") or "").lower())
        if source is not None:
            found[source.name] = source
    if not found:
        found = {V1_AZURE.name: V1_AZURE, V1_OFFICE.name: V1_OFFICE} if legacy else {V1_ONETIME.name: V1_ONETIME}
    return tuple(sorted(found.values(), key=lambda s: s.name))


# --------------------------------------------------------------------------------------------
# Defensive parsing
# --------------------------------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal | None:
    """Numbers, numeric strings ("1,234.50", " 12 ") and floats (by their shortest repr)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    text = repr(value) if isinstance(value, float) else str(value).strip().replace(",", "")
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _float(value: Any) -> float | None:
    number = to_decimal(value)
    return None if number is None else float(number)


def _text(value: Any) -> str | None:
    """Like :func:`~shared.jsonutil.as_text`, but blank text is no value."""
    text = as_text(value)
    return text if text is not None and text.strip() else None


def _enum(value: Any) -> str | None:
    return as_enum(_text(value))


# table column -> (candidate keys, lower-cased, first present wins; converter)
LINE_COLUMNS: tuple[tuple[str, tuple[str, ...], Callable[[Any], Any]], ...] = (
    ("customerId", ("customerid",), _text),
    ("customerName", ("customername", "customercompanyname"), _text),
    ("customerDomain", ("customerdomainname", "domainname"), _text),
    ("subscriptionId", ("subscriptionid",), _text),
    ("orderId", ("orderid",), _text),
    ("productId", ("productid", "offerid"), _text),
    ("skuId", ("skuid", "sku"), _text),
    ("productName", ("productname", "offername", "servicename"), _text),
    ("skuName", ("skuname", "resourcename"), _text),
    ("chargeType", ("chargetype",), _enum),
    ("quantity", ("quantity", "billablequantity", "overagequantity", "consumedquantity"), _float),
    ("unitPrice", ("unitprice", "listprice"), _float),
    ("effectiveUnitPrice", ("effectiveunitprice", "pretaxeffectiverate"), _float),
    ("subtotal", ("subtotal", "pretaxcharges", "amount", "billingpretaxtotal"), _float),
    ("tax", ("taxtotal", "tax", "taxamount"), _float),
    ("total", ("totalforcustomer", "posttaxtotal", "total"), _float),
    ("currency", ("currency", "billingcurrency"), _text),
    ("chargeStart", ("chargestartdate",), _text),
    ("chargeEnd", ("chargeenddate",), _text),
    ("invoiceNumber", ("invoicenumber",), _text),
    ("lineItemType", ("invoicelineitemtype",), _enum),
    ("billingProvider", ("billingprovider",), _enum),
)
TOTAL_KEYS = ("totalforcustomer", "posttaxtotal", "total")


def _first(lowered: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = lowered.get(key)
        if value is not None and value != "":
            return value
    return None


def line_partition_key(provider_id: str, invoice_id: str) -> str:
    """Every line source of an invoice writes the invoice's one partition."""
    return V2_RECON.partition_key(provider_id, invoice_id)


def line_row_key(source: Stream, index: int) -> str:
    return f"{source.name}-{index:0{ROW_KEY_DIGITS}d}"


# Bump when the flattened columns change, so that every stored line is rewritten once.
ROW_MAPPING_VERSION = "1"


def line_content_hash(raw: str, *, partition_key: str, row_key: str) -> str:
    """Every column of a line row is a function of its raw JSON and its keys (and of this
    module's mapping, versioned), so hashing those is enough and far cheaper than hashing the
    whole entity."""
    digest = hashlib.sha256(f"{ROW_MAPPING_VERSION}|{partition_key}|{row_key}|".encode("utf-8"))
    digest.update(raw.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@dataclass(frozen=True)
class LineRow:
    entity: dict[str, Any]
    total: Decimal


def build_line_row(item: Mapping[str, Any], *, provider_id: str, invoice_id: str, source: Stream,
                   index: int) -> LineRow:
    """The ``invoicelineitems`` entity for one upstream line, and the line's total as a Decimal."""
    lowered = lower_keys(item)
    entity: dict[str, Any] = {
        "PartitionKey": line_partition_key(provider_id, invoice_id),
        "RowKey": line_row_key(source, index),
        "provider_id": provider_id,
        "invoice_id": invoice_id,
        "source": source.name,
        "line_index": index,
    }
    for name, keys, convert in LINE_COLUMNS:
        value = convert(_first(lowered, keys))
        if value is not None:
            entity[name] = value
    raw = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    # a character is at most two UTF-16 units: only long texts need counting
    if len(raw) * 2 <= MAX_RAW_UTF16_UNITS or utf16_units(raw) <= MAX_RAW_UTF16_UNITS:
        entity["raw"] = raw
        entity["raw_truncated"] = False
    else:
        entity["raw_truncated"] = True
    entity["content_hash"] = line_content_hash(raw, partition_key=entity["PartitionKey"], row_key=entity["RowKey"])
    return LineRow(entity, to_decimal(_first(lowered, TOTAL_KEYS)) or Decimal(0))


# --------------------------------------------------------------------------------------------
# Reconciliation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationSummary:
    line_count: int
    lines_total: Decimal
    invoice_total: Decimal
    difference: Decimal  # lines_total - invoice_total
    allowed_difference: Decimal
    tolerance: str
    status: ReconciliationStatus

    def to_fields(self) -> dict[str, Any]:
        """Columns merged into the invoice row (amounts as exact decimal strings)."""
        return {
            "recon_status": self.status.value,
            "recon_line_count": self.line_count,
            "recon_lines_total": _plain(self.lines_total),
            "recon_invoice_total": _plain(self.invoice_total),
            "recon_difference": _plain(self.difference),
            "recon_allowed_difference": _plain(self.allowed_difference),
            "recon_tolerance": self.tolerance,
        }

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "lineCount": self.line_count, "linesTotal": _plain(self.lines_total),
                "invoiceTotal": _plain(self.invoice_total), "difference": _plain(self.difference),
                "allowedDifference": _plain(self.allowed_difference), "tolerance": self.tolerance}


def _plain(value: Decimal) -> str:
    """Fixed-point text without exponent ("1234.5", "0", "-0.01")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def reconcile(*, invoice_total: Decimal, lines_total: Decimal, line_count: int,
              tolerance: Tolerance) -> ReconciliationSummary:
    """``reconciled`` when |lines - invoice| is within the tolerance (an amount in the provider
    currency, or a percentage of the invoice total), ``mismatch`` otherwise."""
    difference = lines_total - invoice_total
    allowed = tolerance.allowed_difference(invoice_total)
    status = ReconciliationStatus.RECONCILED if abs(difference) <= allowed else ReconciliationStatus.MISMATCH
    return ReconciliationSummary(line_count, lines_total, invoice_total, difference, allowed, str(tolerance), status)


@dataclass
class LineTally:
    """Running count and sum while lines stream past (per source too, for the run record)."""

    count: int = 0
    total: Decimal = field(default_factory=lambda: Decimal(0))
    per_source: dict[str, int] = field(default_factory=dict)

    def add(self, source: Stream, amount: Decimal) -> None:
        self.count += 1
        self.total += amount
        self.per_source[source.name] = self.per_source.get(source.name, 0) + 1


__all__ = [
    "LINE_ITEMS_TABLE", "LineRow", "LineTally", "ReconciliationStatus", "ReconciliationSummary",
    "V1_AZURE", "V1_OFFICE", "V1_ONETIME", "V2_RECON", "build_line_row", "escape_path", "line_partition_key",
    "line_row_key", "reconcile", "to_decimal", "v1_sources_for",
]
