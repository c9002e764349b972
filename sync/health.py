"""A provider's sync health for the admin page: the last days of ``syncruns`` per day, the last
run of each stream, and the invoice list (``GET /api/providers/{id}/health``, ``GET /api/invoices``).

Runs are read newest first a page at a time with a ``select`` (sync/queries.py), at most
:data:`MAX_RUNS` of them: a provider with many customers makes one subscriptions run per customer,
so the answer says ``truncated`` (and from when it is complete) rather than reading without end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shared.clock import parse_iso, to_iso, utc_now
from shared.errors import InvalidInput

from . import queries
from .inspect_cli import INVOICE_VIEW, RUN_VIEW
from .runs import RunOutcome
from .streams import INVOICES

MAX_DAYS = 90
MAX_RUNS = 5000
FAILED = frozenset({RunOutcome.FAILED, RunOutcome.CONSENT_REQUIRED, RunOutcome.ABANDONED})
RUN_COLUMNS = ["started_at", "stream", "outcome", "rows_written", "calls", "throttled_429", "duration_s",
               "error", "customer_id", "run_id", "finished_at", "rows_read"]
LAST_RUN_KEYS = ("startedAt", "finishedAt", "outcome", "rowsWritten", "calls", "throttled429", "durationS",
                 "error", "runId", "customer")


@dataclass
class Day:
    day: date
    runs: int = 0
    rows_written: int = 0
    calls: int = 0
    throttled_429: int = 0
    failures: int = 0
    degraded: int = 0  # App+User-only work skipped while that token is unavailable (not a failure)
    duration_s: float = 0.0

    def add(self, row: dict[str, Any]) -> None:
        self.runs += 1
        self.rows_written += int(row.get("rows_written") or 0)
        self.calls += int(row.get("calls") or 0)
        self.throttled_429 += int(row.get("throttled_429") or 0)
        self.failures += row.get("outcome") in FAILED
        self.degraded += row.get("outcome") == RunOutcome.DEGRADED
        self.duration_s += float(row.get("duration_s") or 0)

    def to_json(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "runs": self.runs, "rowsWritten": self.rows_written,
                "calls": self.calls, "throttled429": self.throttled_429, "failures": self.failures,
                "degraded": self.degraded, "durationS": round(self.duration_s, 3)}


@dataclass
class History:
    days: dict[date, Day]
    last_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    truncated: bool = False
    complete_since: str | None = None


def parse_days(raw: str | None) -> int:
    text = (raw or "30").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise InvalidInput(f"days must be a whole number from 1 to {MAX_DAYS}")
    return int(text)


def run_history(tables: Any, provider_id: str, *, days: int = 30, now: datetime | None = None) -> History:
    now = now or utc_now()
    since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), tzinfo=now.tzinfo)
    history = History({since.date() + timedelta(days=n): Day(since.date() + timedelta(days=n)) for n in range(days)})
    where = queries.RunFilter(provider_id=provider_id, since=since)
    token, seen = None, 0
    while True:
        page = queries.runs_page(tables, where, limit=min(1000, MAX_RUNS - seen), token=token, select=RUN_COLUMNS,
                                 now=now)
        for row in page.rows:
            _count(history, row)
        seen += len(page.rows)
        token = page.next_token
        if not token:
            return history
        if seen >= MAX_RUNS:
            history.truncated = True
            history.complete_since = to_iso(parse_iso(page.rows[-1].get("started_at")))
            return history


def _count(history: History, row: dict[str, Any]) -> None:
    started = parse_iso(row.get("started_at"))
    if started is None:
        return
    day = history.days.get(started.date())
    if day is not None:
        day.add(row)
    stream = str(row.get("stream") or "")
    if stream and stream not in history.last_runs:  # newest first: the first one seen is the last run
        item = RUN_VIEW.item(row)
        history.last_runs[stream] = {key: item.get(key) for key in LAST_RUN_KEYS}


def provider_health(tables: Any, provider_id: str, *, days: int = 30, now: datetime | None = None) -> dict[str, Any]:
    history = run_history(tables, provider_id, days=days, now=now)
    return {
        "provider": provider_id,
        "days": [d.to_json() for d in history.days.values()],
        "lastRuns": history.last_runs,
        "truncated": history.truncated,
        "completeSince": history.complete_since,
    }


def invoice_list(tables: Any, provider_id: str, *, limit: int = 100, token: str | None = None) -> dict[str, Any]:
    """The provider's invoices as ``pcsync invoices list --json`` shows them, a page at a time."""
    page = queries.provider_rows_page(tables, INVOICES, provider_id, limit=limit, token=token,
                                      select=INVOICE_VIEW.select())
    return {"items": [INVOICE_VIEW.item(row) for row in page.rows], "next": page.next_token}


__all__ = ["MAX_DAYS", "MAX_RUNS", "invoice_list", "parse_days", "provider_health", "run_history"]
