"""Call budgets: :class:`CallBudget`, a sliding window in one process, and :class:`SharedCallBudget`,
one Partner Center call budget per partner tenant across every worker process.

Partner Center throttles per partner tenant, whoever sends the calls, while
:class:`CallBudget` lives in one process: N Functions instances syncing one
provider would together send N times its budget. Here the processes lease blocks of calls from
rows in table ``callbudget``; the in-process ``CallBudget`` stays the fast path (and keeps the
per-customer scope), so the table is touched about once per block, not once per call.

Rows: PartitionKey = the escaped scope (the partner tenant id), RowKey = the start of a
``window / slices`` second slice (milliseconds since the epoch, zero-padded so that key order is
time order), ``granted`` = calls leased in that slice by all processes together.

Why slices and not one row per minute: Partner Center (like the simulator's token bucket) does not
reset at minute boundaries, and fixed minute windows would let the instances together send a
minute's budget at the end of one minute and another at the start of the next. A lease is granted
only while the current slice and the ``slices`` slices before it (a span that covers every 60-second
interval touching the current slice) hold fewer than ``limit`` calls, so no 60-second interval
ever sees more than ``limit`` leased calls. Under a steady full load that is ``slices/(slices+1)``
of the limit (the default 60 slices of 1 s: 98.4%, so a budget at 95% of Partner Center's limit
paces at 93.4% of it, and the wait after a burst is at most one slice longer than a sliding
minute); a burst after a quiet minute still gets the whole limit at once.

Rules that keep it safe:

* a lease is written with an etag-conditional update (or ``create_entity`` for a slice's first
  lease); a 412/409 means another process got there first, so it re-reads and tries again: the
  processes together never lease more than the limit;
* leased calls may be spent only in the slice they were leased in; what is left at the slice's end
  is given back to that slice's row with the process's next lease (same read, one more
  etag-conditional write), so the span counts what was sent and the processes together can pace at
  the budget itself; if giving back fails the calls stay counted (the safe side); leases start
  small and double while a slice's leases run out (up to ``block``);
* when the limit is reached the caller waits for the slice in which enough old calls have left the
  span (injectable ``clock``/``sleep``);
* a storage failure never stops a sync: the budget falls back to the in-process one, logs one
  warning, and tries the table again after ``retry_after_failure`` seconds;
* rows older than ``retention`` seconds are deleted opportunistically, at most every
  ``cleanup_every`` seconds per process (tiny rows; a few dozen per tenant at any time).

The per partner+customer limit (also 500/minute) stays in-process: one customer's calls come from
one ``sync-customer`` message (a few calls), handled by one instance at a time, so leasing them
through the table would add a storage round trip per customer for nothing in the common case.
"""
from __future__ import annotations

import collections
import math
import random
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from .logging import get_logger
from .tables import escape_key

log = get_logger(__name__)

DEFAULT_CALLS_PER_MINUTE = 450  # documented limit is 500/minute per tenant identifier; keep a margin
CALL_BUDGET_TABLE = "callbudget"
DEFAULT_LEASE_BLOCK = 25
# Budget round trips must fail fast: a sync waits on them. One retry, short timeouts.
STORAGE_CALL_OPTIONS: dict[str, Any] = {"retry_total": 1, "connection_timeout": 5, "read_timeout": 10}


def budget_scope(tenant_id: str, customer_id: str | None = None) -> str:
    """The PartitionKey of a scope: ``<tenant>`` or ``<tenant>|<customer>``, escaped."""
    return escape_key(tenant_id if customer_id is None else f"{tenant_id}|{customer_id}")


