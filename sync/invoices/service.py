"""Invoices: list them (timer), import each new or changed invoice's line items (queue),
reconcile the lines against the invoice total.

Timer (per enabled, consented provider): the ``invoices`` stream runs through the sync engine
(content-hash diff, tombstones, ``syncruns`` row); then one ``import-invoice`` message goes out
for every live invoice whose ``content_hash`` differs from its ``import_hash``. ``import_hash``
is merged into the invoice row when the message is sent and again by the import, so an
unchanged invoice is never enqueued twice, and an invoice whose content changed (the engine
replaces the row, which drops ``import_hash``) is enqueued again. The outbox-style marker also
survives a crash between the table write and the send: the next run still enqueues.

Import (one message, one invoice):

* ``GET /v1/invoices/{id}``: the current total, type and billing period (404 -> ``rejected``);
* where the lines come from (:func:`plan_import`):
  - legacy (D, ``Recurring``) invoices: v1 billing line items of each provider the invoice lists
    (``azure``/``office``, size/offset paging);
  - new commerce (G, ``OneTime``) invoices for billing periods before February 2024: v1
    ``onetime`` billing line items (seek paging); Microsoft's guidance is v1 only for those;
  - new commerce invoices from February 2024: the Graph v2 billed reconciliation export.
    When the export fails with code 5000 (no data), periods up to March 2025 fall back to v1
    ``onetime`` (still served for them); later periods have no v1 API any more, so the import
    ends ``unavailable``: the invoice row gets ``recon_status=pending`` and its ``import_hash``
    is cleared, so the next invoices timer enqueues it again (the data usually appears within a
    day). The queue does not retry it: redelivery 30 seconds later would not find data either.
* lines -> ``invoicelineitems`` (see reconciliation.py), streamed, only changes written;
* the reconciliation summary is merged into the invoice row; a ``syncruns`` row records the run.

Errors: transient Partner Center / Graph failures raise (the queue redelivers, then poisons);
``ConsentRequired`` ends the import cleanly; a permission or format problem is recorded as
``failed`` on the run and the invoice row (and retried by the next timer run).
"""
from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping

from shared.errors import ConsentRequired
from shared.graph_billing import ExportFailed, GraphBillingClient, GraphBillingError
from shared.logging import get_logger
from shared.partner_center import CallStats, NotFoundError, PartnerCenterClient, PartnerCenterError, get_path
from shared.providers import ProviderConnection
from shared.tables import escape_key

from .. import engine
from ..engine import (
    OUTCOME_CONSENT_REQUIRED,
    OUTCOME_FAILED,
    OUTCOME_SUCCEEDED,
    RETRYABLE_ERRORS,
    InvalidMessage,
    RunResult,
    SyncService,
    utc_now,
)
from .reconciliation import (
    LINE_ITEMS_TABLE,
    V2_RECON,
    LineItemWriter,
    LineSource,
    LineTally,
    ReconciliationSummary,
    build_line_row,
    escape_path,
    line_partition_key,
    reconcile,
    to_decimal,
    v1_sources_for,
)
from ..streams import INVOICES

log = get_logger(__name__)

IMPORT_INVOICE_QUEUE = "import-invoice"
IMPORT_STREAM = "invoicelineitems"

OUTCOME_REJECTED = "rejected"  # the invoice does not exist (404): recorded, never retried
OUTCOME_UNAVAILABLE = "unavailable"  # Graph has no data yet (5000) and no v1 fallback applies

RECON_PENDING = "pending"
RECON_FAILED = "failed"

# Billing periods (start dates) that decide the line-item API for new commerce invoices; see
# the module docstring and partner-center-api.md section 5.3.
V2_FIRST_PERIOD = datetime(2024, 2, 1, tzinfo=timezone.utc)
V1_LAST_PERIOD_END = datetime(2025, 4, 1, tzinfo=timezone.utc)  # v1 onetime served up to March 2025

