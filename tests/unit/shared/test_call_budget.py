"""SharedCallBudget with a fake table client that enforces etag semantics: concurrent leasers never
exceed the limit, slices roll over, leases die with their slice, storage failures fall back."""
from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ServiceRequestError

from shared.call_budget import CallBudget, SharedCallBudget, budget_scope


class Entity(dict):
    def __init__(self, data, etag):
        super().__init__(data)
        self.metadata = {"etag": etag}


class FakeBudgetTable:
    """The part of azure.data.tables.TableClient the budget uses, with the service's etag rules
    (412 on a stale etag, 409 on a second create) and a pause between a read and the writes that
    follow, so that threads really race."""

    def __init__(self, *, pause: float = 0.0):
        self.rows: dict[tuple[str, str], Entity] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)
        self.pause = pause
        self.fail: Exception | None = None
        self.calls = 0
        self.deleted: list[str] = []

    def _check(self):
        self.calls += 1
        if self.fail is not None:
            raise self.fail

    def query_entities(self, query_filter, *, parameters, select=None, **options):
        self._check()
        pk = parameters["pk"]
        with self._lock:
            if "RowKey ge @lo" in query_filter:
                rows = [Entity(dict(e), e.metadata["etag"]) for (p, r), e in sorted(self.rows.items())
                        if p == pk and r >= parameters["lo"]]
            else:
                rows = [Entity(dict(e), e.metadata["etag"]) for (p, r), e in sorted(self.rows.items())
                        if p == pk and r < parameters["hi"]]
        time.sleep(self.pause)
        return rows

    def create_entity(self, entity, **options):
        self._check()
        key = (entity["PartitionKey"], entity["RowKey"])
        with self._lock:
            if key in self.rows:
                raise ResourceExistsError("EntityAlreadyExists")
            self.rows[key] = Entity(entity, f'W/"{next(self._etags)}"')

    def update_entity(self, entity, *, mode, etag, match_condition, **options):
        self._check()
        assert match_condition is MatchConditions.IfNotModified
        key = (entity["PartitionKey"], entity["RowKey"])
        with self._lock:
            if key not in self.rows or self.rows[key].metadata["etag"] != etag:
                raise ResourceModifiedError("UpdateConditionNotSatisfied")
            self.rows[key] = Entity(entity, f'W/"{next(self._etags)}"')

    def submit_transaction(self, operations, **options):
        self._check()
        with self._lock:
            for verb, entity in operations:
                assert verb == "delete"
                self.rows.pop((entity["PartitionKey"], entity["RowKey"]), None)
                self.deleted.append(entity["RowKey"])

    def granted(self) -> dict[str, int]:
        return {r: e["granted"] for (_, r), e in sorted(self.rows.items())}


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now
        self.slept: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def make_budget(table, clock, *, limit=140, **kwargs):
    local = CallBudget(partner_limit=10_000, clock=clock, sleep=clock.sleep)
    kwargs.setdefault("slices", 6)  # 10-second slices keep the arithmetic below readable
    return SharedCallBudget(table, "tenant-1", limit=limit, local=local, clock=clock, sleep=clock.sleep,
                            rng=__import__("random").Random(1), **kwargs)


def test_scope_keys_are_escaped():
    assert budget_scope("T1") == "T1"
    assert budget_scope("t1", "c/1") == "t1|c%2F1"


def test_leases_blocks_and_waits_for_the_span_to_have_room():
    table, clock = FakeBudgetTable(), FakeClock()
    budget = make_budget(table, clock)  # 140/minute: blocks of up to 10 (a few leases per 10 s slice)
    assert budget.block == 10
    for _ in range(140):
        assert budget.acquire() == 0
    assert budget.leases == 4 + 13  # slow start 1, 2, 4, 8, then 10 at a time (the last one 5)
    assert table.granted() == {"000000001000000": 140}
    waited = budget.acquire()  # the limit is used up: wait for the first slice whose 70 s span is clear
    assert waited == pytest.approx(70, abs=0.01)
    assert clock.now == pytest.approx(1070, abs=0.01)
    assert table.granted()["000000001070000"] == 1  # a new slice after a quiet one starts small


