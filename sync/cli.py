"""`pcsync sync ...`: the same engine as the functions, run locally with a bounded thread pool
in place of the sync-customer queue."""
from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from .engine import OUTCOME_CONSENT_REQUIRED, OUTCOME_SUCCEEDED, RunResult, service_for
from .streams import CUSTOMER_STREAMS, CUSTOMERS, INVOICES, STREAMS, get_stream

MAX_WORKERS = 32
SUMMARY_COLUMNS = ("rows_read", "rows_written", "rows_removed", "children_removed", "calls", "throttled_429",
                   "retries")


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser("sync", help="sync a provider's Partner Center data now")
    cmd.add_argument("--provider", required=True, help="provider id")
    cmd.add_argument("--stream", choices=list(STREAMS),
                     help="only this stream (default: customers, then each customer's subscriptions and agreements)")
    cmd.add_argument("--customer", help="only this customer's subscriptions and agreements")
    cmd.add_argument("--workers", type=int, default=4, help=f"customers synced in parallel, 1..{MAX_WORKERS} (default 4)")
    cmd.set_defaults(handler=sync_command)

    imp = subparsers.add_parser("import-invoice", help="import one invoice's line items and reconcile them now")
    imp.add_argument("--provider", required=True, help="provider id")
    imp.add_argument("--invoice", required=True, help="invoice id, e.g. G000024130 or D02005YFHI")
    imp.add_argument("--source", choices=["auto", "v1", "v2"], default="auto",
                     help="line-item API: auto (legacy and pre-2024 periods v1, new commerce Graph v2), or force one")
    imp.set_defaults(handler=import_invoice_command)


def sync_command(args: argparse.Namespace, runtime: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    stream = get_stream(args.stream) if args.stream else None
    if stream is CUSTOMERS and args.customer:
        console.print("[red]error:[/red] --customer cannot be combined with --stream customers")
        return 2
    workers = max(1, min(MAX_WORKERS, args.workers))
    if stream is INVOICES:
        if args.customer:
            console.print("[red]error:[/red] --customer cannot be combined with --stream invoices")
            return 2
        return sync_invoices(console, runtime, args.provider, workers=min(workers, 4))
    service = service_for(runtime)
    service.client_options.setdefault("pool_size", workers + 2)
    provider = runtime.providers.get_provider(args.provider)
    streams = (stream,) if stream else ((*CUSTOMER_STREAMS,) if args.customer else None)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"customers of {provider.id}", total=None)

        def fan_out(count: int) -> None:
            progress.update(task, description=f"customer streams of {provider.id}", total=count, completed=0)

        results = service.sync_provider_now(
            provider, streams=streams, customer_id=args.customer, workers=workers,
            on_fan_out=fan_out, on_customer_done=lambda cid, runs: progress.advance(task),
        )
        if progress.tasks[0].total is None:
            progress.update(task, total=1, completed=1)
    return report(console, results)


def report(console: Any, results: list[RunResult]) -> int:
    """Print the summary table and failures; the exit code is 0, 1 (failures) or 3 (consent)."""
    from rich.table import Table

    rows: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    failures = [r for r in results if r.outcome != OUTCOME_SUCCEEDED]
    for r in results:
        row = rows[r.stream]
        row["runs"] += 1
        row["failed"] += r.outcome != OUTCOME_SUCCEEDED
        for key in SUMMARY_COLUMNS:
            row[key] += getattr(r, key)
    table = Table(title="sync summary")
    headers = ("stream", "runs", "read", "written", "removed", "children removed", "calls", "429s", "retries", "failed")
    for header in headers:
        table.add_column(header, justify="left" if header == "stream" else "right")
    for name, row in rows.items():
        table.add_row(name, *(str(row[k]) for k in ("runs", *SUMMARY_COLUMNS, "failed")))
    console.print(table)
    for r in failures[:20]:
        console.print(f"[red]{r.outcome}[/red] {r.stream} {r.customer_id or ''}: {r.error}")
    if len(failures) > 20:
        console.print(f"... and {len(failures) - 20} more failed run(s); see table syncruns")
    if any(r.outcome == OUTCOME_CONSENT_REQUIRED for r in results):
        return 3
    return 1 if failures else 0


def sync_invoices(console: Any, runtime: Any, provider_id: str, *, workers: int) -> int:
    """Invoices, then every new or changed invoice imported here (in place of the queue)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .invoices.service import invoice_service_for

    service = invoice_service_for(runtime)
    provider = runtime.providers.get_provider(provider_id)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"invoices of {provider.id}", total=None)
        outcome, imports = service.sync_and_import_now(
            provider, workers=workers,
            on_fan_out=lambda n: progress.update(task, description=f"importing invoices of {provider.id}", total=n,
                                                 completed=0),
            on_imported=lambda r: progress.advance(task),
        )
    code = report(console, [*outcome.runs, *imports])
    for result in imports:
        recon = result.summary
        console.print(f"{result.invoice_id}: {result.outcome} via {result.source or '-'}"
                      + (f", {recon.line_count} lines, {recon.status} (difference {recon.difference})" if recon else ""))
    return code


def import_invoice_command(args: argparse.Namespace, runtime: Any) -> int:
    import json

    from .invoices.service import OUTCOME_REJECTED, OUTCOME_UNAVAILABLE, invoice_service_for

    service = invoice_service_for(runtime)
    provider = runtime.providers.get_provider(args.provider)
    result = service.import_invoice(provider, args.invoice, source=args.source)
    print(json.dumps(result.to_json(), indent=2, default=str))
    if result.outcome == OUTCOME_CONSENT_REQUIRED:
        return 3
    if result.outcome in (OUTCOME_REJECTED, OUTCOME_UNAVAILABLE):
        return 2 if result.outcome == OUTCOME_REJECTED else 4
    return 0 if result.outcome == OUTCOME_SUCCEEDED else 1
