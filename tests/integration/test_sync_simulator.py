"""The sync engine against Azurite and the simulator (200 customers, legacy and NCE subscriptions).

Real adapters only: TableStore/QueuePublisher over Azurite, PartnerCenterClient over HTTPS to the
simulator, App+User tokens from auth's TokenProvider after a real consent (msal auth-code flow
completed through the simulator's sign-in endpoint). The one fake is the expired-consent token
source, which is the point of that test.
"""
from __future__ import annotations

from collections import Counter

import pytest

from devservices import register_and_consent

from shared.errors import ConsentRequired
from shared.tables import escape_key
from shared.transport import RetryPolicy
from sync.engine import SyncService
from sync.runs import RunOutcome, summarize
from tests.support import simulator_runtime, started_simulator

CUSTOMERS = 200
PROVIDER_ID = "sim-partner"
FAST_RETRY = RetryPolicy(max_attempts=8, backoff_base=0.05, backoff_max=1.0, retry_after_cap=2.0)
# The simulator is configured far above Partner Center's real limit so the tests run fast; the
# client's budget is raised to match (its default, 450/minute, would pace 400 calls over a minute).
SIM_RATE = 100_000


@pytest.fixture(scope="module")
def sim():
    yield from started_simulator(customers=CUSTOMERS, subscriptions_per_customer=4, nce_fraction=0.5,
                                 rate_limit_per_minute=SIM_RATE)


@pytest.fixture
def rt(storage, sim):
    yield from simulator_runtime(sim, storage)


def consented_provider(runtime, sim, provider_id: str = PROVIDER_ID):
    """Create a provider and run the real consent flow (sign-in with MFA at the simulator)."""
    outcome = register_and_consent(runtime, sim, provider_id)
    assert outcome.succeeded, outcome.message
    provider = runtime.providers.get_provider(provider_id)
    assert provider.consent_status == "active"
    return provider


def full_sync(service: SyncService, provider, workers: int = 8):
    return service.sync_provider_now(provider, workers=workers)


def stored(runtime, table: str, provider_id: str = PROVIDER_ID) -> list[dict]:
    rows = runtime.tables.table(table).list_entities(
        query="PartitionKey ge @lo and PartitionKey lt @hi",
        parameters={"lo": escape_key(provider_id), "hi": escape_key(provider_id) + "~"},
    )
    return list(rows)


def assert_store_equals_truth(runtime, sim):
    assert_customers_and_subscriptions_equal_truth(runtime, sim)
    truth_agreements = Counter((a["customerId"], a["primaryContact"]["email"]) for a in sim.control.agreements()
                               if a["type"] == "MicrosoftCustomerAgreement")
    agreements = [r for r in stored(runtime, "agreements") if not r.get("removed")]
    assert Counter((r["customer_id"], r["contactEmail"]) for r in agreements) == truth_agreements


def assert_customers_and_subscriptions_equal_truth(runtime, sim):
    truth_customers = {c["id"]: c for c in sim.control.customers()}
    customers = [r for r in stored(runtime, "customers") if not r.get("removed")]
    assert len(customers) == len({r["id"] for r in customers}) == len(truth_customers)
    for row in customers:
        truth = truth_customers[row["id"]]
        assert (row["companyName"], row["domain"], row["tenantId"]) == (
            truth["companyProfile"]["companyName"], truth["companyProfile"]["domain"], truth["companyProfile"]["tenantId"])

    truth_subs = {(s["customerId"], s["id"]): s for s in sim.control.subscriptions()}
    subs = [r for r in stored(runtime, "subscriptions") if not r.get("removed")]
    assert Counter((r["customer_id"], r["id"]) for r in subs) == Counter(truth_subs.keys())  # no duplicates, none missing
    for row in subs:
        truth = truth_subs[(row["customer_id"], row["id"])]
        assert row["quantity"] == truth["quantity"] and row["status"] == truth["status"]
        assert row["offerId"] == truth["offerId"] and row["isNce"] == truth["isNce"]
        assert row["autoRenewEnabled"] == truth["autoRenewEnabled"] and row["etag"] == truth["attributes"]["etag"]
        assert row.get("cancellationAllowedUntilDate") == truth.get("cancellationAllowedUntilDate")
    assert {r["isNce"] for r in subs} == {True, False}  # mixed legacy and NCE


