"""The ``syncruns`` record: one row per run of a stream (or of an invoice import).

:class:`RunOutcome` is the one vocabulary of run outcomes; each stored value has one meaning.

A run's row is written when it starts (``running``) and replaced when it ends (same row), so a
run killed mid-way still leaves its row. A row still ``running`` after the function timeout
(host.json ``functionTimeout``) can only be a run that died: readers see it as ``abandoned``
(:func:`run_outcome`, :func:`list_runs`).
"""
from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping, Protocol

from shared.clock import parse_iso, utc_now
from shared.logging import get_logger
from shared.errors import Unavailable
from shared.partner_center_errors import ServiceError, ThrottledError, TransportError
from shared.tables import escape_key
from shared.token_health import TokenHealth, describe
from shared.transport import CallStats

log = get_logger(__name__)

SYNC_RUNS_TABLE = "syncruns"
MAX_ERROR_TEXT = 2000
# host.json functionTimeout: no invocation, so no run, lasts longer (a test keeps them equal)
FUNCTION_TIMEOUT = timedelta(minutes=30)
MAX_SKIPPED_RECORDED = 20  # skipped rows named in the run's row; rows_skipped counts them all

# Failures the queue runtime should retry (redelivery may succeed); others are final.
# a redelivery may succeed: Partner Center throttling or 5xx, the network, or Entra/Key Vault down
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (ThrottledError, ServiceError, TransportError, Unavailable)


class RunOutcome(enum.StrEnum):
    """How a run ended, as stored in ``syncruns.outcome`` (and reported by timers and the CLI)."""

    RUNNING = "running"  # stored when the run starts; replaced when it ends
    ABANDONED = "abandoned"  # never stored: a row still running past the function timeout reads so
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CONSENT_REQUIRED = "consent_required"  # the provider must consent again; its work stops
    SKIPPED = "skipped"  # a timer skipped the provider (consent not active); no run was made
    # an App+User-only stream (agreements, invoice by id) not read because the provider's App+User
    # token is refused or its consent lost; the app-only streams went on. ``cause`` names why
    # (shared.token_health.TokenHealth) and the error text says the fix; its rows are left as they were
    DEGRADED = "degraded"
    # Invoice imports only. The stored value stays "rejected"; it means the invoice does not exist
    # (404) and is unrelated to write-back's or webhooks' "rejected".
    INVOICE_NOT_FOUND = "rejected"
    UNAVAILABLE = "unavailable"  # Graph has no line data yet (5000) and no v1 fallback applies


class SyncMode(enum.StrEnum):
    """Which kind of sync a run belongs to, as stored in ``syncruns.mode`` (empty: a run outside
    both, e.g. ``pcsync sync --stream``)."""

    DELTA = "delta"  # the activity log since the cursor, and webhook events: only what changed
    FULL = "full"  # every customer's rows (the nightly sweep); it writes the drift report


class Tables(Protocol):
    def table(self, name: str) -> Any: ...


@dataclass
class RunResult:
    provider_id: str
    stream: str
    customer_id: str | None = None
    correlation_id: str = ""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = field(default_factory=utc_now)
    finished_at: datetime | None = None
    rows_read: int = 0
    rows_written: int = 0
    rows_removed: int = 0
    children_removed: int = 0
    rows_skipped: int = 0
    duplicates: int = 0
    calls: int = 0
    throttled_429: int = 0
    retries: int = 0
    outcome: RunOutcome = RunOutcome.RUNNING
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    skipped: list[dict[str, str]] = field(default_factory=list)  # the first skipped rows and why
    mode: SyncMode | None = None
    cursor: str | None = None  # a delta's activity-log position after the run (ISO)
    calls_saved: int | None = None  # a delta's calls below what a full sweep costs
    cause: str | None = None  # a degraded run's token problem (shared.token_health.TokenHealth)

    @property
    def duration_s(self) -> float:
        end = self.finished_at or utc_now()
        return (end - self.started_at).total_seconds()

    @property
    def retryable(self) -> bool:
        return isinstance(self.exception, RETRYABLE_ERRORS)

    def end(self, outcome: RunOutcome, exception: BaseException | None = None, *, error: str | None = None) -> None:
        """Set the outcome; the error text defaults to the exception's message."""
        self.outcome, self.exception = outcome, exception
        self.error = error if error is not None else (str(exception) if exception is not None else None)

    def degrade(self, exception: BaseException) -> None:
        """An App+User-only stream not read for a token problem (``ConsentRequired`` or
        ``TokenRefused``): ``degraded``, with the cause and its fix in ``cause`` and the error."""
        cause = TokenHealth(getattr(exception, "health", None) or TokenHealth.CONSENT_REFUSED)
        why, fix = describe(cause)
        self.end(RunOutcome.DEGRADED, exception, error=f"App+User token unavailable ({cause}): {why} Fix: {fix}")
        self.cause = cause.value

    def crashed(self, exception: BaseException) -> None:
        """An unexpected error: recorded with its type, then re-raised by the caller."""
        self.end(RunOutcome.FAILED, exception, error=f"{type(exception).__name__}: {exception}")

    def skip(self, key: str, reason: str) -> None:
        """One row skipped (not stored): counted, and named with its reason in the run's row."""
        self.rows_skipped += 1
        if len(self.skipped) < MAX_SKIPPED_RECORDED:
            self.skipped.append({"key": str(key)[:200], "reason": str(reason)[:300]})

    def take_stats(self, stats: CallStats) -> None:
        self.calls, self.throttled_429, self.retries = stats.calls, stats.throttled, stats.retries
        self.finished_at = self.finished_at or utc_now()

    def to_entity(self) -> dict[str, Any]:
        # newest first within a provider's partition: reverse milliseconds, then the run id
        reverse_ms = 10**13 - int(self.started_at.timestamp() * 1000)
        entity = {
            "PartitionKey": escape_key(self.provider_id),
            "RowKey": f"{reverse_ms:013d}-{self.run_id}",
            "run_id": self.run_id,
            "provider_id": self.provider_id,
            "stream": self.stream,
            "customer_id": self.customer_id or "",
            "correlation_id": self.correlation_id,
            "started_at": self.started_at,
            "outcome": RunOutcome(self.outcome).value,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_removed": self.rows_removed,
            "children_removed": self.children_removed,
            "rows_skipped": self.rows_skipped,
            "duplicates": self.duplicates,
            "calls": self.calls,
            "throttled_429": self.throttled_429,
            "retries": self.retries,
            "error": (self.error or "")[:MAX_ERROR_TEXT],
        }
        for name in ("mode", "cursor", "calls_saved", "cause"):
            if getattr(self, name) is not None:
                entity[name] = getattr(self, name)
        if self.skipped:
            entity["skipped"] = json.dumps(self.skipped, ensure_ascii=False)[:8 * MAX_ERROR_TEXT]
        if self.finished_at is not None:
            entity["finished_at"] = self.finished_at
            entity["duration_s"] = round(self.duration_s, 3)
        return entity