SOURCE_CHOICES = ("auto", "v1", "v2")
_INVOICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportMessage:
    provider_id: str
    invoice_id: str
    correlation_id: str

    def to_json(self) -> dict[str, str]:
        return {"provider": self.provider_id, "invoice": self.invoice_id, "correlationId": self.correlation_id}


def parse_import_message(body: bytes | str | Mapping[str, Any]) -> ImportMessage:
    message, correlation = engine.decode_message(body)
    invoice = message.get("invoice")
    if not isinstance(invoice, str) or not _INVOICE_ID.match(invoice):
        raise InvalidMessage("'invoice' must be an invoice id (letters, digits, '.', '_', '-')")
    return ImportMessage(message["provider"], invoice, correlation)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class ImportResult(RunResult):
    invoice_id: str = ""
    source: str = ""  # "v1", "v2", "v1-fallback"
    rows_unchanged: int = 0
    line_count: int = 0
    summary: ReconciliationSummary | None = None

    @property
    def retryable(self) -> bool:
        exc = self.exception
        return isinstance(exc, RETRYABLE_ERRORS) or (isinstance(exc, GraphBillingError) and exc.retryable)

    def to_entity(self) -> dict[str, Any]:
        entity = super().to_entity()
        entity.update({"invoice_id": self.invoice_id, "source": self.source, "rows_unchanged": self.rows_unchanged,
                       "line_count": self.line_count})
        if self.summary is not None:
            entity.update(self.summary.to_fields())
        return entity

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider_id, "invoice": self.invoice_id, "outcome": self.outcome,
                "source": self.source, "rowsRead": self.rows_read, "rowsWritten": self.rows_written,
                "rowsUnchanged": self.rows_unchanged, "rowsRemoved": self.rows_removed, "calls": self.calls,
                "reconciliation": self.summary.to_json() if self.summary else None, "error": self.error}


@dataclass
class InvoicesOutcome:
    provider_id: str
    outcome: str
    invoices_enqueued: int = 0
    runs: list[RunResult] = field(default_factory=list)
    error: str | None = None
    invoice_ids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Planning: which API serves an invoice's lines
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    api: str  # "v1" | "v2"
    sources: tuple[LineSource, ...]
    fallback: tuple[LineSource, ...] = ()  # v1 sources to use when the v2 export has no data
    legacy: bool = False


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text[:19])
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def is_legacy(invoice: Mapping[str, Any]) -> bool:
    invoice_id = str(get_path(invoice, "id") or "").upper()
    if invoice_id.startswith("D"):
        return True
    if invoice_id.startswith("G"):
        return False
    return str(get_path(invoice, "invoiceType") or "").lower() == "recurring"


def plan_import(invoice: Mapping[str, Any], *, source: str = "auto") -> ImportPlan:
    legacy = is_legacy(invoice)
    v1 = v1_sources_for(invoice, legacy=legacy)
    if source == "v1":
        return ImportPlan("v1", v1, legacy=legacy)
    if source == "v2":
        return ImportPlan("v2", (V2_RECON,), legacy=legacy)
    if source != "auto":
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCE_CHOICES}")
    if legacy:
        return ImportPlan("v1", v1, legacy=True)
    # Without a billing period the invoice date stands in (a period always precedes its invoice).
    period_start = _parse_time(get_path(invoice, "billingPeriodStartDate") or get_path(invoice, "invoiceDate"))
    if period_start is not None and period_start < V2_FIRST_PERIOD:
        return ImportPlan("v1", v1)
    fallback = v1 if period_start is not None and period_start < V1_LAST_PERIOD_END else ()
    return ImportPlan("v2", (V2_RECON,), fallback=fallback)


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------


