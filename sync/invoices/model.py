"""Invoice import: its queue message, its run record and the rule that picks the line-item API.

Where an invoice's lines come from (:func:`plan_import`):

* legacy (D, ``Recurring``) invoices: v1 billing line items of each provider the invoice lists
  (``azure``/``office``, size/offset paging);
* new commerce (G, ``OneTime``) invoices for billing periods before February 2024: v1
  ``onetime`` billing line items (seek paging); Microsoft's guidance is v1 only for those;
* new commerce invoices from February 2024: the Graph v2 billed reconciliation export. When
  the export has no data (code 5000), periods up to March 2025 fall back to v1 ``onetime``
  (still served for them); later periods have no v1 API any more.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from shared.clock import parse_iso
from shared.graph_billing_errors import GraphBillingError
from shared.jsonutil import get_path

from ..engine import ItemMessage
from ..names import IMPORT_INVOICE_QUEUE
from ..resources import INVOICE_ID_PATTERN, is_legacy_invoice
from ..runs import RETRYABLE_ERRORS, RunOutcome, RunResult, TimerOutcome
from ..streams import Stream
from .reconciliation import V2_RECON, ReconciliationSummary, v1_sources_for

IMPORT_STREAM = "invoicelineitems"

# Billing periods (start dates) that decide the line-item API for new commerce invoices; see
# the module docstring and partner-center-api.md section 5.3.
V2_FIRST_PERIOD = datetime(2024, 2, 1, tzinfo=timezone.utc)
V1_LAST_PERIOD_END = datetime(2025, 4, 1, tzinfo=timezone.utc)  # v1 onetime served up to March 2025


class SourceChoice(enum.StrEnum):
    """Which line-item API an import may use (``pcsync import-invoice --source``)."""

    AUTO = "auto"  # by kind and billing period (plan_import)
    V1 = "v1"
    V2 = "v2"


class LineApi(enum.StrEnum):
    """Which API served an import's lines: ``syncruns.source`` and ``invoices.recon_source``."""

    V1 = "v1"  # Partner Center v1 line items
    V2 = "v2"  # the Graph billed reconciliation export
    V1_FALLBACK = "v1-fallback"  # v1 onetime, because the export had no data yet


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportMessage(ItemMessage):
    item_field = "invoice"
    item_id_pattern = INVOICE_ID_PATTERN  # the documented shape; it goes into /invoices/{id} paths
    item_problem = "'invoice' must be an invoice id (letters and digits)"
    invoice_id = property(lambda self: self.item_id)


def parse_import_message(body: bytes | str | Mapping[str, Any]) -> ImportMessage:
    return ImportMessage.parse(body)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class ImportResult(RunResult):
    invoice_id: str = ""
    source: LineApi | None = None
    rows_unchanged: int = 0
    line_count: int = 0
    summary: ReconciliationSummary | None = None
    figures: Any = None  # sync.invoices.importer.ImportFigures of the import, once it started

    @property
    def source_text(self) -> str:
        return self.source.value if self.source else ""

    @property
    def retryable(self) -> bool:
        exc = self.exception
        return isinstance(exc, RETRYABLE_ERRORS) or (isinstance(exc, GraphBillingError) and exc.retryable)

    def to_entity(self) -> dict[str, Any]:
        entity = super().to_entity()
        entity.update({"invoice_id": self.invoice_id, "source": self.source_text,
                       "rows_unchanged": self.rows_unchanged, "line_count": self.line_count})
        if self.summary is not None:
            entity.update(self.summary.to_fields())
        if self.figures is not None:
            entity.update(self.figures.to_fields())
        return entity

    @property
    def state(self) -> str:
        return self.figures.state.value if self.figures is not None else ""

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider_id, "invoice": self.invoice_id, "outcome": RunOutcome(self.outcome).value,
                "source": self.source_text, "rowsRead": self.rows_read, "rowsWritten": self.rows_written,
                "rowsUnchanged": self.rows_unchanged, "rowsRemoved": self.rows_removed, "calls": self.calls,
                "reconciliation": self.summary.to_json() if self.summary else None, "error": self.error,
                **(self.figures.to_json() if self.figures is not None else {})}


@dataclass
class InvoicesOutcome(TimerOutcome):
    invoices_enqueued: int = 0
    invoice_ids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Planning: which API serves an invoice's lines
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    api: LineApi  # V1 or V2
    sources: tuple[Stream, ...]
    fallback: tuple[Stream, ...] = ()  # v1 sources to use when the v2 export has no data
    legacy: bool = False


def plan_import(invoice: Mapping[str, Any], *, source: SourceChoice | str = SourceChoice.AUTO) -> ImportPlan:
    try:
        choice = SourceChoice(source)
    except ValueError:
        raise ValueError(f"unknown source {source!r}; expected one of "
                         f"{tuple(c.value for c in SourceChoice)}") from None
    legacy = is_legacy_invoice(invoice)
    v1 = v1_sources_for(invoice, legacy=legacy)
    if choice is SourceChoice.V1:
        return ImportPlan(LineApi.V1, v1, legacy=legacy)
    if choice is SourceChoice.V2:
        return ImportPlan(LineApi.V2, (V2_RECON,), legacy=legacy)
    if legacy:
        return ImportPlan(LineApi.V1, v1, legacy=True)
    # Without a billing period the invoice date stands in (a period always precedes its invoice).
    period_start = parse_iso(get_path(invoice, "billingPeriodStartDate") or get_path(invoice, "invoiceDate"))
    if period_start is not None and period_start < V2_FIRST_PERIOD:
        return ImportPlan(LineApi.V1, v1)
    fallback = v1 if period_start is not None and period_start < V1_LAST_PERIOD_END else ()
    return ImportPlan(LineApi.V2, (V2_RECON,), fallback=fallback)


__all__ = [
    "IMPORT_INVOICE_QUEUE", "IMPORT_STREAM", "ImportMessage", "ImportPlan", "ImportResult", "InvoicesOutcome",
    "LineApi", "SourceChoice", "parse_import_message", "plan_import",
]
