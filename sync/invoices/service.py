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

* ``GET /v1/invoices/{id}``: the current total, type and billing period (404 -> the outcome
  ``RunOutcome.INVOICE_NOT_FOUND``, stored as ``rejected``);
* where the lines come from: :func:`~sync.invoices.model.plan_import`. When the v2 export has
  no data and no v1 fallback applies, the import ends ``unavailable``: the invoice row gets
  ``recon_status=pending`` and its ``import_hash`` is cleared, so the next invoices timer
  enqueues it again (the data usually appears within a day). The queue does not retry it:
  redelivery 30 seconds later would not find data either.
* lines -> ``invoicelineitems`` through :class:`sync.rows.RowWriter` (streamed, merge-joined
  with the stored partition, only changes written);
* the reconciliation summary is merged into the invoice row; a ``syncruns`` row records the run.

Errors: transient Partner Center / Graph failures raise (the queue redelivers, then poisons);
``ConsentRequired`` or a refused App+User token (MFA, Conditional Access) ends the import
``degraded`` (the invoice by id is App+User only; the next invoices timer enqueues it again);
a permission or format problem is recorded as ``failed`` on the run and the invoice row (and retried by the next timer run).
"""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Mapping

from shared import telemetry
from shared.clock import utc_now
from shared.errors import ConsentRequired, TokenRefused
from shared.graph_billing_errors import GraphBillingError
from shared.jsonutil import get_path
from shared.logging import get_logger
from shared.partner_center import PartnerCenterClient, resource_problem
from shared.partner_center_errors import NotFoundError, PartnerCenterError
from shared.providers import ProviderConnection
from shared.tables import escape_key
from shared.transport import CallStats

from ..engine import SyncService, fan_out, for_each_active_provider, run_telemetry
from ..resources import IdKind, InvalidId, checked_id
from ..runs import MAX_ERROR_TEXT, RunOutcome, record_run
from ..streams import INVOICES, SUBSCRIPTIONS, Stream
from .importer import V1_AZURE_USAGE, ImportState, InvoiceImport, unless_no_data, usage_source_for
# the message names are re-exported: the blueprint and webhooks import them from here
from .model import (
    IMPORT_INVOICE_QUEUE,
    IMPORT_STREAM,
    ImportMessage,
    ImportPlan,
    ImportResult,
    InvoicesOutcome,
    LineApi,
    SourceChoice,
    parse_import_message,
    plan_import,
)
from .reconciliation import V1_PAGE_SIZE, V2_RECON, ReconciliationStatus, escape_path, reconcile, to_decimal
from .unitcost import update_unit_costs

log = get_logger(__name__)

# The invoice row's recon_status after an import that did not reconcile
_STATUS_AFTER = {
    RunOutcome.UNAVAILABLE: ReconciliationStatus.PENDING,
    RunOutcome.INVOICE_NOT_FOUND: ReconciliationStatus.INVOICE_NOT_FOUND,
    RunOutcome.CONSENT_REQUIRED: ReconciliationStatus.CONSENT_REQUIRED,
    RunOutcome.DEGRADED: ReconciliationStatus.DEGRADED,
}

LineItems = Iterable[tuple[Stream, Iterator[Mapping[str, Any]]]]


def needs_retry(row: Mapping[str, Any]) -> bool:
    """An import in ``error`` is tried again by the invoices timer (usage files arrive days
    after the invoice), unless an operator accepted it."""
    return row.get("import_state") == ImportState.ERROR.value and not row.get("accepted_at")


class InvoiceService:
    """Invoices timer and import. Built on the process's :class:`SyncService` (its Partner
    Center clients, call budgets and run records); adds one Graph billing client per provider."""

    def __init__(self, sync: SyncService, *, blobs: Any = None, v1_page_size: int = V1_PAGE_SIZE,
                 write_workers: int = 4, now: Callable[[], datetime] = utc_now):
        self.sync = sync
        self.blobs = blobs  # the CSV reports' store (shared.blobs.BlobStore); None: not stored
        self.v1_page_size = v1_page_size
        self.write_workers = write_workers
        self._now = now

    @property
    def tables(self) -> Any:
        return self.sync.tables

    # -- timer ---------------------------------------------------------------------------------

    def sync_provider_invoices(self, provider: ProviderConnection, *, correlation_id: str | None = None,
                               enqueue: bool = True) -> InvoicesOutcome:
        """The invoices stream, then one ``import-invoice`` message per new or changed invoice
        (``enqueue=False``: mark nothing, just return their ids for the caller to import)."""
        correlation_id = correlation_id or str(uuid.uuid4())
        result = self.sync.run_stream(INVOICES, provider, correlation_id=correlation_id)
        outcome = InvoicesOutcome(provider.id, result.outcome, runs=[result], error=result.error)
        if result.outcome != RunOutcome.SUCCEEDED:
            return outcome
        table = self.tables.table(INVOICES.table)
        rows = list(table.list_entities(partition_key=INVOICES.partition_key(provider.id),
                                        select=["PartitionKey", "RowKey", "id", "content_hash", "import_hash", "removed",
                                                "import_state", "accepted_at"]))
        for row in rows:
            if row.get("removed") or not row.get("id") or not row.get("content_hash"):
                continue
            if row.get("import_hash") == row["content_hash"] and not needs_retry(row):
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
        return for_each_active_provider(
            self.sync.providers, lambda p: self.sync_provider_invoices(p, correlation_id=correlation_id),
            InvoicesOutcome, "invoices sync",
        )

    # -- import --------------------------------------------------------------------------------

    def handle_import_message(self, message: ImportMessage) -> ImportResult | None:
        """Queue work: None when the provider cannot be worked on; raises when a redelivery may help."""
        what = f"import-invoice for {message.provider_id}/{message.invoice_id}"
        provider = self.sync.workable_provider(message.provider_id, what)
        if provider is None:
            return None
        result = self.import_invoice(provider, message.invoice_id, correlation_id=message.correlation_id)
        if result.retryable:
            raise result.exception  # type: ignore[misc]
        return result

    def import_invoice(self, provider: ProviderConnection, invoice_id: str, *, correlation_id: str | None = None,
                       source: SourceChoice | str = SourceChoice.AUTO,
                       client: PartnerCenterClient | None = None) -> ImportResult:
        """Import one invoice's line items and reconcile them. Never raises for Partner Center,
        Graph or consent failures: they become the run's outcome (``result.exception`` keeps the
        error so that the queue handler can decide on redelivery)."""
        correlation_id = correlation_id or str(uuid.uuid4())
        result = ImportResult(provider.id, IMPORT_STREAM, None, correlation_id, invoice_id=invoice_id)
        with telemetry.span("pcsync.invoice.import", provider=provider.id, stream=IMPORT_STREAM, invoice_id=invoice_id,
                            run_id=result.run_id, correlation_id=correlation_id):
            stats = CallStats()
            invoice: dict[str, Any] | None = None
            where = {"provider_id": provider.id, "invoice_id": invoice_id}
            record_run(self.tables, result)  # "running": an import killed mid-way still leaves its row
            try:
                checked = checked_id(IdKind.INVOICE, invoice_id)  # before it goes into a path
                bound = (client or self.sync.clients.partner_center(provider)).bind(correlation_id=correlation_id, stats=stats)
                # an answer that is not this invoice (an error envelope, another resource) fails the import
                invoice = bound.get_json(f"/invoices/{escape_path(checked)}", expect=resource_problem("Invoice", checked),
                                         exact_numbers=INVOICES.exact_numbers)
                self._import(provider, invoice, bound, stats, result, plan=plan_import(invoice, source=source))
            except (ConsentRequired, TokenRefused) as exc:
                # the invoice by id is App+User only: this import degrades, the app-only work goes on
                # (import_hash is cleared, so the invoices timer enqueues it again)
                result.degrade(exc)
                log.warning("import of invoice %s for %s degraded: App+User token unavailable (%s)", invoice_id,
                            provider.id, result.cause, extra=where)
            except NotFoundError as exc:
                result.end(RunOutcome.INVOICE_NOT_FOUND, exc)
                log.warning("invoice %s of provider %s does not exist; import rejected", invoice_id, provider.id,
                            extra=where)
            except (PartnerCenterError, GraphBillingError, InvalidId) as exc:
                result.end(RunOutcome.FAILED, exc)
                log.warning("import of invoice %s for %s failed: %s", invoice_id, provider.id, exc, extra=where)
            except Exception as exc:  # record, then let the runtime see it
                result.crashed(exc)
                self._finish(result, stats)
                self._mark_invoice(provider.id, invoice_id, result)
                raise
            self._finish(result, stats)
            self._mark_invoice(provider.id, invoice_id, result, invoice=invoice)
            if result.figures is not None and result.figures.state is ImportState.ACTIVE and invoice is not None:
                update_unit_costs(self.tables, provider, invoice, result.figures.unit_costs)
            return result

    def _import(self, provider: ProviderConnection, invoice: Mapping[str, Any], client: PartnerCenterClient,
                stats: CallStats, result: ImportResult, *, plan: ImportPlan) -> None:
        invoice_id = result.invoice_id
        run = InvoiceImport(tables=self.tables, blobs=self.blobs, provider=provider, invoice=invoice,
                            resync=lambda customer: self._resync_customer(provider, customer, client, result),
                            workers=self.write_workers, legacy=plan.legacy,
                            on_rejected=lambda row, reason: result.skip(row["RowKey"], reason))
        result.figures = run.figures
        sources = self._line_items(plan, provider, invoice_id, client, stats, result)
        if sources is None:
            run.figures.state = ImportState.PENDING
            return
        earlier_rows = run.has_stored_rows()  # before this import writes any
        self._mark_populating(provider.id, invoice_id, run.figures.generation)
        try:
            run.write_lines(sources)  # stored on the writers' threads while the usage file is read
            usage_pending, checked = self._usage(run, plan, provider, invoice, client, stats, result)
            result.rows_written += run.close_writers()
            if earlier_rows:
                run.sweep()  # only after every source was read and stored completely
        finally:
            run.close_writers(quietly=True)  # after a failure: stop the writers (no-op otherwise)
            result.rows_read = run.rows_read
        result.rows_removed = run.figures.swept
        result.line_count = run.tally.count
        invoice_total = to_decimal(get_path(invoice, "totalCharges")) or Decimal(0)
        result.summary = reconcile(invoice_total=invoice_total, lines_total=run.tally.total,
                                   line_count=run.tally.count, tolerance=provider.tolerance)
        run.finish(usage_pending=usage_pending, checked=checked)
        result.end(RunOutcome.SUCCEEDED)

    def _usage(self, run: InvoiceImport, plan: ImportPlan, provider: ProviderConnection, invoice: Mapping[str, Any],
               client: PartnerCenterClient, stats: CallStats, result: ImportResult) -> tuple[str | None, bool]:
        """Import the invoice's usage; (why the usage file is not there yet or None, whether the
        usage carries amounts to check the reconciliation lines against)."""
        invoice_id = result.invoice_id
        source = usage_source_for(invoice, legacy=plan.legacy, v1_sources=plan.sources)
        if source is None or (plan.api is LineApi.V1 and not plan.legacy):
            return None, False  # pre-2024 new commerce: no Graph usage export for them
        if source is V1_AZURE_USAGE:
            items = client.iter_items(source.paginator(parent_id=invoice_id, page_size=self.v1_page_size),
                                      exact_numbers=source.exact_numbers)
            run.write_usage(source, items)
            return None, True  # quantities, priced at the billing lines' rates
        graph = self.sync.clients.graph(provider).bind(stats=stats)
        manifest, no_data = unless_no_data(lambda: graph.export_billed_usage(invoice_id))
        if no_data is not None:
            return str(no_data), True
        run.write_usage(source, graph.iter_rows(manifest))
        return (None if run.figures.usage_count else "the usage export has no rows yet"), True

    def _resync_customer(self, provider: ProviderConnection, customer_id: str, client: PartnerCenterClient,
                         result: ImportResult) -> None:
        """One targeted re-sync of a customer a line names and the store does not know."""
        try:
            checked = checked_id(IdKind.CUSTOMER, customer_id)
        except InvalidId:
            return
        log.info("invoice %s names customer %s, unknown here: re-syncing it once", result.invoice_id, checked,
                 extra={"provider_id": provider.id, "invoice_id": result.invoice_id})
        self.sync.sync_customer(provider, checked, correlation_id=result.correlation_id, streams=(SUBSCRIPTIONS,))

    def _line_items(self, plan: ImportPlan, provider: ProviderConnection, invoice_id: str,
                    client: PartnerCenterClient, stats: CallStats, result: ImportResult) -> LineItems | None:
        """Each source's line items, in source-name order; None when there are none to read yet."""
        if plan.api is LineApi.V1:
            result.source = LineApi.V1
            return self._v1_items(plan.sources, invoice_id, client)
        where = {"provider_id": provider.id, "invoice_id": invoice_id}
        graph = self.sync.clients.graph(provider).bind(stats=stats)
        manifest, exc = unless_no_data(lambda: graph.export_billed_reconciliation(invoice_id))
        if exc is not None:
            if not plan.fallback:
                result.source = LineApi.V2
                result.end(RunOutcome.UNAVAILABLE, error=str(exc))  # no exception: nothing to redeliver
                log.info("no v2 reconciliation data for invoice %s yet (%s); the next invoices run retries",
                         invoice_id, exc, extra=where)
                return None
            log.info("no v2 data for invoice %s; reading v1 onetime line items", invoice_id, extra=where)
            result.source = LineApi.V1_FALLBACK
            return self._v1_items(plan.fallback, invoice_id, client)
        result.source = LineApi.V2
        return [(V2_RECON, graph.iter_rows(manifest))]

    def _v1_items(self, sources: Iterable[Stream], invoice_id: str, client: PartnerCenterClient) -> LineItems:
        return ((source, client.iter_items(source.paginator(parent_id=invoice_id, page_size=self.v1_page_size),
                                           exact_numbers=source.exact_numbers))
                for source in sorted(sources, key=lambda s: s.name))

    # -- records -------------------------------------------------------------------------------

    def _finish(self, result: ImportResult, stats: CallStats) -> None:
        result.take_stats(stats)
        record_run(self.tables, result)
        summary = result.summary
        run_telemetry(result)
        if summary is not None:
            telemetry.annotate(source=result.source_text, reconciliation=summary.status)
            telemetry.record_reconciliation(result.provider_id, summary.status)
        log.info(
            "import %s/%s: %s via %s read=%d written=%d unchanged=%d removed=%d calls=%d%s in %.1fs",
            result.provider_id, result.invoice_id, result.outcome, result.source_text or "-", result.rows_read,
            result.rows_written, result.rows_unchanged, result.rows_removed, result.calls,
            f" recon={summary.status} diff={summary.difference}" if summary else "", result.duration_s,
            extra={"provider_id": result.provider_id, "invoice_id": result.invoice_id, "run_id": result.run_id},
        )

    def _mark_populating(self, provider_id: str, invoice_id: str, generation: str) -> None:
        table = self.tables.table(INVOICES.table)
        key = {"PartitionKey": INVOICES.partition_key(provider_id), "RowKey": escape_key(invoice_id)}
        if table.find_entity(key["PartitionKey"], key["RowKey"]) is not None:
            table.upsert_entity({**key, "import_state": ImportState.POPULATING.value,
                                 "import_populating_generation": generation})

    def _mark_invoice(self, provider_id: str, invoice_id: str, result: ImportResult, *,
                      invoice: Mapping[str, Any] | None = None) -> None:
        """Merge the outcome into the invoice row. After a success the row is refreshed from the
        invoice just read, the import's state and checksum merged and ``import_generation`` names
        the rows now live; otherwise ``import_hash`` is cleared so that the next invoices timer
        enqueues the invoice again."""
        table = self.tables.table(INVOICES.table)
        key = {"PartitionKey": INVOICES.partition_key(provider_id), "RowKey": escape_key(invoice_id)}
        common = {"recon_run_id": result.run_id, "recon_at": result.finished_at or utc_now(),
                  "recon_source": result.source_text}
        figures = result.figures
        try:
            if result.outcome == RunOutcome.SUCCEEDED and result.summary is not None and invoice is not None:
                row = INVOICES.build_row(invoice, provider_id=provider_id)
                if row is None:
                    return
                row.update({**key, **common, **result.summary.to_fields()})
                row.update({"recon_error": "", "import_hash": row["content_hash"], "removed": False})
                if figures is not None:
                    row.update({**figures.to_fields(), "import_generation": figures.generation})
                table.upsert_entity(row, replace=False)
                return
            if table.find_entity(key["PartitionKey"], key["RowKey"]) is None:
                return  # never create a row for an invoice the stream has not seen
            status = _STATUS_AFTER.get(RunOutcome(result.outcome), ReconciliationStatus.FAILED)
            state = ImportState.PENDING if status is ReconciliationStatus.PENDING else ImportState.ERROR
            table.upsert_entity({**key, **common, "recon_status": status.value, "import_state": state.value,
                                 "import_reason": "" if state is ImportState.PENDING else "failed",
                                 "import_message": (result.error or "")[:MAX_ERROR_TEXT],
                                 "recon_error": (result.error or "")[:MAX_ERROR_TEXT], "import_hash": ""})
        except Exception:  # noqa: BLE001 - bookkeeping must not hide the import's outcome
            log.exception("could not update invoice row %s/%s", provider_id, invoice_id)

    # -- local runs (CLI, demo, benchmarks) ----------------------------------------------------

    def sync_and_import_now(self, provider: ProviderConnection, *, workers: int = 2,
                            correlation_id: str | None = None,
                            on_fan_out: Callable[[int], None] | None = None,
                            on_imported: Callable[[ImportResult], None] | None = None,
                            ) -> tuple[InvoicesOutcome, list[ImportResult]]:
        """The timer + queue flow in one process: the invoices stream, then each new or changed
        invoice imported on a small thread pool instead of the queue."""
        correlation_id = correlation_id or str(uuid.uuid4())
        outcome = self.sync_provider_invoices(provider, correlation_id=correlation_id, enqueue=False)
        if on_fan_out:
            on_fan_out(len(outcome.invoice_ids))

        def one(invoice_id: str) -> ImportResult:
            imported = self.import_invoice(provider, invoice_id, correlation_id=correlation_id)
            if on_imported:
                on_imported(imported)
            return imported

        results = fan_out(outcome.invoice_ids, one, workers=workers, thread_name="pcsync-invoices",
                          stops=lambda r: r.outcome == RunOutcome.CONSENT_REQUIRED)
        return outcome, results


__all__ = [
    "IMPORT_INVOICE_QUEUE", "ImportMessage", "ImportPlan", "ImportResult", "InvoiceService", "InvoicesOutcome",
    "LineApi", "SourceChoice", "parse_import_message", "plan_import",
]