class CallBudget:
    """Sliding-window call limiter for one partner tenant: at most ``partner_limit`` calls in any
    ``window`` seconds for the tenant, and ``customer_limit`` for each partner+customer pair.

    ``acquire`` waits (outside the lock) until both windows have room, then records the call.
    One object per partner tenant, shared by every stream and thread syncing that tenant.
    """

    def __init__(
        self,
        *,
        partner_limit: int = DEFAULT_CALLS_PER_MINUTE,
        customer_limit: int | None = None,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if partner_limit < 1 or (customer_limit is not None and customer_limit < 1):
            raise ValueError("call budget limits must be >= 1")
        self.partner_limit = partner_limit
        self.customer_limit = customer_limit or partner_limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._partner: collections.deque[float] = collections.deque()
        self._customers: dict[str, collections.deque[float]] = {}
        self.waited_seconds = 0.0

    def _prune(self, calls: collections.deque[float], now: float) -> None:
        horizon = now - self.window
        while calls and calls[0] <= horizon:
            calls.popleft()

    def _wait_for(self, calls: collections.deque[float], limit: int, now: float) -> float:
        self._prune(calls, now)
        if len(calls) < limit:
            return 0.0
        return calls[len(calls) - limit] + self.window - now

    def acquire(self, customer_id: str | None = None) -> float:
        """Block until a call may be sent; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_for(self._partner, self.partner_limit, now)
                customer_calls = None
                if customer_id is not None:
                    customer_calls = self._customers.get(customer_id)
                    if customer_calls is None:
                        customer_calls = self._customers[customer_id] = collections.deque()
                    wait = max(wait, self._wait_for(customer_calls, self.customer_limit, now))
                if wait <= 0:
                    self._partner.append(now)
                    if customer_calls is not None:
                        customer_calls.append(now)
                    self._forget_idle_customers(now)
                    self.waited_seconds += waited
                    return waited
            self._sleep(wait)
            waited += wait

    def _forget_idle_customers(self, now: float) -> None:
        if len(self._customers) > 256:
            for key in [k for k, calls in self._customers.items() if not calls or calls[-1] <= now - self.window]:
                del self._customers[key]

    def in_window(self, customer_id: str | None = None) -> int:
        with self._lock:
            calls = self._partner if customer_id is None else self._customers.get(customer_id, collections.deque())
            self._prune(calls, self._clock())
            return len(calls)


class _Conflict(Exception):
    """Another process changed the slice row between our read and our write."""


class SharedCallBudget:
    """A :class:`CallBudget` (per process, per customer) plus a partner-tenant budget shared by
    every process through Table Storage. Same interface as ``CallBudget`` for the client:
    ``acquire(customer_id)`` blocks until a call may be sent and returns the seconds waited.

    ``table`` is an ``azure.data.tables.TableClient`` or a zero-argument callable returning one
    (resolved on first use, so creating the table happens under the storage-failure fallback).
    """

    def __init__(
        self,
        table: Any,
        scope: str,
        *,
        limit: int,
        local: CallBudget | None = None,
        window: float = 60.0,
        slices: int = 60,
        block: int = DEFAULT_LEASE_BLOCK,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        retry_after_failure: float = 60.0,
        retention: float = 600.0,
        cleanup_every: float = 600.0,
        storage_options: dict[str, Any] | None = None,
        rng: random.Random | None = None,
    ):
        if limit < 1 or slices < 1 or block < 1 or window <= 0:
            raise ValueError("shared call budget: limit, slices and block must be >= 1 and window > 0")
        self._table_source = table
        self._table: Any = None if callable(table) and not hasattr(table, "query_entities") else table
        self.scope = scope
        self.partition_key = escape_key(scope)
        self.limit = limit
        self.local = local or CallBudget(partner_limit=limit, window=window, sleep=sleep)
        self.window = window
        self.slices = slices
        self.slice_seconds = window / slices
        # a few leases per slice at full rate, never more than the limit allows in one lease
        self.block = max(1, min(block, limit // (2 * (slices + 1)) or 1))
        self._clock = clock
        self._sleep = sleep
        self._retry_after_failure = retry_after_failure
        self._retention = retention
        self._cleanup_every = cleanup_every
        self._options = dict(STORAGE_CALL_OPTIONS if storage_options is None else storage_options)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._lease_slice: int | None = None
        self._lease_left = 0
        self._unsent: tuple[int, int] | None = None  # (slice, calls) leased there and never sent
        self._lease_size = 0
        self._taken_slice: int | None = None
        self._taken = 0  # calls this process took in _taken_slice
        self._degraded_until: float | None = None
        self._warned = False
        self._last_cleanup: float | None = None
        # counters (read by tests and benchmarks)
        self.leases = 0
        self.leased_calls = 0
        self.conflicts = 0
        self.returned_calls = 0
        self.storage_failures = 0
        self.shared_wait_s = 0.0

    # -- the CallBudget interface ------------------------------------------------------------

    @property
    def partner_limit(self) -> int:
        return self.local.partner_limit

    @property
    def customer_limit(self) -> int:
        return self.local.customer_limit

    @property
    def waited_seconds(self) -> float:
        return self.local.waited_seconds + self.shared_wait_s

    def in_window(self, customer_id: str | None = None) -> int:
        """Calls this process sent in the local sliding window (as ``CallBudget.in_window``)."""
        return self.local.in_window(customer_id)

    @property
    def degraded(self) -> bool:
        """True while the table is unreachable and only the in-process budget applies."""
        return self._degraded_until is not None

    def acquire(self, customer_id: str | None = None) -> float:
        """Block until a call may be sent (in-process limits first, then a shared lease, taken
        last so that the leased call is sent in its slice); returns the seconds spent waiting."""
        waited = self.local.acquire(customer_id)
        shared = self._take()
        return waited + shared

    # -- leasing -----------------------------------------------------------------------------

    def _slice_of(self, now: float) -> int:
        return math.floor(now / self.slice_seconds)

    def _row_key(self, slice_index: int) -> str:
        return f"{max(0, round(slice_index * self.slice_seconds * 1000)):015d}"

    def _slice_of_key(self, row_key: str) -> int:
        return round(int(row_key) / 1000 / self.slice_seconds)

    def _take(self) -> float:
        waited = 0.0
        conflicts = 0
        while True:
            with self._lock:
                now = self._clock()
                current = self._slice_of(now)
                if self._lease_slice == current and self._lease_left > 0:
                    self._lease_left -= 1
                    self._count_taken(current)
                    break
                if self._degraded_until is not None:
                    if now < self._degraded_until:
                        break  # storage is down: the in-process budget alone applies
                    self._degraded_until = None  # try the table again
                if self._lease_left > 0 and self._lease_slice is not None:  # the slice ended with calls left
                    self._unsent, self._lease_left = (self._lease_slice, self._lease_left), 0
                try:
                    granted, wait = self._lease(current, now, self._next_lease_size(current))
                except _Conflict:
                    granted, wait = 0, None
                except Exception as exc:  # noqa: BLE001 - any storage failure: fall back, never stop the sync
                    self._fail(exc, now)
                    break
                if granted and self._slice_of(self._clock()) != current:
                    self._unsent = (current, granted)  # the round trip outlived the slice: given back next time
                    continue
                if granted:
                    if self._warned:
                        log.info("shared call budget for %s reachable again", self.scope)
                        self._warned = False
                    self._lease_slice, self._lease_left, self._lease_size = current, granted - 1, granted
                    self._count_taken(current)
                    self._maybe_cleanup(current, now)
                    break
                if wait is None:  # lost a race: re-read at once, then with a little jitter
                    self.conflicts += 1
                    conflicts += 1
                    if conflicts < 3:
                        continue
                    wait = self._rng.uniform(0, min(0.05 * conflicts, self.slice_seconds / 10))
                else:
                    conflicts = 0
            self._sleep(wait)
            waited += wait
        if waited:
            with self._lock:
                self.shared_wait_s += waited
        return waited

    def _count_taken(self, current: int) -> None:
        if self._taken_slice != current:
            self._taken_slice, self._taken = current, 0
        self._taken += 1

    def _next_lease_size(self, current: int) -> int:
        """Slow start, so that a process sending a call now and then does not lease (and lose) a
        whole block per slice: double the lease while a slice's leases run out, start a new slice
        with what this process took in the one before."""
        if self._lease_slice == current:
            return min(self.block, 2 * max(1, self._lease_size))
        previous = self._taken if self._taken_slice == current - 1 else 0
        return min(self.block, max(1, previous))

    def _table_client(self) -> Any:
        if self._table is None:
            self._table = self._table_source()
        return self._table

    def _lease(self, current: int, now: float, size: int) -> tuple[int, float | None]:
        """One read of the span's rows and one conditional write. Returns (calls granted, seconds
        to wait when none); raises _Conflict when another process wrote first."""
        table = self._table_client()
        first = current - self.slices
        rows = table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo",
            parameters={"pk": self.partition_key, "lo": self._row_key(first)},
            **self._options,
        )
        counts: dict[int, int] = {}
        mine: Any = None
        for row in rows:
            index = self._slice_of_key(row["RowKey"])
            if self._unsent is not None and index == self._unsent[0]:
                row = self._give_back(table, row, self._unsent[1])
            counts[index] = counts.get(index, 0) + int(row.get("granted") or 0)
            if index == current:
                mine = row
        if self._unsent is not None and self._unsent[0] < first:
            self._unsent = None  # its slice left the span: nothing to give back any more
        room = self.limit - sum(counts.values())  # rows from clocks ahead of ours count too (safe side)
        if room <= 0:
            return 0, self._wait_for_room(counts, current, now)
        take = min(size, room)
        entity = {
            "PartitionKey": self.partition_key,
            "RowKey": self._row_key(current),
            "starts_at": datetime.fromtimestamp(current * self.slice_seconds, timezone.utc),
        }
        try:
            if mine is None:
                table.create_entity({**entity, "granted": take}, **self._options)
            else:
                table.update_entity(
                    {**entity, "granted": int(mine.get("granted") or 0) + take},
                    mode=UpdateMode.REPLACE, etag=mine.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified, **self._options,
                )
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise _Conflict() from exc
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                raise _Conflict() from exc
            raise
        self.leases += 1
        self.leased_calls += take
        return take, None

    def _give_back(self, table: Any, row: Any, unsent: int) -> Any:
        """Calls leased in an earlier slice and never sent leave its row's count (they never
        reached Partner Center), so the span's room is what was really sent; a 412 means another
        process wrote the row first (re-read: raises _Conflict). Returns the row as it stands."""
        entity = {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "starts_at": row.get("starts_at"),
                  "granted": max(0, int(row.get("granted") or 0) - unsent)}
        try:
            table.update_entity(entity, mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified, **self._options)
        except (ResourceModifiedError, HttpResponseError) as exc:
            if isinstance(exc, ResourceModifiedError) or exc.status_code in (409, 412):
                raise _Conflict() from exc
            raise
        self._unsent = None
        self.returned_calls += unsent
        return entity

    def _wait_for_room(self, counts: dict[int, int], current: int, now: float) -> float:
        """Seconds until the first slice whose span has room for one call."""
        for ahead in range(1, self.slices + 2):
            target = current + ahead
            used = sum(n for index, n in counts.items() if index >= target - self.slices)
            if used < self.limit:
                return max(0.0, target * self.slice_seconds - now) + 1e-3
        # only rows dated ahead of our clock fill the span: wait one slice and look again
        return self.slice_seconds

    def _fail(self, exc: BaseException, now: float) -> None:
        self.storage_failures += 1
        self._degraded_until = now + self._retry_after_failure
        self._lease_slice, self._lease_left = None, 0
        if not self._warned:
            self._warned = True
            log.warning(
                "shared call budget for %s unavailable (%s: %s); using this process's budget only until "
                "the table answers again", self.scope, type(exc).__name__, str(exc)[:200],
                extra={"scope": self.scope},
            )

    def _maybe_cleanup(self, current: int, now: float) -> None:
        """Delete this scope's rows older than ``retention``; failures are ignored (next time)."""
        if self._last_cleanup is not None and now - self._last_cleanup < self._cleanup_every:
            return
        self._last_cleanup = now
        horizon = self._row_key(current - max(self.slices + 1, math.ceil(self._retention / self.slice_seconds)))
        try:
            table = self._table_client()
            old = [
                {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}
                for row in table.query_entities(
                    "PartitionKey eq @pk and RowKey lt @hi",
                    parameters={"pk": self.partition_key, "hi": horizon},
                    select=["PartitionKey", "RowKey"], **self._options,
                )
            ]
            for start in range(0, len(old), 100):
                table.submit_transaction([("delete", row) for row in old[start:start + 100]], **self._options)
        except Exception as exc:  # noqa: BLE001 - housekeeping only
            log.debug("call budget cleanup skipped: %s", exc)


__all__ = ["CALL_BUDGET_TABLE", "DEFAULT_CALLS_PER_MINUTE", "CallBudget", "SharedCallBudget", "budget_scope"]