def test_a_quiet_span_gives_the_whole_limit_and_steady_load_is_spread_over_slices():
    table, clock = FakeBudgetTable(), FakeClock()
    budget = make_budget(table, clock)
    sent = []
    while clock.now < 1000 + 300:
        budget.acquire()
        sent.append(clock.now)
        clock.now += 0.05
    # no 60-second interval ever holds more than the limit ...
    assert max(sum(1 for u in sent if t <= u < t + 60) for t in sent) <= 140
    # ... and over five minutes the rate stays close to it (6 of every 7 slices' worth at full load)
    assert len(sent) >= 140 * 5 * 6 / 7 * 0.9


def test_unused_leased_calls_are_given_back_with_the_next_lease():
    table, clock = FakeBudgetTable(), FakeClock()
    budget = make_budget(table, clock)
    for _ in range(4):  # leases of 1, 2 and 4 calls
        budget.acquire()
    clock.now += 10  # next slice: the 3 calls left of the last lease cannot be spent any more ...
    budget.acquire()  # ... so they leave the old slice's count; this slice starts with what the last one used
    assert table.granted() == {"000000001000000": 4, "000000001010000": 4}
    assert (budget.leases, budget.returned_calls) == (4, 3)


def test_a_failed_give_back_leaves_the_calls_counted():
    table, clock = FakeBudgetTable(), FakeClock()
    budget = make_budget(table, clock)
    for _ in range(4):
        budget.acquire()
    clock.now += 10
    table.fail = ServiceRequestError("connection refused")
    budget.acquire()  # storage down: the in-process budget goes on, nothing is given back
    table.fail = None
    assert table.granted() == {"000000001000000": 7} and budget.returned_calls == 0


def test_a_process_sending_now_and_then_leases_little():
    table, clock = FakeBudgetTable(), FakeClock()
    budget = make_budget(table, clock)
    for _ in range(30):  # one call every 20 seconds
        budget.acquire()
        clock.now += 20
    assert set(table.granted().values()) == {1}


def test_concurrent_processes_never_lease_more_than_the_limit():
    """Eight 'processes' (budgets) on one table and a frozen clock: together they get exactly the
    limit, however their reads and conditional writes interleave."""
    table, now = FakeBudgetTable(pause=0.001), 5000.0
    granted = [0] * 8

    class Exhausted(Exception):
        pass

    def sleep(seconds):
        if seconds >= 1:  # waiting for the next slice: this process is done
            raise Exhausted()
        time.sleep(seconds / 10)  # a conflict's jitter

    def worker(i):
        budget = SharedCallBudget(table, "tenant-1", limit=450, local=CallBudget(partner_limit=10_000),
                                  clock=lambda: now, sleep=sleep)
        try:
            while True:
                budget.acquire()
                granted[i] += 1
        except Exhausted:
            pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(granted) == 450 == sum(table.granted().values())
    assert sum(1 for g in granted if g) >= 2  # they really competed


def test_storage_failure_falls_back_to_the_local_budget_and_warns_once(caplog):
    table, clock = FakeBudgetTable(), FakeClock()
    table.fail = ServiceRequestError("connection refused")
    budget = make_budget(table, clock, retry_after_failure=60)
    with caplog.at_level(logging.WARNING, logger="shared.call_budget"):
        for _ in range(200):  # over the shared limit: only the local budget applies now
            assert budget.acquire() == 0
    assert budget.degraded and budget.storage_failures == 1 and table.calls == 1
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    assert budget.in_window() == 200
    table.fail = None
    clock.now += 61  # the table is tried again after the pause and works
    budget.acquire()
    assert not budget.degraded and sum(table.granted().values()) == 1


def test_table_factory_failure_also_falls_back():
    clock = FakeClock()

    def factory():
        raise ServiceRequestError("no storage")

    budget = make_budget(factory, clock)
    assert budget.acquire() == 0 and budget.degraded


def test_old_rows_are_deleted_opportunistically():
    table, clock = FakeBudgetTable(), FakeClock()
    for minute in range(3):  # rows left by an earlier run, long ago
        table.create_entity({"PartitionKey": "tenant-1", "RowKey": f"{(100 + minute * 60) * 1000:015d}", "granted": 5})
    budget = make_budget(table, clock, retention=600, cleanup_every=600)
    budget.acquire()
    assert list(table.granted()) == ["000000001000000"]
    assert len(table.deleted) == 3
