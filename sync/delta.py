"""Delta sync and the full sweep, per provider.

* **Delta** (timer ``PCSYNC_SCHEDULE_DELTA``, ``pcsync sync --mode delta``): the activity log since
  the cursor (:mod:`sync.cursor`, read again from a 30-minute overlap, ids already handled
  skipped), each record turned into targeted work (:mod:`sync.activity`): one re-read per customer
  of what its records touched, however many records name it. Webhook events queue the same
  targeted work. No cursor yet, or one older than the log's 90-day window (also when Partner
  Center refuses the start date): a full sweep instead.
* **Full sweep** (the customers timer ``PCSYNC_SCHEDULE_CUSTOMERS``, ``--mode full``): first the
  delta catches up, then every customer's rows are read; what that still changes is drift
  (:mod:`sync.drift`), written to the sweep's drift report.

Each delta records a ``syncruns`` row of stream ``auditrecords`` with ``mode``, ``cursor`` (the
position after it) and ``calls_saved`` (what the last full sweep cost minus what this delta cost).
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from shared.clock import Clock, to_iso, utc_now
from shared.errors import ConsentRequired, Unavailable, UpstreamRefused
from shared.logging import get_logger
from shared.partner_center_errors import BadRequestError, PartnerCenterError
from shared.providers import ProviderConnection
from shared.transport import CallStats

from .activity import ALL_RESOURCES, CHILD_RESOURCES, USABLE_WINDOW, DeltaPlan, read_records
from .cursor import CursorStore, DeltaCursor
from .drift import DriftRecorder, DriftReports, DriftTables, new_sweep_id
from .engine import SyncService, fan_out, for_each_active_provider
from .names import SYNC_CUSTOMER_QUEUE
from .runs import RunOutcome, RunResult, SyncMode, TimerOutcome, overall_outcome, record_run
from .streams import CUSTOMERS
from .targeted import TargetedMessage, refresh_customer

log = get_logger(__name__)

AUDIT_STREAM = "auditrecords"  # the stream name of a delta's own syncruns row
CUSTOMER_PAGE = 500  # sync.streams.CUSTOMERS.page_size: the sweep's customers pages


@dataclass
class DeltaOutcome(TimerOutcome):
    """One delta or sweep of a provider: the runs, and what the CLI and timers report."""

    mode: SyncMode = SyncMode.DELTA
    cursor: str | None = None
    records: int = 0
    customers: int = 0  # customers re-read (delta) or fanned out to (sweep)
    enqueued: int = 0
    calls: int = 0
    calls_saved: int | None = None
    fallback: str | None = None  # why a delta became a full sweep
    sweep_id: str | None = None
    drift: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def sweep_calls_estimate(customers: int) -> int:
    """A full sweep's calls: the customers pages, then subscriptions and agreements of each."""
    return max(1, math.ceil(customers / CUSTOMER_PAGE)) + 2 * customers


