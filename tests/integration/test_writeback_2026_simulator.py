"""Write-back under the 2026 rules against Azurite and the simulator (issue 11): end of term
through renewal on the simulator clock, the 24-hour trap, EST only cancel, one property per
PATCH with a pending operation, order per subscription, scheduled changes, preview, attestation.

The service's ``sleep`` advances the simulator clock, so backoff and polling pass simulated time.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest

from devservices import register_and_consent
from shared.clock import parse_iso
from sync.engine import summarize
from sync.writeback.alerts import ALERTS_TABLE, end_of_term_findings
from sync.writeback.horizon import agreement_status, renewals
from sync.writeback.service import ApplyFailed, WritebackService
from tests.support import simulator_runtime, started_simulator

PROVIDER_ID = "wb26-partner"
SIM_RATE = 100_000
PATCH_KEY = "PATCH /v1/customers/{id}/subscriptions/{id}"


@pytest.fixture(scope="module")
def sim():
    yield from started_simulator(customers=3, subscriptions_per_customer=2, nce_fraction=1.0,
                                 rate_limit_per_minute=SIM_RATE)


@pytest.fixture
def rt(storage, sim):
    yield from simulator_runtime(sim, storage)


class World:
    def __init__(self, rt, sim):
        outcome = register_and_consent(rt, sim, PROVIDER_ID)
        assert outcome.succeeded, outcome.message
        self.rt, self.sim = rt, sim
        self.provider = rt.providers.get_provider(PROVIDER_ID)
        services = rt.derive(calls_per_minute=SIM_RATE)
        self.sync = services.sync
        self.customer = sim.control.customers()[0]["id"]
        self.service = WritebackService(
            log_store=services.writeback.log_store, tables=rt.tables, providers=rt.providers, queues=rt.queues,
            clock=self.now, sleep=lambda seconds: sim.control.advance_clock(seconds=seconds),
            client_factory=lambda provider, record: services.clients.partner_center(provider).bind(
                correlation_id=record.correlation_id))
        self.counter = 0

    def now(self) -> dt.datetime:
        return parse_iso(self.sim.control.now())

    def sync_customer(self, customer: str | None = None) -> dict:
        return summarize(self.sync.sync_customer(self.provider, customer or self.customer))

    def truth(self, sid: str, customer: str | None = None) -> dict:
        return next(s for s in self.sim.control.subscriptions(customer or self.customer) if s["id"] == sid)

    def new(self, **fields) -> str:
        """A new-commerce licence subscription (the factory's random product could be software)."""
        fields = {"software": False, "status": "active", **fields}
        return self.sim.control.add_subscription(self.customer, nce=True, **fields)["id"]

    def deliver(self, operation: str, sid: str | None = None, key: str | None = None, customer: str | None = None,
                **params):
        self.counter += 1
        body = {"idempotencyKey": key or f"k{self.counter}", "provider": PROVIDER_ID,
                "customer": customer or self.customer, "operation": operation, **params}
        if sid:
            body["subscription"] = sid
        return self.service.handle_message(json.dumps(body).encode(), message_id=f"m{self.counter}")

    def calls(self, key: str = PATCH_KEY) -> int:
        return self.sim.control.calls().get(key, {}).get("count", 0)


@pytest.fixture
def world(rt, sim):
    sim.control.set_settings(pending_operation_seconds=0, est_conversion_hours=6)
    return World(rt, sim)


def test_each_end_of_term_lands_at_renewal_and_none_ends_in_est_unless_chosen(world):
    renew = world.new(ends_in_days=5, end_of_term="none", autoRenewEnabled=False, quantity=6)
    cancel = world.new(ends_in_days=5, end_of_term="renew", quantity=3)
    est = world.new(ends_in_days=5, end_of_term="renew", quantity=2)
    # nobody chooses its end of term (bought recently: eligible for EST)
    trapped = world.new(ends_in_days=5, end_of_term="none", autoRenewEnabled=False, quantity=1, days_ago=20)
    records = {
        renew: world.deliver("subscription.endOfTerm", renew, action="renew", nextTerm={"quantity": 4}),
        cancel: world.deliver("subscription.endOfTerm", cancel, action="cancel"),
        est: world.deliver("subscription.autoRenew", est, autoRenewEnabled=False, action="extendedServiceTerm"),
    }
    assert {sid: r.state for sid, r in records.items()} == dict.fromkeys(records, "succeeded"), \
        [r.reason for r in records.values()]
    assert world.truth(cancel)["scheduledActions"][0]["actionType"] == "Cancel"
    # auto-renew off alone is refused before anything is sent
    refused = world.deliver("subscription.autoRenew", trapped, autoRenewEnabled=False)
    assert refused.state == "rejected" and "Extended Service Term" in refused.reason

    world.sim.control.advance_clock(days=1, seconds=60)  # past the 24-hour settling time (trap: 6 h)
    report = world.service.run_timer()
    assert {report.verified[r.idempotency_key] for r in records.values()} == {"held"}

    world.sim.control.advance_clock(days=5)  # past the term end: the simulator renews
    truth = {sid: world.truth(sid) for sid in (renew, cancel, est, trapped)}
    assert truth[renew]["status"] == "active" and truth[renew]["quantity"] == 4
    assert not truth[renew]["isExtendedServiceTerm"]
    assert truth[cancel]["status"] == "expired" and not truth[cancel]["isExtendedServiceTerm"]
    assert truth[est]["isExtendedServiceTerm"] is True
    assert truth[trapped]["isExtendedServiceTerm"] is True  # not chosen: listed below
    world.sync_customer()
    chosen_est = {est}
    for sub in world.sim.control.subscriptions(world.customer):
        if sub["id"] in records:
            assert sub["isExtendedServiceTerm"] == (sub["id"] in chosen_est), sub["id"]
    findings = end_of_term_findings(world.rt.tables, PROVIDER_ID, world.now)
    listed = {f["subscription"] for f in findings if f["kind"] == "est_without_choice"}
    assert trapped in listed and not listed & set(records)
    world.service.run_timer()
    alerts = list(world.rt.tables.table(ALERTS_TABLE).list_entities())
    assert any(a["subscription_id"] == trapped and a["kind"] == "est_without_choice" for a in alerts)


def test_drift_after_the_settling_time_is_reported(world):
    sid = world.new(ends_in_days=40, end_of_term="renew")
    record = world.deliver("subscription.endOfTerm", sid, action="cancel")
    assert record.state == "succeeded", record.reason
    world.sim.control.est_backfill([sid])  # Microsoft's backfill moves it anyway
    world.sim.control.update_subscription(world.customer, sid, autoRenewEnabled=False)
    world.sim.control.advance_clock(days=1, seconds=60)
    world.service.run_timer()
    verification = world.service.find_record(PROVIDER_ID, record.idempotency_key).verification
    assert verification["checkedAt"] and verification["state"] in ("held", "drifted")
    if verification["state"] == "drifted":
        assert "cancel was chosen" in verification["drift"]


def test_one_property_per_patch_and_a_pending_operation_is_retried_with_backoff(world):
    world.sim.control.set_settings(pending_operation_seconds=20)
    sid = world.new(ends_in_days=60, end_of_term="none", autoRenewEnabled=False, quantity=5)
    world.sim.control.reset_calls()
    record = world.deliver("subscription.endOfTerm", sid, action="renew",
                           nextTerm={"quantity": 9, "billingCycle": "monthly"})
    assert record.state == "succeeded", record.reason
    statuses = world.sim.control.calls()[PATCH_KEY]["statuses"]
    assert statuses.get("409", 0) >= 1 and statuses["200"] == 2  # two steps, the second waited
    assert "400" not in statuses  # never two properties in one PATCH (2000), never auto-renew off alone
    truth = world.truth(sid)
    assert truth["autoRenewEnabled"] and truth["scheduledNextTermInstructions"]["quantity"] == 9


def test_est_allows_only_cancel_and_software_no_seat_reduction(world):
    in_est = world.new(extended_service_term=True, end_of_term="none", autoRenewEnabled=False)
    refused = world.deliver("subscription.friendlyName", in_est, friendlyName="x")
    assert (refused.state, refused.error_code) == ("rejected", "900279")
    world.service.dismiss(refused.idempotency_key)
    assert world.deliver("subscription.cancel", in_est).state == "succeeded"
    software = world.new(software=True, quantity=5)
    world.sync_customer()
    answer = world.service.preview({"idempotencyKey": "p", "provider": PROVIDER_ID, "customer": world.customer,
                                    "operation": "subscription.quantity", "subscription": software, "quantity": 3})
    assert answer["allowed"] is False and answer["when"] == "never" and "software" in answer["reason"]


def test_order_blocked_by_a_refusal_until_dismissed_and_the_list_shows_it(world):
    sid = world.new(days_ago=40, quantity=8, end_of_term="renew", ends_in_days=100)  # past its cancellation window
    world.sim.control.reset_calls()
    first = world.deliver("subscription.quantity", sid, key="o1", quantity=2)
    assert first.state == "rejected" and first.error_code == "800090"
    second = world.deliver("subscription.friendlyName", sid, key="o2", friendlyName="Finance")
    assert (second.state, second.blocked_by) == ("blocked", "o1") and world.calls() == 0
    page = world.service.list_records(PROVIDER_ID, __import__("sync.writeback.queries", fromlist=["x"])
                                      .WritebackFilter(subscription_id=sid))
    item = next(i for i in page["items"] if i["key"] == "o2")
    assert {"key", "provider", "customer", "subscription", "operation", "state", "blockedBy", "error",
            "submittedAt", "updatedAt"} <= set(item) and item["blockedBy"] == "o1" and page["next"] is None
    world.service.dismiss("o1")
    again = world.deliver("subscription.friendlyName", sid, key="o2", friendlyName="Finance")
    assert again.state == "succeeded" and world.truth(sid)["friendlyName"] == "Finance"


def test_preview_of_a_refused_reduction_calls_no_write_api(world):
    sid = world.new(days_ago=40, quantity=8, end_of_term="renew", ends_in_days=100)
    world.sim.control.reset_calls()
    answer = world.service.preview({"idempotencyKey": "pv", "provider": PROVIDER_ID, "customer": world.customer,
                                    "operation": "subscription.quantity", "subscription": sid, "quantity": 2})
    assert answer["allowed"] is False and answer["when"] == "atRenewal" and answer["dates"]["commitmentEndDate"]
    assert world.calls() == 0 and world.service.find_record(PROVIDER_ID, "pv") is None
    scheduled = world.deliver("subscription.quantity", sid, quantity=2, atRenewal=True)
    assert scheduled.state == "succeeded" and world.truth(sid)["scheduledNextTermInstructions"]["quantity"] == 2


def test_a_scheduled_change_waits_for_its_date_and_the_timer_applies_it(world):
    sid = world.new(quantity=3, end_of_term="renew", ends_in_days=100)
    due = (world.now() + dt.timedelta(days=2)).date().isoformat()
    submitted = world.service.submit({"idempotencyKey": "s1", "provider": PROVIDER_ID, "customer": world.customer,
                                      "operation": "subscription.quantity", "subscription": sid, "quantity": 5,
                                      "effectiveDate": due})
    assert submitted.record.state == "scheduled" and not submitted.queued
    assert world.service.run_timer().applied == [] and world.truth(sid)["quantity"] == 3
    world.sim.control.advance_clock(days=3)
    assert world.service.run_timer().applied == ["s1"]
    done = world.service.find_record(PROVIDER_ID, "s1")
    assert done.state == "succeeded" and world.truth(sid)["quantity"] == 5, done.reason


def test_a_mid_term_change_reports_the_scheduled_changes_it_deleted(world):
    sid = world.new(quantity=3, end_of_term="renew", ends_in_days=100)
    assert world.deliver("subscription.quantity", sid, quantity=2, atRenewal=True).state == "succeeded"
    record = world.deliver("subscription.quantity", sid, quantity=6)
    assert record.state == "succeeded" and "deleted the scheduled next-term changes" in record.warnings[0]


def test_attestation_from_link_to_agreement_and_the_status_view(world):
    customer = world.sim.control.request("GET", "/truth/attestations")["customersNeedingAttestation"][0]
    world.sync.sync_provider_customers(world.provider, enqueue=False)
    world.sync_customer(customer)
    before = {s["customer"]: s for s in agreement_status(world.rt.tables, PROVIDER_ID)}
    contact = {"firstName": "Tania", "lastName": "Carr", "email": "tania@example.com"}
    record = world.deliver("agreement.confirm", customer=customer, key="a1", contact=contact)
    assert record.state == "waiting" and record.attestation["state"] == "link_sent", record.reason
    assert record.attestation["link"].startswith("https://cdn.partner.microsoft.com/mca/?attestationid=")
    world.service.run_timer()
    assert world.service.find_record(PROVIDER_ID, "a1").state == "waiting"
    world.sim.control.accept_attestation(record.attestation["attestationId"])
    world.service.run_timer()
    done = world.service.find_record(PROVIDER_ID, "a1")
    assert done.state == "succeeded" and done.attestation["state"] == "agreement_created", done.reason
    assert [h["state"] for h in done.attestation["history"]][-3:] == ["link_sent", "accepted", "agreement_created"]
    world.sync_customer(customer)
    after = {s["customer"]: s for s in agreement_status(world.rt.tables, PROVIDER_ID)}
    assert after[customer]["blocked"] is False and after[customer]["state"] == "agreement_created"
    assert customer not in before or before[customer]["blocked"]


def test_an_expired_attestation_link_is_recorded_and_a_retry_sends_a_new_one(world):
    customer = world.sim.control.customers()[1]["id"]
    contact = {"firstName": "Ada", "lastName": "Byron", "email": "ada@example.com"}
    record = world.deliver("agreement.confirm", customer=customer, key="a2", contact=contact)
    assert record.state == "waiting", record.reason
    world.sim.control.expire_attestation(record.attestation["attestationId"])
    world.service.run_timer()
    expired = world.service.find_record(PROVIDER_ID, "a2")
    assert (expired.state, expired.attestation["state"]) == ("rejected", "expired")
    retried = world.service.apply(world.service.retry("a2"))
    assert retried.state == "waiting" and retried.attestation["attestationId"] != record.attestation["attestationId"]


def test_renewals_horizon_hides_unchanged_monthly_terms(world):
    soon = world.new(ends_in_days=10, end_of_term="cancel")
    monthly = world.new(ends_in_days=10, end_of_term="renew", term_duration="P1M")
    world.sync_customer()
    shown = {r["id"]: r for r in renewals(world.rt.tables, PROVIDER_ID, days=30, now=world.now())}
    assert shown[soon]["endOfTerm"] == "cancel" and shown[soon]["lastReductionDay"]
    assert "nothing follows" in shown[soon]["priceBasis"] and monthly not in shown
    every = {r["id"] for r in renewals(world.rt.tables, PROVIDER_ID, days=30, now=world.now(), include_all=True)}
    assert monthly in every


def test_busy_until_the_last_delivery_is_failed_and_retried_later(world):
    sid = world.new(quantity=3, end_of_term="renew", ends_in_days=100)
    world.sim.control.set_faults(fault_try_again_later=1.0)
    try:
        with pytest.raises(ApplyFailed):
            world.deliver("subscription.quantity", sid, key="b1", quantity=4)
    finally:
        world.sim.control.set_faults(fault_try_again_later=0)
    failed = world.service.find_record(PROVIDER_ID, "b1")
    assert failed.state == "failed" and "refused the change 5 times" in failed.reason
    assert world.truth(sid)["quantity"] == 3
    world.service.retry("b1")
    assert world.deliver("subscription.quantity", sid, key="b1", quantity=4).state == "succeeded"
