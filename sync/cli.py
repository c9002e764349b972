"""`pcsync sync ...`: the same engine as the functions, run locally with a bounded thread pool
in place of the sync-customer queue. The invoice commands are in :mod:`sync.invoices.cli`.

A run that fails, whatever the reason (a Partner Center error, a token refresh or Key Vault blip,
a storage error), is recorded in ``syncruns`` and the other runs go on; the command ends with the
summary table, the failed runs and an exit code (:func:`report`). A stream that needs the App+User
token (agreements) while it is unavailable (consent lost, MFA or Conditional Access refusal) ends
``degraded``: the app-only streams are synced, and the command prints the cause and the fix."""
from __future__ import annotations

import argparse
import sys
import traceback
from collections import defaultdict
from typing import Any

from .delta_cli import MODES, outcome_line, sync_mode
from .engine import SyncService
from .resources import canonical_id
from .runs import RunOutcome, RunResult
from .streams import CUSTOMER_STREAMS, CUSTOMERS, INVOICES, STREAMS, get_stream

MAX_WORKERS = 32
SUMMARY_COLUMNS = ("rows_read", "rows_written", "rows_removed", "children_removed", "calls", "throttled_429",
                   "retries")
HEADERS = ("stream", "runs", "read", "written", "removed", "children removed", "calls", "429s", "retries", "failed")
EXIT_CONSENT_REQUIRED = 3
EXIT_DEGRADED = 4  # everything that works app-only synced; App+User-only streams were not read


def register(subparsers: Any) -> None:
    from .invoices import cli as invoices_cli

    cmd = subparsers.add_parser("sync", help="sync a provider's Partner Center data now")
    cmd.add_argument("--provider", required=True, help="provider id")
    cmd.add_argument("--stream", choices=[*STREAMS, invoices_cli.UNBILLED_STREAM],
                     help="only this stream (default: customers, then each customer's subscriptions and agreements)")
    cmd.add_argument("--customer", help="only this customer's subscriptions and agreements")
    cmd.add_argument("--workers", type=int, default=4, help=f"customers synced in parallel, 1..{MAX_WORKERS} (default 4)")
    cmd.add_argument("--mode", choices=MODES,
                     help="delta: the activity log since the cursor, only what changed; full: the nightly sweep "
                          "(catch-up, every customer, the drift report)")
    cmd.set_defaults(handler=sync_command)
    invoices_cli.register(subparsers)


def sync_command(args: argparse.Namespace, services: Any) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    if args.stream == "unbilled":
        from .invoices.cli import sync_unbilled

        return sync_unbilled(console, services, args.provider)
    stream = get_stream(args.stream) if args.stream else None
    if getattr(args, "mode", None) and (stream or args.customer):
        console.print("[red]error:[/red] --mode cannot be combined with --stream or --customer")
        return 2
    if args.customer and stream in (CUSTOMERS, INVOICES):
        console.print(f"[red]error:[/red] --customer cannot be combined with --stream {stream.name}")
        return 2
    customer_id = canonical_id(args.customer) if args.customer is not None else None
    if customer_id == "":
        console.print("[red]error:[/red] --customer needs a customer tenant id")
        return 2
    workers = max(1, min(MAX_WORKERS, args.workers))
    if stream is INVOICES:
        from .invoices.cli import sync_invoices

        return sync_invoices(console, services, args.provider, workers=min(workers, 4))
    # one pooled connection per worker, plus room for the customers stream
    service = KeepGoingSyncService.over(services.derive(client_options={"pool_size": workers + 2}))
    provider = services.providers.get_provider(args.provider)
    if getattr(args, "mode", None):
        outcome = sync_mode(service, provider, args.mode, workers)
        code = _reported(console, outcome.runs, args)
        console.print(outcome_line(outcome), highlight=False, soft_wrap=True)
        return code
    streams = (stream,) if stream else ((*CUSTOMER_STREAMS,) if customer_id else None)
    results = _sync_with_progress(console, service, provider, streams, customer_id, workers)
    return _reported(console, results, args)


def _reported(console: Any, results: list[RunResult], args: argparse.Namespace) -> int:
    code = report(console, results)
    if getattr(args, "debug", False):
        print_tracebacks(results)
    return code


class KeepGoingSyncService(SyncService):
    """The engine as the command line runs it: a run that raises instead of returning (the
    engine records it in ``syncruns`` as failed, then re-raises for the queue runtime) becomes a
    failed result here, so one customer's error never ends the other customers' runs."""

    @classmethod
    def over(cls, services: Any) -> "KeepGoingSyncService":
        return cls(tables=services.tables, providers=services.providers, queues=services.queues,
                   clients=services.clients)

    def run_stream(self, stream: Any, provider: Any, **options: Any) -> RunResult:
        try:
            return super().run_stream(stream, provider, **options)
        except Exception as exc:  # noqa: BLE001 - recorded by the engine; reported in the summary
            result = RunResult(provider.id, stream.name, options.get("customer_id"), options.get("correlation_id") or "")
            result.crashed(exc)
            return result


def print_tracebacks(results: list[RunResult]) -> None:
    """--debug: the traceback of every failed run that ended with an exception."""
    for result in results:
        if result.outcome != RunOutcome.SUCCEEDED and result.exception is not None:
            print(f"--- {result.stream} {result.customer_id or ''}", file=sys.stderr)
            traceback.print_exception(result.exception, file=sys.stderr)


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
    """Print the summary table, failures and degraded streams (with the fix); the exit code is 0,
    3 (consent needed: the app-only calls stopped too), 1 (failures), else 4 (degraded only)."""
    from rich.table import Table

    rows: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    failures = [r for r in results if r.outcome not in (RunOutcome.SUCCEEDED, RunOutcome.SKIPPED, RunOutcome.DEGRADED)]
    degraded = [r for r in results if r.outcome == RunOutcome.DEGRADED]
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
    print_degraded(console, degraded)
    if any(r.outcome == RunOutcome.CONSENT_REQUIRED for r in results):
        return EXIT_CONSENT_REQUIRED
    return 1 if failures else (EXIT_DEGRADED if degraded else 0)


def print_degraded(console: Any, degraded: list[RunResult]) -> None:
    """One line per degraded stream (how many customers, the cause), then each cause's fix once."""
    from shared.token_health import describe

    by_stream: dict[tuple[str, str], int] = defaultdict(int)
    for r in degraded:
        by_stream[(r.stream, r.cause or "")] += 1
    for (stream, cause), count in sorted(by_stream.items()):
        console.print(f"[yellow]degraded[/yellow] {stream}: {count} run(s) not read, App+User token "
                      f"unavailable ({cause or 'unknown'}); its stored rows are kept", highlight=False, soft_wrap=True)
    for cause in sorted({cause for _, cause in by_stream}):
        why, fix = describe(cause)
        if fix:
            console.print(f"  {cause}: {why} Fix: {fix}", highlight=False, soft_wrap=True)