class DeltaService:
    """Built once per process by the composition root, over the same tables, queues and clients
    as :class:`~sync.engine.SyncService` (whose runs it makes)."""

    def __init__(self, sync: SyncService, *, clock: Clock = utc_now, workers: int = 4):
        self.sync = sync
        self.cursors = CursorStore(sync.tables)
        self.reports = DriftReports(sync.tables)
        self.clock = clock
        self.workers = workers

    # -- timers ------------------------------------------------------------------------------

    def delta_all_providers(self) -> list[DeltaOutcome]:
        return for_each_active_provider(self.sync.providers, lambda p: self.run_delta(p, enqueue=True),
                                        DeltaOutcome, "delta sync")

    def sweep_all_providers(self) -> list[DeltaOutcome]:
        return for_each_active_provider(self.sync.providers, lambda p: self.run_full(p, enqueue=True),
                                        DeltaOutcome, "full sweep")

    # -- delta -------------------------------------------------------------------------------

    def run_delta(self, provider: ProviderConnection, *, enqueue: bool = False,
                  correlation_id: str | None = None) -> DeltaOutcome:
        """The activity log since the cursor, then its targeted work (queued, or run here)."""
        correlation_id = correlation_id or str(uuid.uuid4())
        cursor = self.cursors.load(provider.id)
        now = self.clock()
        if cursor.read_from() is None:
            return self.run_full(provider, enqueue=enqueue, correlation_id=correlation_id, fallback="first run")
        if now - cursor.read_from() > USABLE_WINDOW:
            return self.run_full(provider, enqueue=enqueue, correlation_id=correlation_id,
                                 fallback=f"cursor {to_iso(cursor.position)} is older than the 90-day activity log")
        outcome = self._delta_pass(provider, cursor, now, enqueue=enqueue, correlation_id=correlation_id)
        if outcome.fallback:
            return self.run_full(provider, enqueue=enqueue, correlation_id=correlation_id, fallback=outcome.fallback)
        return outcome

    def _delta_pass(self, provider: ProviderConnection, cursor: DeltaCursor, now: datetime, *, enqueue: bool,
                    correlation_id: str) -> DeltaOutcome:
        result = RunResult(provider.id, AUDIT_STREAM, None, correlation_id, mode=SyncMode.DELTA)
        outcome = DeltaOutcome(provider.id, RunOutcome.RUNNING, runs=[result], mode=SyncMode.DELTA)
        plan = self._read_plan(provider, cursor, now, result, outcome)
        if plan is None:
            return outcome
        runs = self._targeted(provider, plan, enqueue=enqueue, correlation_id=correlation_id, outcome=outcome)
        self.cursors.save(cursor)
        work_calls = sum(r.calls for r in runs) if not enqueue else sum(len(r) for r in plan.work.values())
        outcome.calls = result.calls + work_calls
        full = cursor.full_calls or sweep_calls_estimate(self._live_customers(provider.id))
        result.calls_saved = outcome.calls_saved = max(0, full - outcome.calls)
        result.cursor = outcome.cursor = to_iso(cursor.position) if cursor.position else None
        result.rows_read, outcome.records, outcome.customers = plan.records, plan.records, len(plan.work)
        ended, error, result.cause = overall_outcome(runs, "targeted run")
        result.end(ended, error=error)
        record_run(self.sync.tables, result)
        outcome.outcome, outcome.runs = result.outcome, [result, *runs]
        return outcome

    def _read_plan(self, provider: ProviderConnection, cursor: DeltaCursor, now: datetime, result: RunResult,
                   outcome: DeltaOutcome) -> DeltaPlan | None:
        """The new records as a plan; None when the read failed (recorded) or must fall back."""
        stats = CallStats()
        record_run(self.sync.tables, result)
        plan = DeltaPlan()
        try:
            client = self.sync.clients.partner_center(provider).bind(correlation_id=result.correlation_id, stats=stats)
            start = cursor.read_from() or now
            for record in read_records(client, start, max(now, start) + timedelta(days=1)):
                if cursor.is_new(record.id, record.at):
                    plan.add_record(record)
                    cursor.advance(record.id, record.at)
        except BadRequestError as exc:  # the start date is outside what the log keeps: not a failure
            outcome.fallback = f"the activity log refused the cursor's start date: {exc}"
            result.end(RunOutcome.SKIPPED, exc, error=f"a full sweep instead: {outcome.fallback}")
        except ConsentRequired as exc:
            self.sync.consent_lost(provider, result, exc, f"delta sync of {provider.id}")
        except (PartnerCenterError, Unavailable, UpstreamRefused) as exc:
            result.end(RunOutcome.FAILED, exc)  # the cursor stays: the next delta reads the same records
        result.take_stats(stats)
        if result.outcome is RunOutcome.RUNNING:
            return plan
        record_run(self.sync.tables, result)
        outcome.outcome, outcome.error = result.outcome, result.error
        return None

    def _targeted(self, provider: ProviderConnection, plan: DeltaPlan, *, enqueue: bool, correlation_id: str,
                  outcome: DeltaOutcome) -> list[RunResult]:
        if enqueue:
            for customer_id in plan.customers:
                message = TargetedMessage(provider.id, customer_id, correlation_id, frozenset(plan.work[customer_id]),
                                          SyncMode.DELTA, source="audit")
                self.sync.queues.send_json(SYNC_CUSTOMER_QUEUE, message.to_json())
                outcome.enqueued += 1
            return []
        return self._fan_out(plan.customers, lambda cid: refresh_customer(
            self.sync, provider, cid, frozenset(plan.work[cid]), mode=SyncMode.DELTA, correlation_id=correlation_id))

    def _fan_out(self, customers: list[str], work: Callable[[str], list[RunResult]]) -> list[RunResult]:
        results: list[RunResult] = []
        for runs in fan_out(customers, work, workers=self.workers, thread_name="pcsync-delta",
                            stops=lambda runs: any(r.outcome == RunOutcome.CONSENT_REQUIRED for r in runs)):
            results.extend(runs)
        return results

    def _live_customers(self, provider_id: str) -> int:
        return sum(1 for _ in self.sync.live_customer_ids(provider_id))

    # -- full sweep --------------------------------------------------------------------------

    def run_full(self, provider: ProviderConnection, *, enqueue: bool = False, correlation_id: str | None = None,
                 fallback: str | None = None) -> DeltaOutcome:
        """Catch up on the activity log, then sweep every customer; the sweep's writes are drift."""
        correlation_id = correlation_id or str(uuid.uuid4())
        started = self.clock()
        cursor = self.cursors.load(provider.id)
        outcome = DeltaOutcome(provider.id, RunOutcome.RUNNING, mode=SyncMode.FULL, fallback=fallback)
        caught_up = False
        if cursor.read_from() is not None and started - cursor.read_from() <= USABLE_WINDOW:
            catch_up = self._delta_pass(provider, cursor, started, enqueue=False, correlation_id=correlation_id)
            outcome.runs.extend(catch_up.runs)
            outcome.records, outcome.calls = catch_up.records, catch_up.calls
            caught_up = catch_up.outcome == RunOutcome.SUCCEEDED
        # a first sweep has nothing to drift from: its writes are the initial copy, not drift
        sweep_id = new_sweep_id(started) if cursor.position is not None else None
        outcome.sweep_id = sweep_id
        self.reports.start(provider.id, sweep_id or new_sweep_id(started), started)
        first = self._observed(provider.id, sweep_id, lambda sync: sync.run_stream(
            CUSTOMERS, provider, correlation_id=correlation_id, mode=SyncMode.FULL))
        outcome.runs.append(first)
        if first.outcome != RunOutcome.SUCCEEDED:
            outcome.outcome, outcome.error = first.outcome, first.error
            return outcome
        customers = list(self.sync.live_customer_ids(provider.id))
        outcome.customers = len(customers)
        if enqueue:
            for customer_id in customers:
                message = TargetedMessage(provider.id, customer_id, correlation_id, CHILD_RESOURCES, SyncMode.FULL,
                                          sweep_id=sweep_id, source="sweep")
                self.sync.queues.send_json(SYNC_CUSTOMER_QUEUE, message.to_json())
                outcome.enqueued += 1
        else:
            outcome.runs.extend(self._fan_out(customers, lambda cid: self._observed(provider.id, sweep_id, lambda sync: sync.sync_customer(
                provider, cid, correlation_id=correlation_id, mode=SyncMode.FULL))))
        self._finish_sweep(provider, started, outcome, first, customers, enqueue=enqueue, caught_up=caught_up)
        return outcome

    def _finish_sweep(self, provider: ProviderConnection, started: datetime, outcome: DeltaOutcome,
                      first: RunResult, customers: list[str], *, enqueue: bool, caught_up: bool) -> None:
        cursor = self.cursors.load(provider.id)  # as the catch-up left it
        if not caught_up:  # the sweep covers everything before its start: the next delta reads from there
            cursor.position, cursor.seen_ids = started, {}
        sweep_calls = first.calls + (2 * len(customers) if enqueue else
                                     sum(r.calls for r in outcome.runs if r.mode is SyncMode.FULL) - first.calls)
        cursor.full_calls, cursor.full_sweep_at = sweep_calls, started
        self.cursors.save(cursor)
        outcome.calls += sweep_calls
        outcome.cursor = to_iso(cursor.position)
        outcome.outcome, outcome.error, _ = overall_outcome(outcome.runs)
        outcome.drift = self.reports.latest(provider.id)

    def _observed(self, provider_id: str, sweep_id: str | None, work: Callable[[SyncService], Any]) -> Any:
        """``work`` on a SyncService whose synced-table writes are noted as this sweep's drift
        (``sweep_id`` None: not observed)."""
        if sweep_id is None:
            return work(self.sync)
        recorder = DriftRecorder()
        # the same kind of engine (the CLI's keeps going after a crashed run), over observed tables
        sync = type(self.sync)(tables=DriftTables(self.sync.tables, recorder), providers=self.sync.providers,
                               queues=self.sync.queues, clients=self.sync.clients)
        try:
            return work(sync)
        finally:
            self.reports.add(provider_id, sweep_id, recorder.take(), self.clock())

    # -- the sync-customer queue -------------------------------------------------------------

    def handle_message(self, message: TargetedMessage) -> list[RunResult]:
        """Queue work (a sweep's customer, or targeted delta/webhook work); raises only when a
        redelivery could succeed."""
        what = f"sync-customer for {message.provider_id}/{message.customer_id}"
        provider = self.sync.workable_provider(message.provider_id, what)
        if provider is None:
            return []
        if message.sweep_id:
            results = self._observed(provider.id, message.sweep_id, lambda sync: refresh_customer(
                sync, provider, message.customer_id, message.resources, mode=message.mode,
                correlation_id=message.correlation_id))
        else:
            results = refresh_customer(self.sync, provider, message.customer_id, message.resources,
                                       mode=message.mode, correlation_id=message.correlation_id)
        retryable = [r for r in results if r.retryable]
        if retryable:
            raise retryable[0].exception  # type: ignore[misc]
        return results


__all__ = ["ALL_RESOURCES", "AUDIT_STREAM", "DeltaOutcome", "DeltaService", "sweep_calls_estimate"]
