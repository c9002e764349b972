"""Invoice line items and their reconciliation against the invoice total.

* :class:`LineSource`: where an invoice's billed line items come from. Partner Center v1
  (``/invoices/{id}/lineitems``: ``office`` and ``azure`` billing with size/offset, ``onetime``
  billing with seek) or the Graph v2 billed reconciliation export (``recon``).
* :func:`build_line_row`: one table entity per line. Common fields are flattened and parsed
  defensively: keys in any case (camelCase from v1, PascalCase from some exports), numbers that
  arrive as strings, enums passed through lower-cased. The raw JSON is kept when it fits.
* :class:`LineItemWriter`: streams rows into ``invoicelineitems`` in batches of at most 100 and
  writes only new or changed rows. It merge-joins the upstream order with the stored rows of
  the partition (Table Storage returns a partition in RowKey order), so memory stays flat for
  an invoice of a million lines. Stored rows that upstream no longer has are marked removed.
* :func:`reconcile`: line count and sum of line totals against the invoice total, within the
  provider's usage mismatch tolerance.

Row keys are ``<source>-<index>`` (9 digits): the position of the line in its source's order.
Partner Center and the export return lines in a stable order for an invoice (lines are not
added to a billed invoice; corrections come as new adjustment invoices), so the index is a
stable id. If the order did change, the rows at the affected indexes would simply be rewritten
with the lines now there: the table still equals upstream and the sums stay right.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Mapping

from shared.logging import get_logger
from shared.partner_center import PageRequest, Paginator, paginator_for
from shared.providers import Tolerance
from shared.tables import MAX_BATCH_OPERATIONS, escape_key

from ..streams import MAX_RAW_UTF16_UNITS, utf16_units

log = get_logger(__name__)

LINE_ITEMS_TABLE = "invoicelineitems"
V1_PAGE_SIZE = 2000  # documented default and maximum for reconciliation line items
ROW_KEY_DIGITS = 9

STATUS_RECONCILED = "reconciled"
STATUS_MISMATCH = "mismatch"


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineSource:
    """One ordered list of billed line items of an invoice.

    ``key`` prefixes the row keys; sources are read in ``key`` order so that row keys only grow.
    """

    key: str
    api: str  # "v1" | "v2"
    provider: str | None = None  # v1 ``provider`` query value
    paging: str | None = None  # v1 paging style: "offset" | "seek"

    def first_request(self, invoice_id: str, *, page_size: int = V1_PAGE_SIZE) -> PageRequest:
        if self.api != "v1":
            raise ValueError(f"source {self.key} is not a v1 source")
        params: dict[str, Any] = {"provider": self.provider, "invoicelineitemtype": "billinglineitems",
                                  "size": page_size}
        if self.paging == "offset":
            params["offset"] = 0
        return PageRequest.of(f"/invoices/{escape_path(invoice_id)}/lineitems", params)

    def paginator(self, invoice_id: str, *, page_size: int = V1_PAGE_SIZE) -> Paginator:
        return paginator_for(self.paging or "offset", self.first_request(invoice_id, page_size=page_size))


V1_AZURE = LineSource("azure", "v1", provider="azure", paging="offset")  # legacy Azure (0145P) billing
V1_OFFICE = LineSource("office", "v1", provider="office", paging="offset")  # legacy license-based
V1_ONETIME = LineSource("onetime", "v1", provider="onetime", paging="seek")  # new commerce billed recon
V2_RECON = LineSource("recon", "v2")  # Graph billed reconciliation export
SOURCES = {s.key: s for s in (V1_AZURE, V1_OFFICE, V1_ONETIME, V2_RECON)}

# invoiceDetails[].billingProvider -> v1 source (billing line items only: usage lines carry no charge)
_DETAIL_PROVIDERS = {"office": V1_OFFICE, "azure": V1_AZURE, "one_time": V1_ONETIME, "onetime": V1_ONETIME,
                     "all": V1_ONETIME}


def escape_path(segment: str) -> str:
    from urllib.parse import quote

    return quote(str(segment), safe="")


def v1_sources_for(invoice: Mapping[str, Any], *, legacy: bool) -> tuple[LineSource, ...]:
    """The v1 billing sources an invoice lists in ``invoiceDetails``; by kind when it lists none."""
    found: dict[str, LineSource] = {}
    for detail in _get(invoice, "invoiceDetails") or []:
        if not isinstance(detail, Mapping):
            continue
        item_type = str(_get(detail, "invoiceLineItemType") or "").lower().replace("_", "")
        if item_type and item_type != "billinglineitems":
            continue
        source = _DETAIL_PROVIDERS.get(str(_get(detail, "billingProvider") or "").lower())
        if source is not None:
            found[source.key] = source
    if not found:
        found = {V1_AZURE.key: V1_AZURE, V1_OFFICE.key: V1_OFFICE} if legacy else {V1_ONETIME.key: V1_ONETIME}
    return tuple(sorted(found.values(), key=lambda s: s.key))


# --------------------------------------------------------------------------------------------
# Defensive parsing
# --------------------------------------------------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    if not isinstance(obj, Mapping):
        return None
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


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
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    text = str(value)
    return text if text.strip() else None


def _enum(value: Any) -> str | None:
    text = _text(value)
    return text.strip().lower() if text else None


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


def _lowered(item: Mapping[str, Any]) -> dict[str, Any]:
    """Lower-cased keys once per line (cheaper than a case-insensitive scan per field)."""
    try:
        return {k.lower(): v for k, v in item.items()}  # JSON keys are strings
    except AttributeError:
        return {str(k).lower(): v for k, v in item.items()}


def _first(lowered: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = lowered.get(key)
        if value is not None and value != "":
            return value
    return None


def line_total(item: Mapping[str, Any]) -> Decimal:
    """The charge a line adds to the invoice total (tax included); 0 when it has none."""
    return to_decimal(_first(_lowered(item), TOTAL_KEYS)) or Decimal(0)


def line_partition_key(provider_id: str, invoice_id: str) -> str:
    return escape_key(f"{provider_id}|{invoice_id}")


def line_row_key(source: LineSource, index: int) -> str:
    return f"{source.key}-{index:0{ROW_KEY_DIGITS}d}"


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


def build_line_row(item: Mapping[str, Any], *, provider_id: str, invoice_id: str, source: LineSource,
                   index: int) -> LineRow:
    """The ``invoicelineitems`` entity for one upstream line, and the line's total as a Decimal."""
    lowered = _lowered(item)
    entity: dict[str, Any] = {
        "PartitionKey": line_partition_key(provider_id, invoice_id),
        "RowKey": line_row_key(source, index),
        "provider_id": provider_id,
        "invoice_id": invoice_id,
        "source": source.key,
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
# Writing: merge-join with the stored partition, 100-entity batches, only changes
# --------------------------------------------------------------------------------------------


class StoredOrderError(RuntimeError):
    """The table returned a partition out of RowKey order (the merge-join relies on it)."""


@dataclass
class WriteCounts:
    written: int = 0
    unchanged: int = 0
    removed: int = 0


class LineItemWriter:
    """Write one invoice's line rows, given in strictly increasing RowKey order.

    ``add`` compares each row with the stored one at the same key (read lazily, a page at a
    time, alongside) and queues it only when new, changed or previously removed; stored keys
    passed over are gone upstream and get ``removed=True`` (merged, content kept). ``finish``
    removes the stored rows after the last key; call it only after a complete read.
    """

    def __init__(self, table: Any, partition_key: str, *, now: Callable[[], datetime],
                 batch_size: int = MAX_BATCH_OPERATIONS):
        self.table = table
        self.partition_key = partition_key
        self.counts = WriteCounts()
        self._now = now
        self._stamp = now()
        self._batch_size = max(1, min(batch_size, MAX_BATCH_OPERATIONS))
        self._stored = iter(table.list_entities(partition_key=partition_key,
                                                select=["RowKey", "content_hash", "removed"]))
        self._head: dict[str, Any] | None = None
        self._head_key: str | None = None
        self._advance()
        self._last_key: str | None = None
        self._pending: list[dict[str, Any]] = []
        self._tombstones: list[dict[str, Any]] = []

    def _advance(self) -> None:
        previous = self._head_key
        self._head = next(self._stored, None)
        self._head_key = None if self._head is None else self._head["RowKey"]
        if previous is not None and self._head_key is not None and self._head_key <= previous:
            raise StoredOrderError(f"stored rows out of order: {self._head_key!r} after {previous!r}")

    def _drop_head(self) -> None:
        head = self._head
        if head is not None and not head.get("removed"):
            self._tombstones.append({"PartitionKey": self.partition_key, "RowKey": head["RowKey"],
                                     "removed": True, "removed_at": self._stamp})
            if len(self._tombstones) >= self._batch_size:
                self._flush_tombstones()
        self._advance()

    def add(self, row: Mapping[str, Any]) -> None:
        key = row["RowKey"]
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"line rows must arrive in increasing RowKey order ({key!r} after {self._last_key!r})")
        self._last_key = key
        while self._head_key is not None and self._head_key < key:
            self._drop_head()
        if self._head_key == key:
            unchanged = self._head.get("content_hash") == row["content_hash"] and not self._head.get("removed")
            self._advance()
            if unchanged:
                self.counts.unchanged += 1
                return
        entity = dict(row)
        entity["removed"] = False
        entity["updated_at"] = self._stamp
        self._pending.append(entity)
        if len(self._pending) >= self._batch_size:
            self._flush_rows()

    def finish(self) -> WriteCounts:
        """The read was complete: stored rows after the last key are gone upstream."""
        while self._head_key is not None:
            self._drop_head()
        self.flush()
        return self.counts

    def flush(self) -> None:
        """Write what is queued (also after a failed read: those rows are correct)."""
        self._flush_rows()
        self._flush_tombstones()

    def _flush_rows(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.counts.written += self.table.upsert_entities(batch, replace=True)

    def _flush_tombstones(self) -> None:
        if self._tombstones:
            batch, self._tombstones = self._tombstones, []
            self.table.upsert_entities(batch, replace=False)
            self.counts.removed += len(batch)


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
    status: str

    def to_fields(self) -> dict[str, Any]:
        """Columns merged into the invoice row (amounts as exact decimal strings)."""
        return {
            "recon_status": self.status,
            "recon_line_count": self.line_count,
            "recon_lines_total": _plain(self.lines_total),
            "recon_invoice_total": _plain(self.invoice_total),
            "recon_difference": _plain(self.difference),
            "recon_allowed_difference": _plain(self.allowed_difference),
            "recon_tolerance": self.tolerance,
        }

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "lineCount": self.line_count, "linesTotal": _plain(self.lines_total),
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
    status = STATUS_RECONCILED if abs(difference) <= allowed else STATUS_MISMATCH
    return ReconciliationSummary(line_count, lines_total, invoice_total, difference, allowed, str(tolerance), status)


@dataclass
class LineTally:
    """Running count and sum while lines stream past (per source too, for the run record)."""

    count: int = 0
    total: Decimal = field(default_factory=lambda: Decimal(0))
    per_source: dict[str, int] = field(default_factory=dict)

    def add(self, source: LineSource, amount: Decimal) -> None:
        self.count += 1
        self.total += amount
        self.per_source[source.key] = self.per_source.get(source.key, 0) + 1


def iter_source_rows(items: Iterator[Mapping[str, Any]], *, provider_id: str, invoice_id: str,
                     source: LineSource) -> Iterator[LineRow]:
    for index, item in enumerate(items):
        yield build_line_row(item, provider_id=provider_id, invoice_id=invoice_id, source=source, index=index)


__all__ = [
    "LINE_ITEMS_TABLE", "LineItemWriter", "LineRow", "LineSource", "LineTally", "ReconciliationSummary",
    "SOURCES", "STATUS_MISMATCH", "STATUS_RECONCILED", "StoredOrderError", "V1_AZURE", "V1_OFFICE", "V1_ONETIME",
    "V2_RECON", "WriteCounts", "build_line_row", "iter_source_rows", "line_partition_key", "line_row_key",
    "line_total", "reconcile", "to_decimal", "v1_sources_for",
]
