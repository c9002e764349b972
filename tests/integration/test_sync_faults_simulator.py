"""Issue 9 against Azurite and the simulator: broken 2xx answers (6), upper-case ids (7) and a
40,000-character company name (9), each through the real sync engine."""
from __future__ import annotations

import pytest

from shared.tables import escape_key
from shared.transport import RetryPolicy
from sync.runs import RunOutcome, list_runs
from sync.streams import CUSTOMER_STREAMS, CUSTOMERS
from tests.integration.test_sync_simulator import SIM_RATE, consented_provider, stored
from tests.support import simulator_runtime

PROVIDER_ID = "sim-partner"
CUSTOMER_COUNT = 12
# a short retry policy: a broken answer is retried, and the test need not wait long for the failure
QUICK = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05, retry_after_cap=1.0)


@pytest.fixture(scope="module")
def sim():
    from simulator.testing import start_simulator

    with start_simulator(customers=CUSTOMER_COUNT, subscriptions_per_customer=2, rate_limit_per_minute=SIM_RATE) as running:
        yield running


@pytest.fixture
def rt(storage, sim):
    try:
        yield from simulator_runtime(sim, storage)
    finally:
        sim.control.set_faults(fault_malformed=0)


def live(runtime, table):
    return [r for r in stored(runtime, table) if not r.get("removed")]


def live_counts(runtime):
    return {name: len(live(runtime, name)) for name in ("customers", "subscriptions", "agreements")}


def test_broken_2xx_answers_tombstone_nothing_and_the_runs_are_recorded_failed(rt, sim):
    provider = consented_provider(rt, sim)
    service = rt.derive(calls_per_minute=SIM_RATE, client_options={"retry": QUICK}).sync
    runs = service.sync_provider_now(provider, workers=4)
    assert all(r.outcome == RunOutcome.SUCCEEDED for r in runs)
    before = live_counts(rt)
    assert before["customers"] >= CUSTOMER_COUNT and before["subscriptions"] > 0

    sim.control.set_faults(fault_malformed=1.0)  # every Partner Center GET: error, HTML, empty or no items
    broken = service.sync_provider_now(provider, workers=4)
    assert [r.outcome for r in broken] == [RunOutcome.FAILED]  # the customers run failed; nothing fanned out
    some_customer = live(rt, "customers")[0]["id"]
    child_runs = service.sync_customer(provider, some_customer)
    assert {r.outcome for r in child_runs} == {RunOutcome.FAILED}
    assert live_counts(rt) == before  # 0 rows wrongly tombstoned
    recorded = {r["run_id"]: r for r in list_runs(rt.tables, PROVIDER_ID)}
    for run in (*broken, *child_runs):
        assert recorded[run.run_id]["outcome"] == "failed" and recorded[run.run_id]["rows_removed"] == 0

    sim.control.set_faults(fault_malformed=0)
    again = service.sync_provider_now(provider, workers=4)
    assert all(r.outcome == RunOutcome.SUCCEEDED for r in again) and sum(r.rows_removed for r in again) == 0


def test_an_upper_case_customer_id_maps_to_one_partition_the_full_sync_reconciles(rt, sim):
    provider = consented_provider(rt, sim)
    upper = sim.control.add_customer(companyName="Upper Case Ltd", upperCaseId=True)["id"]
    assert upper == upper.upper() and upper != upper.lower()
    sim.control.add_subscription(upper.lower())
    service = rt.derive(calls_per_minute=SIM_RATE).sync
    service.sync_provider_now(provider, workers=4)
    customer_keys = {r["RowKey"] for r in live(rt, "customers")}
    assert upper.lower() in customer_keys and upper not in customer_keys
    partition = escape_key(f"{PROVIDER_ID}|{upper.lower()}")
    subs = list(rt.tables.table("subscriptions").list_entities(partition_key=partition))
    assert len(subs) == 1

    # the sync-customer path with the id as Partner Center spells it: the same partition, no second one
    service.sync_customer(provider, upper)
    assert not list(rt.tables.table("subscriptions").list_entities(partition_key=escape_key(f"{PROVIDER_ID}|{upper}")))

    # deleted upstream: the full sync tombstones the customer and its children (no zombie rows)
    sim.control.delete_customer(upper)
    runs = service.sync_provider_now(provider, streams=[CUSTOMERS])
    assert runs[0].rows_removed == 1 and runs[0].children_removed >= 1
    for child in CUSTOMER_STREAMS:
        rows = rt.tables.table(child.table).list_entities(partition_key=child.partition_key(PROVIDER_ID, upper))
        assert all(r["removed"] for r in rows)


def test_a_40000_character_company_name_is_truncated_and_every_customer_stored(rt, sim):
    provider = consented_provider(rt, sim)
    long_name = "N" * 40_000
    added = sim.control.add_customer(companyName=long_name)["id"]
    runs = rt.derive(calls_per_minute=SIM_RATE).sync.sync_provider_now(provider, streams=[CUSTOMERS])
    assert runs[0].outcome == RunOutcome.SUCCEEDED and runs[0].rows_skipped == 0
    customers = {r["id"]: r for r in live(rt, "customers")}
    assert len(customers) == len(sim.control.customers())
    row = customers[added]
    assert row["companyName_truncated"] is True and long_name.startswith(row["companyName"])
    assert sum(1 for r in customers.values() if r.get("companyName_truncated")) == 1
