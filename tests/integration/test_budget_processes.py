"""One call budget for many processes: four worker processes, each running the sync-customer queue
function with its own Services against the same Azurite and simulator, sweep one provider whose
calls need more than one minute's budget. Together they are never throttled, and their wall time
is the rate limit's bound (ratios and counts only)."""
from __future__ import annotations

import time

from devservices import register_and_consent
from devworkers import QueueWorkers
from shared.call_budget import CALL_BUDGET_TABLE
from tests.support import simulator_runtime

PROVIDER_ID = "budget-partner"
LIMIT = 60  # the simulator's calls per minute
BUDGET = 57  # 95 % of it, shared by every process
CUSTOMERS = 30  # 61 calls: one minute's budget and a few more


def test_four_processes_share_one_budget_through_the_queue(storage):
    from simulator.testing import start_simulator

    sim = start_simulator(customers=CUSTOMERS, subscriptions_per_customer=1, rate_limit_per_minute=LIMIT)
    try:
        for runtime in simulator_runtime(sim, storage):
            runtime = runtime.derive(calls_per_minute=BUDGET)
            assert register_and_consent(runtime, sim, PROVIDER_ID).succeeded
            provider = runtime.providers.get_provider(PROVIDER_ID)
            with QueueWorkers(sim, storage, processes=4, settings={"PCSYNC_CALLS_PER_MINUTE": str(BUDGET)}) as workers:
                time.sleep(3)  # the processes are up and polling
                sim.control.reset_calls()
                started = time.time()
                sweep = runtime.delta.run_full(provider, enqueue=True)
                wall = workers.wait_idle(timeout=600) - started
                reports = workers.stop()
            calls = {k: v for k, v in sim.control.calls().items() if " /v1/" in k}
            total = sum(v["count"] for v in calls.values())
            granted = sorted((int(r["RowKey"]), int(r["granted"]))
                             for r in runtime.tables.table(CALL_BUDGET_TABLE).list_entities())
    finally:
        sim.stop()
    assert sweep.enqueued == CUSTOMERS and total == 1 + 2 * CUSTOMERS
    assert sum(v["throttled"] for v in calls.values()) == 0
    assert len(reports) == 4 and sum(r["handled"] for r in reports) == CUSTOMERS and not any(r["failed"] for r in reports)
    assert sum(1 for r in reports if r["handled"]) >= 2  # the processes really shared the work
    bound = total / LIMIT * 60
    # more than one minute's budget: the processes waited for the window together, no longer than needed
    assert 0.9 <= wall / bound <= 1.1
    # no 61-slice span (every 60-second interval touches at most 61 one-second slices) leased more
    for start, _ in granted:
        assert sum(n for at, n in granted if start <= at < start + 61_000) <= BUDGET
