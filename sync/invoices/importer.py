"""One invoice import, from its line sources to its state: lines and usage rows written under a
new generation, the usage checksum, the reference checks and the CSV reports.

The import's state (column ``import_state`` of the invoice row, :class:`ImportState`):

* ``populating`` while rows are written (readers keep to ``import_generation``, the last
  complete import, see :mod:`sync.invoices.store`);
* ``active``: imported and checked;
* ``error`` with ``import_reason`` (:class:`ImportReason`) and ``import_message``:
  ``usage_mismatch`` (the checksum is beyond the tolerance), ``unknown_reference`` (a line's
  customer or subscription is unknown: errors CSV), ``usage_pending`` (the usage file is not
  there yet: the export answered 5000 or had no rows while the invoice has Azure lines).
  The daily invoices timer imports an ``error`` invoice again, unless an operator accepted it.

Usage: new commerce invoices read the Graph billed daily-rated usage export; legacy (D)
invoices with Azure charges read the v1 ``azure`` usage line items (``billingPeriodStart``/
``End`` from the provider's Billing Start Date). Legacy usage lines carry quantities only, so a
legacy invoice's checksum compares quantities priced at the billing line's rate
(:mod:`sync.invoices.legacy_checksum`); one with Office lines only has none (``not_applicable``).
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from shared.graph_billing_errors import ExportFailed
from shared.logging import get_logger
from shared.providers import ProviderConnection
from shared.paging import PagingStyle

from ..streams import INVOICES, Stream
from .checksum import ChecksumResult, ChecksumStatus, UsageChecksum
from .csvreports import REPORTS_CONTAINER, ReferenceChecks, blob_name, mismatch_report
from .legacy_checksum import LegacyUsageChecksum
from .lines import RECON_COLUMNS, USAGE_COLUMNS, Line, build_row, recon_total
from .pricing import Pricing, assign_billing_period
from .reconciliation import LINE_ITEMS_TABLE, V1_AZURE, V2_RECON, LineTally
from .store import PartitionedWriter, invoice_rows, sweep

log = get_logger(__name__)

USAGE_TABLE = "invoiceusage"
V2_USAGE = Stream(name="usage", table=USAGE_TABLE, path=None, paging=PagingStyle.NONE, parent=INVOICES.name,
                  columns=())  # Graph billed daily-rated usage export
V1_AZURE_USAGE = Stream(name="azureusage", table=USAGE_TABLE, path="/invoices/{parent_id}/lineitems",
                        paging=PagingStyle.OFFSET,
                        params={"provider": "azure", "invoicelineitemtype": "usagelineitems"},
                        parent=INVOICES.name, page_size=2000, columns=(), exact_numbers=True)


class ImportState(enum.StrEnum):
    POPULATING = "populating"
    ACTIVE = "active"
    ERROR = "error"
    PENDING = "pending"  # no reconciliation data yet (5000)


class ImportReason(enum.StrEnum):
    USAGE_MISMATCH = "usage_mismatch"
    UNKNOWN_REFERENCE = "unknown_reference"
    USAGE_PENDING = "usage_pending"
    FAILED = "failed"


Sources = Iterable[tuple[Stream, Iterator[Mapping[str, Any]]]]


@dataclass
class ImportFigures:
    """What one import found (merged into the invoice row and the run's JSON)."""

    generation: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: ImportState = ImportState.POPULATING
    reason: ImportReason | None = None
    message: str = ""
    usage_count: int = 0
    usage_source: str = ""
    errors: int = 0
    warnings: int = 0
    swept: int = 0
    checksum: ChecksumResult | None = None
    unit_costs: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # subscription -> (customer, cost, ccy)

    def to_fields(self) -> dict[str, Any]:
        fields = {"import_state": self.state.value, "import_reason": self.reason.value if self.reason else "",
                  "import_message": self.message[:1024], "import_usage_lines": self.usage_count,
                  "import_usage_source": self.usage_source, "import_errors": self.errors,
                  "import_warnings": self.warnings}
        if self.checksum is not None:
            fields.update(self.checksum.to_fields())
        return fields

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason.value if self.reason else None,
                "message": self.message or None, "usageLines": self.usage_count, "errors": self.errors,
                "warnings": self.warnings, "checksum": self.checksum.to_json() if self.checksum else None}


