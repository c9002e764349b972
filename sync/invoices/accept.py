"""Operator actions on an imported invoice: accept a usage mismatch, read its CSV reports.

Accepting (``POST /api/invoices/{provider}/{invoice}/accept``, ``pcsync invoices accept``)
takes an override tolerance (an amount in the provider currency or a percentage) and a
reason. It is allowed for an import in ``error`` with reason ``usage_mismatch`` whose stored
checksum figures (the counted difference overall and the worst subscription's) are within the
override; the invoice becomes ``active`` with ``accepted_at/by/reason/tolerance``, one row in
``invoiceacceptances`` logs who, when, why and the totals, and the invoices timer no longer
retries it. Accepting again with the same tolerance and reason answers the same acceptance.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

from shared.clock import to_iso, utc_now
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.logging import get_logger
from shared.provider_ids import validate_provider_id
from shared.providers import Tolerance
from shared.tables import escape_key

from ..resources import IdKind, InvalidId, checked_id
from ..streams import INVOICES
from .checksum import within
from .csvreports import REPORTS_CONTAINER, ReportKind, blob_name
from .importer import ImportReason, ImportState
from .money import to_decimal

log = get_logger(__name__)

ACCEPTANCES_TABLE = "invoiceacceptances"
MAX_REASON = 1000
_TOTALS = ("checksum_recon_total", "checksum_usage_total", "checksum_difference", "checksum_explained",
           "checksum_counted", "checksum_worst_amount", "checksum_worst_percent", "checksum_tolerance")


def _figure(row: dict[str, Any], name: str) -> Decimal:
    return to_decimal(row.get(name)) or Decimal(0)


def parse_acceptance(body: Any) -> tuple[Tolerance, str, str | None]:
    """(override tolerance, reason, acceptedBy) from a request body, or ValidationFailed."""
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "must be a JSON object with tolerance and reason"})
    problems: dict[str, str] = {}
    tolerance = None
    try:
        tolerance = Tolerance.parse(body.get("tolerance")) if body.get("tolerance") is not None else None
        if tolerance is None:
            problems["tolerance"] = "is required: an amount such as 5 or 2.50, or a percentage such as 0.5%"
    except ValueError as exc:
        problems["tolerance"] = str(exc)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems["reason"] = "is required: why the difference is accepted"
    elif len(reason) > MAX_REASON:
        problems["reason"] = f"must be at most {MAX_REASON} characters"
    who = body.get("acceptedBy")
    if who is not None and (not isinstance(who, str) or not who.strip() or len(who) > 200):
        problems["acceptedBy"] = "must be a name of at most 200 characters"
    unknown = sorted(set(body) - {"tolerance", "reason", "acceptedBy"})
    problems.update({key: "unknown field" for key in unknown})
    if problems:
        raise ValidationFailed(problems)
    return tolerance, reason.strip(), who.strip() if isinstance(who, str) else None  # type: ignore[union-attr]


class InvoiceActions:
    def __init__(self, tables: Any, blobs: Any, *, now: Callable[[], datetime] = utc_now):
        self.tables, self.blobs, self._now = tables, blobs, now

    def _row(self, provider_id: str, invoice_id: str) -> tuple[dict[str, Any], str]:
        validate_provider_id(provider_id)
        try:
            invoice = checked_id(IdKind.INVOICE, invoice_id)
        except InvalidId as exc:
            raise ValidationFailed({"invoice": str(exc)}) from None
        row = self.tables.table(INVOICES.table).find_entity(INVOICES.partition_key(provider_id), escape_key(invoice))
        if row is None or row.get("removed"):
            raise NotFound(f"invoice {invoice} of provider {provider_id} is not synced")
        return row, invoice

    def accept(self, provider_id: str, invoice_id: str, body: Any, *, who: str) -> dict[str, Any]:
        tolerance, reason, named = parse_acceptance(body)
        row, invoice = self._row(provider_id, invoice_id)
        accepted_by = named or who
        if row.get("accepted_at") and row.get("accepted_tolerance") == str(tolerance) and \
                row.get("accepted_reason") == reason:
            return _acceptance_json(provider_id, invoice, row)
        if row.get("import_state") != ImportState.ERROR.value or \
                row.get("import_reason") != ImportReason.USAGE_MISMATCH.value:
            raise Conflict(f"invoice {invoice} is {row.get('import_state') or 'not imported'}"
                           f"{' (' + row['import_reason'] + ')' if row.get('import_reason') else ''}: only an import "
                           "in error with reason usage_mismatch can be accepted")
        if not within(tolerance, counted=_figure(row, "checksum_counted"), recon=_figure(row, "checksum_recon_total"),
                      worst_amount=_figure(row, "checksum_worst_amount"),
                      worst_percent=_figure(row, "checksum_worst_percent")):
            raise Conflict(f"the override tolerance {tolerance} does not cover the difference: "
                           f"{row.get('checksum_counted')} overall, worst subscription "
                           f"{row.get('checksum_worst_amount')} ({row.get('checksum_worst_percent')}%)")
        now = to_iso(self._now())
        fields = {"accepted_at": now, "accepted_by": accepted_by, "accepted_reason": reason,
                  "accepted_tolerance": str(tolerance), "import_state": ImportState.ACTIVE.value}
        self.tables.table(ACCEPTANCES_TABLE).upsert_entity({
            "PartitionKey": escape_key(provider_id), "RowKey": escape_key(f"{invoice}|{now}"), "invoice_id": invoice,
            "import_generation": row.get("import_generation") or "", **fields,
            **{name: row.get(name) or "" for name in _TOTALS}})
        self.tables.table(INVOICES.table).upsert_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"],
                                                         **fields})
        log.warning("invoice %s/%s usage mismatch accepted by %s with tolerance %s: %s (difference %s)",
                    provider_id, invoice, accepted_by, tolerance, reason, row.get("checksum_difference"),
                    extra={"provider_id": provider_id, "invoice_id": invoice})
        return _acceptance_json(provider_id, invoice, {**row, **fields})

    def report(self, provider_id: str, invoice_id: str, kind: str) -> bytes:
        """A report's CSV bytes (NotFound until an import stored it)."""
        validate_provider_id(provider_id)
        try:
            report_kind = ReportKind(kind)
        except ValueError:
            raise ValidationFailed({"report": f"must be one of {', '.join(k.value for k in ReportKind)}"}) from None
        _, invoice = self._row(provider_id, invoice_id)
        data = self.blobs.get(REPORTS_CONTAINER, blob_name(provider_id, invoice, report_kind)) if self.blobs else None
        if data is None:
            raise NotFound(f"no {report_kind.value}.csv for invoice {invoice}: it has not been imported yet")
        return data


def _acceptance_json(provider_id: str, invoice: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"provider": provider_id, "invoice": invoice, "state": row.get("import_state"),
            "acceptedAt": row.get("accepted_at"), "acceptedBy": row.get("accepted_by"),
            "reason": row.get("accepted_reason"), "tolerance": row.get("accepted_tolerance"),
            "checksum": {"status": row.get("checksum_status"), "difference": row.get("checksum_difference"),
                         "explained": row.get("checksum_explained"), "reconTotal": row.get("checksum_recon_total"),
                         "usageTotal": row.get("checksum_usage_total")}}


__all__ = ["ACCEPTANCES_TABLE", "InvoiceActions", "parse_acceptance"]