class InvoiceService:
    """Invoices timer and import. Built on the process's :class:`SyncService` (its Partner
    Center clients, call budgets and run records); adds one Graph billing client per provider."""

    def __init__(
        self,
        sync: SyncService,
        *,
        graph_url: str,
        ca_bundle: str | None = None,
        token_sources: Callable[[Any, ProviderConnection], Any] | None = None,
        graph_options: Mapping[str, Any] | None = None,
        v1_page_size: int = 2000,
        now: Callable[[], datetime] = utc_now,
    ):
        self.sync = sync
        self.graph_url = graph_url
        self.ca_bundle = ca_bundle
        self._token_sources = token_sources
        self.graph_options = dict(graph_options or {})
        self.v1_page_size = v1_page_size
        self._now = now
        self._graph: dict[str, tuple[str, GraphBillingClient]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_runtime(cls, runtime: Any, *, sync: SyncService | None = None, **overrides: Any) -> "InvoiceService":
        sync = sync or engine.service_for(runtime)
        options: dict[str, Any] = {"graph_url": runtime.settings.graph_url, "ca_bundle": runtime.settings.ca_bundle}
        options.update(overrides)
        return cls(sync, **options)

    @property
    def tables(self) -> Any:
        return self.sync.tables

    # -- clients -------------------------------------------------------------------------------

    def _token_source(self, provider: ProviderConnection) -> Any:
        if self._token_sources:
            return self._token_sources(self.sync.runtime, provider)
        return self.sync.token_source_for(provider)

    def graph_client_for(self, provider: ProviderConnection) -> GraphBillingClient:
        with self._lock:
            cached = self._graph.get(provider.id)
            if cached and cached[0] == provider.tenant_id:
                return cached[1]
        client = GraphBillingClient(self.graph_url, self._token_source(provider), ca_bundle=self.ca_bundle,
                                    **self.graph_options)
        with self._lock:
            self._graph[provider.id] = (provider.tenant_id, client)
        return client

    # -- timer ---------------------------------------------------------------------------------

    def sync_provider_invoices(self, provider: ProviderConnection, *, correlation_id: str | None = None,
                               enqueue: bool = True) -> InvoicesOutcome:
        """The invoices stream, then one ``import-invoice`` message per new or changed invoice
        (``enqueue=False``: mark nothing, just return their ids for the caller to import)."""
        correlation_id = correlation_id or str(uuid.uuid4())
        result = self.sync.run_stream(INVOICES, provider, correlation_id=correlation_id)
        outcome = InvoicesOutcome(provider.id, result.outcome, runs=[result], error=result.error)
        if result.outcome != OUTCOME_SUCCEEDED:
            return outcome
        table = self.tables.table(INVOICES.table)
        rows = list(table.list_entities(partition_key=INVOICES.partition_key(provider.id),
                                        select=["PartitionKey", "RowKey", "id", "content_hash", "import_hash", "removed"]))
        for row in rows:
            if row.get("removed") or not row.get("id") or not row.get("content_hash"):
                continue
            if row.get("import_hash") == row["content_hash"]:
                continue
            outcome.invoice_ids.append(row["id"])
            if not enqueue:
                continue
            message = ImportMessage(provider.id, row["id"], correlation_id)
            self.sync.queues.send_json(IMPORT_INVOICE_QUEUE, message.to_json())
            table.upsert_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"],
                                 "import_hash": row["content_hash"]})
            outcome.invoices_enqueued += 1
        return outcome

    def sync_all_providers(self, *, correlation_id: str | None = None) -> list[InvoicesOutcome]:
        """The invoices timer: every enabled provider with active consent."""
        return engine.for_each_active_provider(
            self.sync.providers, lambda p: self.sync_provider_invoices(p, correlation_id=correlation_id),
            InvoicesOutcome, "invoices sync",
        )

    # -- import --------------------------------------------------------------------------------

    def handle_import_message(self, message: ImportMessage) -> ImportResult | None:
        """Queue work: None when the provider cannot be worked on; raises when a redelivery may help."""
        provider = self.sync.providers.find_provider(message.provider_id)
        if provider is None or not provider.enabled or provider.consent_status != "active":
            state = "missing" if provider is None else ("disabled" if not provider.enabled else
                                                        f"consent {provider.consent_status}")
            log.info("import-invoice for %s/%s dropped: provider %s", message.provider_id, message.invoice_id, state,
                     extra={"provider_id": message.provider_id, "invoice_id": message.invoice_id})
            return None
        result = self.import_invoice(provider, message.invoice_id, correlation_id=message.correlation_id)
        if result.retryable:
            raise result.exception  # type: ignore[misc]
        return result

    def import_invoice(self, provider: ProviderConnection, invoice_id: str, *, correlation_id: str | None = None,
                       source: str = "auto", client: PartnerCenterClient | None = None) -> ImportResult:
        """Import one invoice's line items and reconcile them. Never raises for Partner Center,
        Graph or consent failures: they become the run's outcome (``result.exception`` keeps the
        error so that the queue handler can decide on redelivery)."""
        correlation_id = correlation_id or str(uuid.uuid4())
        result = ImportResult(provider.id, IMPORT_STREAM, None, correlation_id, invoice_id=invoice_id)
        stats = CallStats()
        invoice: dict[str, Any] | None = None
        try:
            bound = (client or self.sync.client_for(provider)).bind(correlation_id=correlation_id, stats=stats)
            invoice = bound.get_json(f"/invoices/{escape_path(invoice_id)}")
            self._import(provider, invoice_id, invoice, bound, stats, result, source=source)
        except ConsentRequired as exc:
            result.outcome, result.error, result.exception = OUTCOME_CONSENT_REQUIRED, str(exc), exc
            self.sync.forget_client(provider.id)
            log.warning("provider %s needs consent again (%s); invoice %s not imported", provider.id, exc.status,
                        invoice_id, extra={"provider_id": provider.id, "invoice_id": invoice_id})
        except NotFoundError as exc:
            result.outcome, result.error, result.exception = OUTCOME_REJECTED, str(exc), exc
            log.warning("invoice %s of provider %s does not exist; import rejected", invoice_id, provider.id,
                        extra={"provider_id": provider.id, "invoice_id": invoice_id})
        except (PartnerCenterError, GraphBillingError) as exc:
            result.outcome, result.error, result.exception = OUTCOME_FAILED, str(exc), exc
            log.warning("import of invoice %s for %s failed: %s", invoice_id, provider.id, exc,
                        extra={"provider_id": provider.id, "invoice_id": invoice_id})
        except Exception as exc:  # record, then let the runtime see it
            result.outcome, result.error, result.exception = OUTCOME_FAILED, f"{type(exc).__name__}: {exc}", exc
            self._finish(result, stats)
            self._mark_invoice(provider.id, invoice_id, result)
            raise
        self._finish(result, stats)
        self._mark_invoice(provider.id, invoice_id, result, invoice=invoice)
        return result

    def _import(self, provider: ProviderConnection, invoice_id: str, invoice: Mapping[str, Any],
                client: PartnerCenterClient, stats: CallStats, result: ImportResult, *, source: str) -> None:
        plan = plan_import(invoice, source=source)
        invoice_total = to_decimal(get_path(invoice, "totalCharges")) or to_decimal(0)
        table = self.tables.table(LINE_ITEMS_TABLE)
        writer = LineItemWriter(table, line_partition_key(provider.id, invoice_id), now=self._now)
        tally = LineTally()
        complete = False
        try:
            if plan.api == "v2":
                graph = self.graph_client_for(provider).bind(stats=stats)
                try:
                    manifest = graph.export_billed_reconciliation(invoice_id)
                except ExportFailed as exc:
                    if not exc.no_data:
                        raise
                    if not plan.fallback:
                        result.outcome, result.error, result.exception = OUTCOME_UNAVAILABLE, str(exc), None
                        result.source = "v2"
                        log.info("no v2 reconciliation data for invoice %s yet (%s); the next invoices run retries",
                                 invoice_id, exc, extra={"provider_id": provider.id, "invoice_id": invoice_id})
                        return
                    log.info("no v2 data for invoice %s; reading v1 onetime line items", invoice_id,
                             extra={"provider_id": provider.id, "invoice_id": invoice_id})
                    result.source = "v1-fallback"
                    self._write_v1(plan.fallback, provider, invoice_id, client, writer, tally, result)
                else:
                    result.source = "v2"
                    self._write_rows(V2_RECON, graph.iter_rows(manifest), provider, invoice_id, writer, tally, result)
            else:
                result.source = "v1"
                self._write_v1(plan.sources, provider, invoice_id, client, writer, tally, result)
            complete = True
        finally:
            if complete:
                writer.finish()
            else:
                writer.flush()
            result.rows_written += writer.counts.written
            result.rows_unchanged = writer.counts.unchanged
            result.rows_removed = writer.counts.removed
        result.line_count = tally.count
        result.summary = reconcile(invoice_total=invoice_total, lines_total=tally.total, line_count=tally.count,
                                   tolerance=provider.tolerance)
        result.outcome = OUTCOME_SUCCEEDED

    def _write_v1(self, sources: Iterable[LineSource], provider: ProviderConnection, invoice_id: str,
                  client: PartnerCenterClient, writer: LineItemWriter, tally: LineTally, result: ImportResult) -> None:
        for line_source in sorted(sources, key=lambda s: s.key):
            items = client.iter_items(line_source.paginator(invoice_id, page_size=self.v1_page_size))
            self._write_rows(line_source, items, provider, invoice_id, writer, tally, result)

    @staticmethod
    def _write_rows(line_source: LineSource, items: Iterator[Mapping[str, Any]], provider: ProviderConnection,
                    invoice_id: str, writer: LineItemWriter, tally: LineTally, result: ImportResult) -> None:
        for index, item in enumerate(items):
            row = build_line_row(item, provider_id=provider.id, invoice_id=invoice_id, source=line_source, index=index)
            result.rows_read += 1
            tally.add(line_source, row.total)
            writer.add(row.entity)

    # -- records -------------------------------------------------------------------------------

    def _finish(self, result: ImportResult, stats: CallStats) -> None:
        result.calls, result.throttled_429, result.retries = stats.calls, stats.throttled, stats.retries
        result.finished_at = result.finished_at or utc_now()
        try:
            self.tables.table(engine.SYNC_RUNS_TABLE).upsert_entity(result.to_entity(), replace=True)
        except Exception:  # the run record must never hide the import's own outcome
            log.exception("could not write the syncruns row", extra={"run_id": result.run_id})
        summary = result.summary
        log.info(
            "import %s/%s: %s via %s read=%d written=%d unchanged=%d removed=%d calls=%d%s in %.1fs",
            result.provider_id, result.invoice_id, result.outcome, result.source or "-", result.rows_read,
            result.rows_written, result.rows_unchanged, result.rows_removed, result.calls,
            f" recon={summary.status} diff={summary.difference}" if summary else "", result.duration_s,
            extra={"provider_id": result.provider_id, "invoice_id": result.invoice_id, "run_id": result.run_id},
        )

    def _mark_invoice(self, provider_id: str, invoice_id: str, result: ImportResult, *,
                      invoice: Mapping[str, Any] | None = None) -> None:
        """Merge the outcome into the invoice row. After a success the row is refreshed from the
        invoice just read and ``import_hash`` set to its hash; otherwise ``import_hash`` is
        cleared so that the next invoices timer enqueues the invoice again."""
        table = self.tables.table(INVOICES.table)
        key = {"PartitionKey": INVOICES.partition_key(provider_id), "RowKey": escape_key(invoice_id)}
        common = {"recon_run_id": result.run_id, "recon_at": result.finished_at or utc_now(),
                  "recon_source": result.source}
        try:
            if result.outcome == OUTCOME_SUCCEEDED and result.summary is not None and invoice is not None:
                row = INVOICES.build_row(invoice, provider_id=provider_id)
                if row is None:
                    return
                row.update(key)
                row.update(common)
                row.update(result.summary.to_fields())
                row.update({"recon_error": "", "import_hash": row["content_hash"], "removed": False})
                table.upsert_entity(row, replace=False)
                return
            if table.find_entity(key["PartitionKey"], key["RowKey"]) is None:
                return  # never create a row for an invoice the stream has not seen
            status = RECON_PENDING if result.outcome == OUTCOME_UNAVAILABLE else (result.outcome if result.outcome in (
                OUTCOME_REJECTED, OUTCOME_CONSENT_REQUIRED) else RECON_FAILED)
            table.upsert_entity({**key, **common, "recon_status": status,
                                 "recon_error": (result.error or "")[:engine.MAX_ERROR_TEXT], "import_hash": ""})
        except Exception:  # noqa: BLE001 - bookkeeping must not hide the import's outcome
            log.exception("could not update invoice row %s/%s", provider_id, invoice_id)

    # -- local runs (CLI, demo, benchmarks) ----------------------------------------------------

    def sync_and_import_now(self, provider: ProviderConnection, *, workers: int = 2,
                            correlation_id: str | None = None,
                            on_fan_out: Callable[[int], None] | None = None,
                            on_imported: Callable[[ImportResult], None] | None = None) -> tuple[InvoicesOutcome, list[ImportResult]]:
        """The timer + queue flow in one process: the invoices stream, then each new or changed
        invoice imported on a small thread pool instead of the queue."""
        from concurrent.futures import ThreadPoolExecutor

        correlation_id = correlation_id or str(uuid.uuid4())
        outcome = self.sync_provider_invoices(provider, correlation_id=correlation_id, enqueue=False)
        if on_fan_out:
            on_fan_out(len(outcome.invoice_ids))
        stop = threading.Event()

        def one(invoice_id: str) -> ImportResult | None:
            if stop.is_set():
                return None
            imported = self.import_invoice(provider, invoice_id, correlation_id=correlation_id)
            if imported.outcome == OUTCOME_CONSENT_REQUIRED:
                stop.set()
            if on_imported:
                on_imported(imported)
            return imported

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pcsync-invoices") as pool:
            results = [r for r in pool.map(one, outcome.invoice_ids) if r is not None]
        return outcome, results


