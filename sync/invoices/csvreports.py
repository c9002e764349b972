"""An import's reports as CSV blobs: mismatches, errors (blocking) and warnings.

Reports are written to a spooled temporary file while lines stream past (memory stays flat
when a million lines each carry a warning) and stored as one blob per report and invoice,
``<provider>/<invoice>/<kind>.csv`` in container ``invoice-reports``, replacing the previous
import's. Each report is stored even when empty (a header line), so what the API serves is
always this import's.

Reference checks against the synced store (:class:`ReferenceChecks`):

* errors (the import stays ``error``, reason ``unknown_reference``): a line whose customer or
  subscription is not in the synced tables, after one targeted re-sync of that customer;
* warnings: zero quantity, a usage line without a meter, charge dates outside the invoice's
  billing period, a line of another invoice number.
"""
from __future__ import annotations

import csv
import enum
import functools
import io
import tempfile
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from shared.clock import parse_iso
from shared.tables import escape_key

from .checksum import MismatchRow
from .lines import Line
from .money import plain

REPORTS_CONTAINER = "invoice-reports"
_SPOOL_BYTES = 1024 * 1024


class ReportKind(enum.StrEnum):
    MISMATCHES = "mismatches"
    ERRORS = "errors"
    WARNINGS = "warnings"


HEADERS = {
    ReportKind.MISMATCHES: ("subscription", "customer", "meter", "recon_total", "usage_total", "difference",
                            "cause", "unexplained"),
    ReportKind.ERRORS: ("file", "row", "customer", "subscription", "problem"),
    ReportKind.WARNINGS: ("file", "row", "customer", "subscription", "problem"),
}


def blob_name(provider_id: str, invoice_id: str, kind: ReportKind | str) -> str:
    return f"{provider_id}/{invoice_id}/{ReportKind(kind).value}.csv"


class CsvReport:
    def __init__(self, kind: ReportKind):
        self.kind = kind
        self.count = 0
        self._file = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+b")
        self._text = io.TextIOWrapper(self._file, encoding="utf-8", newline="")
        self._writer = csv.writer(self._text)
        self._writer.writerow(HEADERS[kind])

    def add(self, values: Iterable[Any]) -> None:
        self.count += 1
        self._writer.writerow(["" if v is None else v for v in values])

    def stored(self, upload: Callable[[str, Any], None], name: str) -> None:
        """Hand the report to ``upload(name, binary file)``, then drop it."""
        self._text.flush()
        self._file.seek(0)
        try:
            upload(name, self._file)
        finally:
            self._text.close()


def mismatch_report(rows: Iterable[MismatchRow]) -> CsvReport:
    report = CsvReport(ReportKind.MISMATCHES)
    for r in rows:
        report.add((r.subscription, r.customer, r.meter, plain(r.recon), plain(r.usage), plain(r.difference), r.cause,
                    plain(r.unexplained)))
    return report


@functools.lru_cache(maxsize=1024)  # an invoice's lines share a few hundred distinct dates
def _moment(text: Any) -> datetime | None:
    return parse_iso(text)


class ReferenceChecks:
    """Lines' references against the synced customers and subscriptions, and their anomalies."""

    def __init__(self, tables: Any, provider_id: str, invoice: dict[str, Any], *,
                 resync: Callable[[str], None] | None = None):
        self._tables = tables
        self._provider_id = provider_id
        self._invoice_id = str(invoice.get("id") or "")
        self._start = parse_iso(invoice.get("billingPeriodStartDate"))
        end = parse_iso(invoice.get("billingPeriodEndDate"))
        self._end = end + timedelta(days=1) if end is not None else None  # the end date is a whole day
        self._resync = resync
        self._resynced: set[str] = set()
        self._customers: set[str] | None = None
        self._subscriptions: dict[str, set[str]] = {}
        self._verdicts: dict[tuple[str | None, str | None], str | None] = {}
        self.errors = CsvReport(ReportKind.ERRORS)
        self.warnings = CsvReport(ReportKind.WARNINGS)

    def _known_customers(self) -> set[str]:
        if self._customers is None:
            rows = self._tables.table("customers").list_entities(partition_key=escape_key(self._provider_id),
                                                                 select=["RowKey", "removed"])
            self._customers = {str(r["RowKey"]).lower() for r in rows if not r.get("removed")}
        return self._customers

    def _known_subscriptions(self, customer: str, *, fresh: bool = False) -> set[str]:
        if fresh or customer not in self._subscriptions:
            rows = self._tables.table("subscriptions").list_entities(
                partition_key=escape_key(f"{self._provider_id}|{customer}"), select=["RowKey", "removed"])
            self._subscriptions[customer] = {str(r["RowKey"]).lower() for r in rows if not r.get("removed")}
        return self._subscriptions[customer]

    def _known(self, customer: str, subscription: str | None) -> bool:
        return (customer in self._known_customers() or bool(self._known_subscriptions(customer))) and (
            subscription is None or subscription in self._known_subscriptions(customer))

    def _problem(self, line: Line) -> str | None:
        customer, subscription = line.customer_id, line.subscription_id
        if not customer:
            return "the line names no customer"
        if self._known(customer, subscription):
            return None
        if self._resync is not None and customer not in self._resynced:
            self._resynced.add(customer)
            self._resync(customer)
            self._customers = None
            self._known_subscriptions(customer, fresh=True)
            if self._known(customer, subscription):
                return None
        if customer not in self._known_customers() and not self._known_subscriptions(customer):
            return "unknown customer"
        return "unknown subscription"

    def check(self, line: Line, *, usage: bool) -> None:
        customer, subscription = line.customer_id, line.subscription_id
        pair = (customer, subscription)
        if pair in self._verdicts:  # the lines of one subscription share it (a re-sync happens once)
            problem = self._verdicts[pair]
        else:
            problem = self._verdicts[pair] = self._problem(line)
        warnings = list(self._warnings(line, usage=usage))
        if problem is None and not warnings:
            return
        where = (line.source, line.entity["RowKey"], customer, subscription)
        if problem:
            self.errors.add((*where, problem))
        for warning in warnings:
            self.warnings.add((*where, warning))

    def _warnings(self, line: Line, *, usage: bool) -> Iterable[str]:
        entity = line.entity
        quantity = line.amount("billableQuantity") if usage and entity.get("billableQuantity") else line.amount("quantity")
        if quantity is not None and quantity == 0:
            yield "zero quantity"
        if usage and not entity.get("meterId"):
            yield "unknown meter"
        if self._outside(entity.get("chargeStart")) or self._outside(entity.get("chargeEnd"), end=True):
            yield "charge dates outside the billing period"
        number = entity.get("invoiceNumber")
        if number and self._invoice_id and str(number).strip().lower() != self._invoice_id.lower():
            yield f"line of another invoice ({number})"

    def _outside(self, text: Any, *, end: bool = False) -> bool:
        if not text or self._start is None or self._end is None:
            return False
        moment: datetime | None = _moment(text)
        if moment is None:
            return False
        if end:
            return moment > self._end or moment < self._start
        return moment < self._start - timedelta(days=1) or moment >= self._end


__all__ = ["CsvReport", "HEADERS", "REPORTS_CONTAINER", "ReferenceChecks", "ReportKind", "blob_name",
           "mismatch_report"]