@dataclass
class TimerOutcome:
    """A timer's work for one provider: how it ended and the runs it made."""

    provider_id: str
    outcome: RunOutcome
    runs: list[RunResult] = field(default_factory=list)
    error: str | None = None


def record_run(tables: Tables, result: RunResult) -> None:
    """Write the run's ``syncruns`` row: when it starts (``running``) and again, the same row,
    when it ends."""
    try:
        tables.table(SYNC_RUNS_TABLE).upsert_entity(result.to_entity(), replace=True)
    except Exception:  # the run record must never hide the run's own outcome
        log.exception("could not write the syncruns row", extra={"run_id": result.run_id})


def run_outcome(row: Mapping[str, Any], *, now: datetime | None = None) -> RunOutcome:
    """A stored run's outcome as it stands: ``abandoned`` for a row still ``running`` after the
    function timeout (its process died before it could finish the row)."""
    outcome = RunOutcome(row.get("outcome") or RunOutcome.RUNNING.value)
    if outcome is not RunOutcome.RUNNING:
        return outcome
    started = parse_iso(row.get("started_at"))
    if started is not None and (now or utc_now()) - started > FUNCTION_TIMEOUT:
        return RunOutcome.ABANDONED
    return outcome


def list_runs(tables: Tables, provider_id: str, *, now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """A provider's ``syncruns`` rows, newest first, ``outcome`` as it stands (:func:`run_outcome`)."""
    for row in tables.table(SYNC_RUNS_TABLE).list_entities(partition_key=escape_key(provider_id)):
        yield {**row, "outcome": run_outcome(row, now=now).value}


def overall_outcome(runs: Iterable[RunResult], what: str = "run") -> tuple[RunOutcome, str | None, str | None]:
    """(outcome, error, cause) of work made of ``runs``: ``failed`` when one failed, ``degraded``
    (naming the causes) when the only shortfall is App+User-only streams not read, else
    ``succeeded`` (skipped runs are no shortfall)."""
    runs = list(runs)
    failed = [r for r in runs if r.outcome not in (RunOutcome.SUCCEEDED, RunOutcome.SKIPPED, RunOutcome.DEGRADED)]
    degraded = [r for r in runs if r.outcome == RunOutcome.DEGRADED]
    causes = sorted({r.cause for r in degraded if r.cause})
    cause = causes[0] if causes else None
    if failed:
        return RunOutcome.FAILED, f"{len(failed)} {what}(s) failed", cause
    if degraded:
        causes_text = ", ".join(causes)
        return RunOutcome.DEGRADED, f"{len(degraded)} {what}(s) degraded: App+User token unavailable ({causes_text})", cause
    return RunOutcome.SUCCEEDED, None, None


SUMMED = ("calls", "rows_read", "rows_written", "rows_removed", "children_removed", "throttled_429", "retries")


def summarize(results: Iterable[RunResult]) -> dict[str, Any]:
    totals: dict[str, Any] = {"runs": 0, **{key: 0 for key in SUMMED}, "failed": 0, "degraded": 0}
    for r in results:
        totals["runs"] += 1
        for key in SUMMED:
            totals[key] += getattr(r, key)
        totals["failed"] += r.outcome not in (RunOutcome.SUCCEEDED, RunOutcome.DEGRADED)
        totals["degraded"] += r.outcome == RunOutcome.DEGRADED
    return totals


__all__ = ["FUNCTION_TIMEOUT", "MAX_ERROR_TEXT", "RETRYABLE_ERRORS", "RunOutcome", "RunResult", "SYNC_RUNS_TABLE", "SyncMode",
           "TimerOutcome", "list_runs", "overall_outcome", "record_run", "run_outcome", "summarize"]