# --------------------------------------------------------------------------------------------
# Process-wide service and the entry points the triggers call
# --------------------------------------------------------------------------------------------

_slot: tuple[Any, Any, InvoiceService] | None = None
_slot_lock = threading.Lock()


def invoice_service_for(runtime: Any) -> InvoiceService:
    """The InvoiceService for this runtime, built on first use (on the process's SyncService)."""
    global _slot
    sync = engine.service_for(runtime)
    with _slot_lock:
        if _slot is None or _slot[0] is not runtime or _slot[1] is not sync:
            _slot = (runtime, sync, InvoiceService.for_runtime(runtime, sync=sync))
        return _slot[2]


def run_invoices_timer(runtime: Any) -> list[InvoicesOutcome]:
    return invoice_service_for(runtime).sync_all_providers()


def run_import_message(runtime: Any, body: bytes | str) -> ImportResult | None:
    """Raises :class:`InvalidMessage` for bad input; retryable failures propagate."""
    message = parse_import_message(body)
    return invoice_service_for(runtime).handle_import_message(message)


__all__ = [
    "IMPORT_INVOICE_QUEUE", "ImportMessage", "ImportPlan", "ImportResult", "InvoiceService", "InvoicesOutcome",
    "OUTCOME_REJECTED", "OUTCOME_UNAVAILABLE", "invoice_service_for", "parse_import_message", "plan_import",
    "run_import_message", "run_invoices_timer",
]
