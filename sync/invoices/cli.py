"""`pcsync import-invoice` and `pcsync sync --stream invoices`: the invoice import run here, in
place of the import-invoice queue."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..cli import EXIT_CONSENT_REQUIRED, KeepGoingSyncService, report
from ..runs import RunOutcome
from .model import IMPORT_STREAM, ImportResult, SourceChoice
from .service import InvoiceService

# import-invoice exit codes beyond 0 (succeeded) and 1 (failed)
EXIT_CODES = {RunOutcome.CONSENT_REQUIRED: EXIT_CONSENT_REQUIRED, RunOutcome.INVOICE_NOT_FOUND: 2,
              RunOutcome.UNAVAILABLE: 4, RunOutcome.SUCCEEDED: 0}


def register(subparsers: Any) -> None:
    imp = subparsers.add_parser("import-invoice", help="import one invoice's line items and reconcile them now")
    imp.add_argument("--provider", required=True, help="provider id")
    imp.add_argument("--invoice", required=True, help="invoice id, e.g. G000024130 or D02005YFHI")
    imp.add_argument("--source", choices=[c.value for c in SourceChoice], default=SourceChoice.AUTO.value,
                     help="line-item API: auto (legacy and pre-2024 periods v1, new commerce Graph v2), or force one")
    imp.set_defaults(handler=import_invoice_command)


def sync_invoices(console: Any, services: Any, provider_id: str, *, workers: int) -> int:
    """Invoices, then every new or changed invoice imported here (in place of the queue)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    provider = services.providers.get_provider(provider_id)
    invoices = KeepGoingInvoiceService(KeepGoingSyncService.over(services))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"invoices of {provider.id}", total=None)
        outcome, imports = invoices.sync_and_import_now(
            provider, workers=workers,
            on_fan_out=lambda n: progress.update(task, description=f"importing invoices of {provider.id}", total=n,
                                                 completed=0),
            on_imported=lambda r: progress.advance(task),
        )
    code = report(console, [*outcome.runs, *imports])
    for result in imports:
        recon = result.summary
        console.print(f"{result.invoice_id}: {result.outcome} via {result.source_text or '-'}"
                      + (f", {recon.line_count} lines, {recon.status} (difference {recon.difference})" if recon else ""))
    return code


class KeepGoingInvoiceService(InvoiceService):
    """Imports as the command line runs them: an import that raises (recorded in ``syncruns`` by
    the service, then re-raised for the queue runtime) becomes a failed result, so the other
    invoices are still imported and the summary lists it."""

    def import_invoice(self, provider: Any, invoice_id: str, **options: Any) -> ImportResult:
        try:
            return super().import_invoice(provider, invoice_id, **options)
        except Exception as exc:  # noqa: BLE001 - recorded by the service; reported in the summary
            result = ImportResult(provider.id, IMPORT_STREAM, None, options.get("correlation_id") or "",
                                  invoice_id=invoice_id)
            result.crashed(exc)
            return result


def import_invoice_command(args: argparse.Namespace, services: Any) -> int:
    provider = services.providers.get_provider(args.provider)
    result = services.invoices.import_invoice(provider, args.invoice, source=SourceChoice(args.source))
    print(json.dumps(result.to_json(), indent=2, default=str))
    return EXIT_CODES.get(RunOutcome(result.outcome), 1)