class InvoiceImport:
    """Writes one invoice's rows and checks them; ``figures`` says what happened."""

    def __init__(self, *, tables: Any, blobs: Any, provider: ProviderConnection, invoice: Mapping[str, Any],
                 resync: Callable[[str], None] | None = None, workers: int = 4, legacy: bool = False,
                 on_rejected: Callable[[dict[str, Any], str], None] | None = None):
        self.tables, self.blobs, self.provider, self.invoice = tables, blobs, provider, invoice
        self.invoice_id = str(invoice.get("id") or "")
        self.figures = ImportFigures()
        self.tally = LineTally()
        self.legacy = legacy  # a legacy (D) invoice: v1 usage, billing periods from the start day
        self.checksum = LegacyUsageChecksum() if legacy else UsageChecksum()
        self.refs = ReferenceChecks(tables, provider.id, dict(invoice), resync=resync)
        self.pricing = Pricing(provider.azure_specialization, provider.azure_specializations)
        self.workers = workers
        self.on_rejected = on_rejected
        self.rows_read = 0
        self._writers: list[PartitionedWriter] = []

    def _writer(self, table_name: str) -> PartitionedWriter:
        writer = PartitionedWriter(self.tables.table(table_name), workers=self.workers, on_rejected=self.on_rejected)
        self._writers.append(writer)
        return writer

    def write_lines(self, sources: Sources) -> None:
        """Queue the lines' rows; their last batches are still being stored while the usage file
        is read (:meth:`close_writers` waits for them)."""
        writer = self._writer(LINE_ITEMS_TABLE)
        for source, items in sources:
            for index, item in enumerate(items):
                line = self._line(item, RECON_COLUMNS, source, index)
                self.tally.add(source, recon_total(line))
                self.checksum.add_recon(line)
                self.refs.check(line, usage=False)
                self._note_unit_cost(line)
                writer.add(line.entity)
        writer.flush_open()

    def write_usage(self, source: Stream, items: Iterator[Mapping[str, Any]]) -> None:
        writer = self._writer(USAGE_TABLE)
        self.figures.usage_source = source.name
        for index, item in enumerate(items):
            line = self._line(item, USAGE_COLUMNS, source, index)
            self.figures.usage_count += 1
            if self.legacy:
                assign_billing_period(line.entity, self.provider.billing_start_day)
            self.checksum.add_usage(line)
            self.pricing.apply(line)
            self.refs.check(line, usage=True)
            writer.add(line.entity)
        writer.flush_open()

    def close_writers(self, *, quietly: bool = False) -> int:
        """Wait for every queued batch; returns the rows stored. The first failure is raised
        (``quietly``: not, when another error is already on its way out)."""
        written, failure = 0, None
        writers, self._writers = self._writers, []
        for writer in writers:
            try:
                written += writer.close()
            except Exception as exc:  # noqa: BLE001 - the first is raised once every writer is closed
                failure = failure or exc
        if failure is not None and not quietly:
            raise failure
        return written

    def _line(self, item: Mapping[str, Any], columns: Any, source: Stream, index: int) -> Line:
        self.rows_read += 1
        return build_row(item, columns, provider_id=self.provider.id, invoice_id=self.invoice_id, source=source.name,
                         index=index, generation=self.figures.generation)

    def _note_unit_cost(self, line: Line) -> None:
        """The newest effective unit price per subscription (cost management from the invoice),
        skipping addQuantity and customer-credit lines: they do not show the full cost."""
        charge = (line.entity.get("chargeType") or "").replace("_", "").replace(" ", "")
        price, subscription = line.entity.get("effectiveUnitPrice"), line.subscription_id
        if not price or not subscription or charge in ("addquantity", "customercredit") or \
                line.entity.get("creditReasonCode") or "credit" in charge:
            return
        currency = line.entity.get("pricingCurrency") or line.entity.get("currency") or ""
        self.figures.unit_costs[subscription] = (line.customer_id or "", price, currency)

    def has_stored_rows(self) -> bool:
        """Whether any row of this invoice is stored (an earlier import's, a crashed one's, the
        layout before per-generation partitions): a first import has nothing to sweep, and skips
        reading back every row it wrote. (Two imports of one invoice at once may leave the
        other's rows behind; the next import's sweep removes them.)"""
        legacy = V2_RECON.partition_key(self.provider.id, self.invoice_id)
        for name in (LINE_ITEMS_TABLE, USAGE_TABLE):
            table = self.tables.table(name)
            for rows in (invoice_rows(table, self.provider.id, self.invoice_id, select=["PartitionKey"]),
                         table.list_entities(partition_key=legacy, select=["PartitionKey"])):
                if next(iter(rows), None) is not None:
                    return True
        return False

    def sweep(self) -> None:
        legacy = V2_RECON.partition_key(self.provider.id, self.invoice_id)  # the layout before per-customer rows
        for name in (LINE_ITEMS_TABLE, USAGE_TABLE):
            self.figures.swept += sweep(self.tables.table(name), self.provider.id, self.invoice_id,
                                        self.figures.generation, legacy_partition=legacy)

    def finish(self, *, usage_pending: str | None, checked: bool) -> ImportFigures:
        """The checksum (``checked=False``: no usage file with amounts for this invoice), the
        reports as blobs, and the state they lead to."""
        figures = self.figures
        result = self.checksum.result(self.provider.tolerance)
        azure = any(True for _ in self.checksum.compared())
        if not checked:
            result.status, result.rows = ChecksumStatus.NOT_APPLICABLE, []
        figures.checksum = result
        figures.errors, figures.warnings = self.refs.errors.count, self.refs.warnings.count
        self._store_reports(result)
        if figures.errors:
            self._fail(ImportReason.UNKNOWN_REFERENCE, f"{figures.errors} line(s) name an unknown customer or "
                                                       "subscription (errors.csv)")
        elif usage_pending is not None and azure:
            self._fail(ImportReason.USAGE_PENDING, f"the usage file is not there yet: {usage_pending}")
        elif result.status is ChecksumStatus.MISMATCH:
            self._fail(ImportReason.USAGE_MISMATCH,
                       f"usage checksum: difference {result.to_json()['difference']} (explained "
                       f"{result.to_json()['explained']}), {result.subscriptions_over} subscription(s) beyond "
                       f"the tolerance {result.tolerance} (mismatches.csv)")
        else:
            figures.state = ImportState.ACTIVE
        return figures

    def _fail(self, reason: ImportReason, message: str) -> None:
        self.figures.state, self.figures.reason, self.figures.message = ImportState.ERROR, reason, message

    def _store_reports(self, result: ChecksumResult) -> None:
        if self.blobs is None:
            return
        for report in (mismatch_report(result.rows), self.refs.errors, self.refs.warnings):
            name = blob_name(self.provider.id, self.invoice_id, report.kind)
            report.stored(lambda n, data: self.blobs.put(REPORTS_CONTAINER, n, data), name)


def usage_source_for(invoice: Mapping[str, Any], *, legacy: bool, v1_sources: tuple[Stream, ...]) -> Stream | None:
    """Where an invoice's usage comes from: the Graph export (new commerce), v1 Azure usage
    (legacy invoices with Azure charges), or nowhere (legacy Office only)."""
    if not legacy:
        return V2_USAGE
    return V1_AZURE_USAGE if V1_AZURE in v1_sources else None


def unless_no_data(start: Callable[[], Any]) -> tuple[Any, ExportFailed | None]:
    """``(manifest, None)``, or ``(None, failure)`` when the export answered 5000 (no data yet);
    any other failure raises."""
    try:
        return start(), None
    except ExportFailed as exc:
        if not exc.no_data:
            raise
        return None, exc


__all__ = ["ImportFigures", "ImportReason", "ImportState", "InvoiceImport", "USAGE_TABLE", "V1_AZURE_USAGE",
           "V2_USAGE", "unless_no_data", "usage_source_for"]
