"""Invoice line items and their reconciliation against the invoice total.

* Line sources are :class:`~sync.streams.Stream` s of the ``invoicelineitems`` table whose parent
  is the invoice: Partner Center v1 (``/invoices/{id}/lineitems``: ``office`` and ``azure``
  billing with size/offset, ``onetime`` billing with seek) or the Graph v2 billed
  reconciliation export (``recon``, ``path=None``: read by the Graph client).
* each line becomes a row (:mod:`sync.invoices.lines`), written per customer partition under
  the import's generation (:mod:`sync.invoices.store`);
* :func:`reconcile`: line count and sum of line totals against the invoice total, within the
  provider's usage mismatch tolerance.

Row keys are ``<source>-<index>`` (9 digits): the position of the line in its source's order.
Partner Center and the export return lines in a stable order for an invoice (lines are not
added to a billed invoice; corrections come as new adjustment invoices), so the index is a
stable id; a re-import replaces the rows either way.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import quote

from shared.jsonutil import get_path
from shared.paging import PagingStyle
from shared.providers import Tolerance

from ..streams import INVOICES, Stream
from .money import plain, to_decimal

LINE_ITEMS_TABLE = "invoicelineitems"
V1_PAGE_SIZE = 2000  # documented default and maximum for reconciliation line items


class ReconciliationStatus(enum.StrEnum):
    """``recon_status`` of an invoice row."""

    RECONCILED = "reconciled"  # lines add up to the invoice total within the tolerance
    MISMATCH = "mismatch"
    PENDING = "pending"  # no line data yet; the next invoices timer enqueues the import again
    FAILED = "failed"
    INVOICE_NOT_FOUND = "rejected"  # the invoice does not exist (404): the import's outcome
    CONSENT_REQUIRED = "consent_required"
    DEGRADED = "degraded"  # not imported: the App+User token is unavailable (import_message names the fix)


# --------------------------------------------------------------------------------------------
# Sources: streams under the invoice, read in name order so that row keys only grow
# --------------------------------------------------------------------------------------------


def _v1_lines(billing_provider: str, paging: PagingStyle) -> Stream:
    return Stream(name=billing_provider, table=LINE_ITEMS_TABLE, path="/invoices/{parent_id}/lineitems",
                  paging=paging, params={"provider": billing_provider, "invoicelineitemtype": "billinglineitems"},
                  parent=INVOICES.name, page_size=V1_PAGE_SIZE, columns=(), exact_numbers=True)


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


def line_partition_key(provider_id: str, invoice_id: str) -> str:
    """The one partition an invoice's lines had before partitions per customer (swept by the
    next import; :func:`sync.invoices.lines.partition_for` is today's layout)."""
    return V2_RECON.partition_key(provider_id, invoice_id)


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
            "recon_lines_total": plain(self.lines_total),
            "recon_invoice_total": plain(self.invoice_total),
            "recon_difference": plain(self.difference),
            "recon_allowed_difference": plain(self.allowed_difference),
            "recon_tolerance": self.tolerance,
        }

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "lineCount": self.line_count, "linesTotal": plain(self.lines_total),
                "invoiceTotal": plain(self.invoice_total), "difference": plain(self.difference),
                "allowedDifference": plain(self.allowed_difference), "tolerance": self.tolerance}


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
    "LINE_ITEMS_TABLE", "LineTally", "ReconciliationStatus", "ReconciliationSummary", "V1_AZURE", "V1_OFFICE",
    "V1_ONETIME", "V2_RECON", "escape_path", "line_partition_key", "reconcile", "to_decimal", "v1_sources_for",
]
