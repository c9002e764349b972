"""`pcsync import-invoice`, `pcsync sync --stream invoices|unbilled`, `pcsync invoices accept|csv`
and `pcsync budgets list|set|delete`: the invoice side run here, in place of the queue and timers.

An import whose export has no data yet (5000) leaves the invoice ``pending``: `sync --stream
invoices` reports it and still exits 0 (the next run asks again)."""
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
EXIT_IMPORT_ERROR = 5  # imported, but the import is in state error (mismatch, unknown reference, usage pending)
UNBILLED_STREAM = "unbilled"


def register(subparsers: Any) -> None:
    imp = subparsers.add_parser("import-invoice", help="import one invoice's line items and reconcile them now")
    imp.add_argument("--provider", required=True, help="provider id")
    imp.add_argument("--invoice", required=True, help="invoice id, e.g. G000024130 or D02005YFHI")
    imp.add_argument("--source", choices=[c.value for c in SourceChoice], default=SourceChoice.AUTO.value,
                     help="line-item API: auto (legacy and pre-2024 periods v1, new commerce Graph v2), or force one")
    imp.set_defaults(handler=import_invoice_command)
    register_budgets(subparsers)


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
    return report_imports(console, outcome.runs, imports)


def report_imports(console: Any, runs: list[Any], imports: list[ImportResult]) -> int:
    """The run table, one line per import, and the exit code: "no data yet" (5000) is not a
    failure, the invoice stays pending and the next run asks again."""
    code = report(console, [*runs, *(r for r in imports if r.outcome != RunOutcome.UNAVAILABLE)])
    for result in imports:
        console.print(_import_line(result))
    return code


def _import_line(result: ImportResult) -> str:
    if result.outcome == RunOutcome.UNAVAILABLE:
        return f"{result.invoice_id}: pending (no reconciliation data yet; the next run asks again)"
    recon, figures = result.summary, result.figures
    text = f"{result.invoice_id}: {result.outcome} via {result.source_text or '-'}"
    if recon:
        text += f", {recon.line_count} lines, {recon.status} (difference {recon.difference})"
    if figures is not None and figures.checksum is not None:
        checksum = figures.checksum.to_json()
        text += (f"; {figures.state}{' ' + figures.reason if figures.reason else ''}, usage checksum "
                 f"{checksum['status']} (difference {checksum['difference']}, explained {checksum['explained']})")
    return text


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
    if result.outcome == RunOutcome.SUCCEEDED and result.state == "error":
        return EXIT_IMPORT_ERROR
    return EXIT_CODES.get(RunOutcome(result.outcome), 1)


def sync_unbilled(console: Any, services: Any, provider_id: str) -> int:
    """`pcsync sync --stream unbilled`: both periods' unbilled snapshots, then the budgets."""
    provider = services.providers.get_provider(provider_id)
    outcome = services.unbilled.sync_provider(provider)
    console.print(f"unbilled {provider.id} ({provider.currency_code}): reconciliation lines {outcome.lines}, "
                  f"usage lines {outcome.usage}, {outcome.alerts} new budget alert(s)")
    print(json.dumps(outcome.to_json()))
    return 0


# -- pcsync invoices accept|csv, pcsync budgets ---------------------------------------------------


def register_invoice_actions(actions: Any) -> None:
    """``accept`` and ``csv`` under the ``invoices`` command group (sync/inspect_cli.py)."""
    accept = actions.add_parser("accept", help="accept a usage-mismatched import with an override tolerance")
    accept.add_argument("id", help="invoice id")
    accept.add_argument("--provider", required=True, help="provider id")
    accept.add_argument("--tolerance", required=True, help="override tolerance: an amount (2.50) or a percentage (1%%)")
    accept.add_argument("--reason", required=True, help="why the difference is accepted (logged)")
    accept.add_argument("--by", help="who accepts (default: the operating system user)")
    accept.set_defaults(handler=accept_command)
    csv = actions.add_parser("csv", help="print an import's mismatches, errors or warnings CSV")
    csv.add_argument("id", help="invoice id")
    csv.add_argument("report", choices=("mismatches", "errors", "warnings"))
    csv.add_argument("--provider", required=True, help="provider id")
    csv.set_defaults(handler=csv_command)


def accept_command(args: argparse.Namespace, services: Any) -> int:
    import getpass

    body = {"tolerance": args.tolerance, "reason": args.reason, **({"acceptedBy": args.by} if args.by else {})}
    record = services.invoice_actions.accept(args.provider, args.id, body, who=f"cli:{getpass.getuser()}")
    print(json.dumps(record, indent=2))
    return 0


def csv_command(args: argparse.Namespace, services: Any) -> int:
    import sys

    sys.stdout.write(services.invoice_actions.report(args.provider, args.id, args.report).decode("utf-8"))
    return 0


def register_budgets(subparsers: Any) -> None:
    actions = subparsers.add_parser("budgets", help="budgets per customer or subscription and their alerts") \
        .add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a provider's budgets and the alerts recorded")
    listing.add_argument("--provider", required=True)
    listing.set_defaults(handler=budgets_list_command)
    for name, handler in (("set", budgets_set_command), ("delete", budgets_delete_command)):
        cmd = actions.add_parser(name, help=f"{name} a budget")
        cmd.add_argument("--provider", required=True)
        target = cmd.add_mutually_exclusive_group(required=True)
        target.add_argument("--customer", help="customer tenant id")
        target.add_argument("--subscription", help="subscription id")
        if name == "set":
            cmd.add_argument("--amount", required=True, help="budget per billing period, provider currency")
            cmd.add_argument("--threshold", help="alert at this percentage of the budget (default 80)")
        cmd.set_defaults(handler=handler)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    return ("customer", args.customer) if args.customer else ("subscription", args.subscription)


def budgets_set_command(args: argparse.Namespace, services: Any) -> int:
    body = {"amount": args.amount, **({"thresholdPercent": args.threshold} if args.threshold else {})}
    print(json.dumps(services.budgets.put(args.provider, *_target(args), body)))
    return 0


def budgets_delete_command(args: argparse.Namespace, services: Any) -> int:
    services.budgets.delete(args.provider, *_target(args))
    return 0


def budgets_list_command(args: argparse.Namespace, services: Any) -> int:
    print(json.dumps(services.budgets.overview(args.provider), indent=2, default=str))
    return 0
