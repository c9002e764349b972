"""`pcsync sync ...`: the same engine as the functions, run locally with a bounded thread pool
in place of the sync-customer queue. The invoice commands are in :mod:`sync.invoices.cli`."""
from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from .runs import RunOutcome, RunResult
from .streams import CUSTOMER_STREAMS, CUSTOMERS, INVOICES, STREAMS, get_stream

MAX_WORKERS = 32
SUMMARY_COLUMNS = ("rows_read", "rows_written", "rows_removed", "children_removed", "calls", "throttled_429",
                   "retries")
HEADERS = ("stream", "runs", "read", "written", "removed", "children removed", "calls", "429s", "retries", "failed")
EXIT_CONSENT_REQUIRED = 3


def register(subparsers: Any) -> None:
    from .invoices import cli as invoices_cli

    cmd = subparsers.add_parser("sync", help="sync a provider's Partner Center data now")
    cmd.add_argument("--provider", required=True, help="provider id")
    cmd.add_argument("--stream", choices=list(STREAMS),
                     help="only this stream (default: customers, then each customer's subscriptions and agreements)")
    cmd.add_argument("--customer", help="only this customer's subscriptions and agreements")
    cmd.add_argument("--workers", type=int, default=4, help=f"customers synced in parallel, 1..{MAX_WORKERS} (default 4)")
    cmd.set_defaults(handler=sync_command)
    invoices_cli.register(subparsers)


def sync_command(args: argparse.Namespace, services: Any) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    stream = get_stream(args.stream) if args.stream else None
    if args.customer and stream in (CUSTOMERS, INVOICES):
        console.print(f"[red]error:[/red] --customer cannot be combined with --stream {stream.name}")
        return 2
    workers = max(1, min(MAX_WORKERS, args.workers))
    if stream is INVOICES:
        from .invoices.cli import sync_invoices

        return sync_invoices(console, services, args.provider, workers=min(workers, 4))
    # one pooled connection per worker, plus room for the customers stream
    service = services.derive(client_options={"pool_size": workers + 2}).sync
    provider = services.providers.get_provider(args.provider)
    streams = (stream,) if stream else ((*CUSTOMER_STREAMS,) if args.customer else None)
    return report(console, _sync_with_progress(console, service, provider, streams, args.customer, workers))


def _sync_with_progress(console: Any, service: Any, provider: Any, streams: Any, customer_id: str | None,
                        workers: int) -> list[RunResult]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"customers of {provider.id}", total=None)

        def fan_out(count: int) -> None:
            progress.update(task, description=f"customer streams of {provider.id}", total=count, completed=0)

        results = service.sync_provider_now(
            provider, streams=streams, customer_id=customer_id, workers=workers,
            on_fan_out=fan_out, on_customer_done=lambda cid, runs: progress.advance(task),
        )
        if progress.tasks[0].total is None:
            progress.update(task, total=1, completed=1)
    return results


def report(console: Any, results: list[RunResult]) -> int:
    """Print the summary table and failures; the exit code is 0, 1 (failures) or 3 (consent)."""
    from rich.table import Table

    rows: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    failures = [r for r in results if r.outcome != RunOutcome.SUCCEEDED]
    for r in results:
        row = rows[r.stream]
        row["runs"] += 1
        row["failed"] += r.outcome != RunOutcome.SUCCEEDED
        for key in SUMMARY_COLUMNS:
            row[key] += getattr(r, key)
    table = Table(title="sync summary")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "stream" else "right")
    for name, row in rows.items():
        table.add_row(name, *(str(row[k]) for k in ("runs", *SUMMARY_COLUMNS, "failed")))
    console.print(table)
    for r in failures[:20]:
        console.print(f"[red]{r.outcome}[/red] {r.stream} {r.customer_id or ''}: {r.error}")
    if len(failures) > 20:
        console.print(f"... and {len(failures) - 20} more failed run(s); see table syncruns")
    if any(r.outcome == RunOutcome.CONSENT_REQUIRED for r in results):
        return EXIT_CONSENT_REQUIRED
    return 1 if failures else 0
