"""SharedCallBudget against a real Azurite: two 'instances' leasing for one partner tenant."""
from __future__ import annotations

import threading
import time

from shared.call_budget import CALL_BUDGET_TABLE, CallBudget, SharedCallBudget
from shared.tables import TableStore
from tests.support import STORAGE_TEST_OPTIONS

SPEED = 60.0  # one simulated minute per real second
# 10-second slices: sped up 60 times, Azurite's round trip is still a small part of a slice (with
# the default 3-second slices it would not be, and leases would be lost at slice ends)
SLICES = 6
LIMIT = 100


class FastClock:
    """Wall-clock-like seconds that run SPEED times faster than real time, shared by the instances."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.start, self.origin = start, time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.origin) * SPEED

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds / SPEED)


def test_two_instances_share_one_budget(storage):
    clock = FastClock()
    end = clock() + 180  # three simulated minutes
    sent: list[float] = []
    sent_lock = threading.Lock()
    instances = []
    for _ in range(2):  # each "instance" has its own table client and its own in-process budget
        table = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS).table(CALL_BUDGET_TABLE).client
        local = CallBudget(partner_limit=LIMIT, clock=clock, sleep=clock.sleep)
        instances.append(SharedCallBudget(table, "72f988bf-0000-4000-8000-000000000001", limit=LIMIT,
                                          local=local, slices=SLICES, clock=clock, sleep=clock.sleep))

    def worker(budget):
        while True:
            budget.acquire()
            now = clock()
            if now >= end:
                return
            with sent_lock:
                sent.append(now)

    threads = [threading.Thread(target=worker, args=(b,)) for b in instances for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert all(b.leases > 0 and not b.degraded for b in instances)
    sent.sort()
    # each minute-aligned window, and every 60-second interval, stays within the limit
    first = sent[0]
    for minute in range(3):
        assert sum(1 for t in sent if first + 60 * minute <= t < first + 60 * (minute + 1)) <= LIMIT
    busiest = max(sum(1 for u in sent[i:i + LIMIT + 1] if u < t + 60) for i, t in enumerate(sent))
    assert busiest <= LIMIT
    # ... and close to it: a whole limit at once, then 6 of every 7 slices' worth
    assert len(sent) >= LIMIT * (1 + 2 * 6 / 7) * 0.8
    leased = sum(b.leased_calls for b in instances)
    assert len(sent) <= leased


def test_sync_service_uses_the_shared_budget(runtime):
    budget = runtime.sync.clients.budget_for("72F988BF-0000-4000-8000-000000000002")
    assert isinstance(budget, SharedCallBudget) and budget.scope == "72f988bf-0000-4000-8000-000000000002"
    budget.acquire()
    rows = list(runtime.tables.table(CALL_BUDGET_TABLE).list_entities(partition_key=budget.partition_key))
    assert [r["granted"] for r in rows] == [1]  # leases start small
    assert not isinstance(runtime.derive(shared_budget=False).clients.budget_for("t"), SharedCallBudget)