def test_sync_equals_truth_then_a_second_run_writes_nothing_then_only_changes(rt, sim):
    provider = consented_provider(rt, sim)
    service = rt.derive(calls_per_minute=SIM_RATE).sync

    first = summarize(full_sync(service, provider))
    assert first["failed"] == 0 and first["throttled_429"] == 0
    assert_store_equals_truth(rt, sim)

    second = summarize(full_sync(service, provider))
    assert second["failed"] == 0
    assert (second["rows_written"], second["rows_removed"], second["children_removed"]) == (0, 0, 0)

    # upstream changes: 3 subscriptions edited, 1 customer removed
    subs = sim.control.subscriptions()
    removed_customer = subs[-1]["customerId"]
    edited = [s for s in subs if s["customerId"] != removed_customer][:3]
    sim.control.update_subscription(edited[0]["customerId"], edited[0]["id"], quantity=edited[0]["quantity"] + 5)
    sim.control.update_subscription(edited[1]["customerId"], edited[1]["id"], autoRenewEnabled=not edited[1]["autoRenewEnabled"])
    sim.control.update_subscription(edited[2]["customerId"], edited[2]["id"], status="suspended")
    children = len(sim.control.subscriptions(removed_customer)) + sum(
        a["customerId"] == removed_customer and a["type"] == "MicrosoftCustomerAgreement" for a in sim.control.agreements())
    sim.control.delete_customer(removed_customer)

    runs = full_sync(service, provider)
    by_stream = {name: summarize(r for r in runs if r.stream == name) for name in ("customers", "subscriptions", "agreements")}
    assert by_stream["subscriptions"]["rows_written"] == 3 and by_stream["subscriptions"]["rows_removed"] == 0
    assert by_stream["agreements"]["rows_written"] == 0
    assert by_stream["customers"]["rows_written"] == 0 and by_stream["customers"]["rows_removed"] == 1
    # the removed customer's subscriptions and agreements are tombstoned with it (not deleted)
    assert by_stream["customers"]["children_removed"] == children
    assert by_stream["subscriptions"]["runs"] == 2 * (CUSTOMERS - 1) // 2  # one run per live customer
    assert_store_equals_truth(rt, sim)
    gone = [r for r in stored(rt, "subscriptions") if r["customer_id"] == removed_customer]
    assert gone and all(r["removed"] and r["removed_at"] for r in gone)

    records = list(rt.tables.table("syncruns").list_entities(partition_key=PROVIDER_ID))
    assert len(records) == 3 * (1 + 2 * CUSTOMERS) - 2
    assert {r["outcome"] for r in records} == {RunOutcome.SUCCEEDED}


def test_faults_still_converge_to_truth_without_duplicates(rt, sim):
    provider = consented_provider(rt, sim)
    service = rt.derive(calls_per_minute=SIM_RATE, client_options={"retry": FAST_RETRY}).sync
    sim.control.set_faults(fault_5xx=0.10, fault_429=0.05, fault_reset=0.03, fault_truncate=0.02)
    try:
        runs = full_sync(service, provider)
    finally:
        sim.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0)
    totals = summarize(runs)
    assert totals["failed"] == 0, [r.error for r in runs if r.outcome != RunOutcome.SUCCEEDED][:3]
    assert totals["retries"] > 20 and totals["throttled_429"] > 0
    assert_store_equals_truth(rt, sim)


class ExpiredConsent:
    def access_token(self, *, force_refresh: bool = False) -> str:
        raise ConsentRequired(PROVIDER_ID, "expired", "The refresh token has expired due to inactivity (AADSTS700082).")


def test_expired_consent_stops_the_provider_cleanly(rt, sim):
    consented_provider(rt, sim)
    service = rt.derive(token_sources=lambda p: ExpiredConsent()).sync
    sim.control.reset_calls()
    outcomes = service.sync_all_providers()
    assert [(o.provider_id, o.outcome, o.customers_enqueued) for o in outcomes] == [
        (PROVIDER_ID, RunOutcome.CONSENT_REQUIRED, 0)]
    pc_calls = {k: v for k, v in sim.control.calls().items() if "customers" in k or "partner" in k.lower()}
    assert pc_calls == {}
    (record,) = rt.tables.table("syncruns").list_entities(partition_key=PROVIDER_ID)
    assert record["outcome"] == "consent_required" and "AADSTS700082" in record["error"]
    assert stored(rt, "customers") == []


def test_overlapping_runs_on_two_instances_stay_correct(rt, sim):
    """A late timer or a redelivered message can overlap a running sync: the store must still equal
    the truth, with no duplicates, and a following run must find nothing to write."""
    import threading

    provider = consented_provider(rt, sim)
    instances = [rt.derive(calls_per_minute=SIM_RATE).sync for _ in range(2)]
    outcomes: list = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(summarize(full_sync(s, provider, workers=4))))
               for s in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == 2 and all(o["failed"] == 0 for o in outcomes)
    assert_store_equals_truth(rt, sim)
    assert summarize(full_sync(instances[0], provider))["rows_written"] == 0
