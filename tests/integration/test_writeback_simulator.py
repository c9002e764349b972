"""Write-back against Azurite and the simulator: real consent, real client, real tables.

Each test syncs one customer first (so local rows exist), applies write-backs through the queue
path (``handle_message``, as the trigger does) and checks three things: the record, the
simulator's ground truth and call counters, and the local row (a following sync writes nothing).
"""
from __future__ import annotations

import datetime as dt
import json

import pytest

from devservices import register_and_consent
from shared.tables import escape_key
from shared.transport import RetryPolicy
from shared.clock import parse_iso as parse_time
from sync.engine import summarize
from sync.writeback.service import CLAIM_LEASE, MAX_DELIVERIES, ApplyFailed, WritebackService
from tests.support import simulator_runtime, started_simulator

PROVIDER_ID = "wb-partner"
SIM_RATE = 100_000
FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, retry_after_cap=0.1)
PATCH_KEY = "PATCH /v1/customers/{id}/subscriptions/{id}"
POST_AGREEMENT_KEY = "POST /v1/customers/{id}/agreements"
POST_ATTESTATION_KEY = "POST /v1/attestations/enhanced"


@pytest.fixture(scope="module")
def sim():
    yield from started_simulator(customers=4, subscriptions_per_customer=3, nce_fraction=0.5,
                                 rate_limit_per_minute=SIM_RATE)


@pytest.fixture
def rt(storage, sim):
    yield from simulator_runtime(sim, storage)


class World:
    """A consented provider, one synced customer, and a write-back service over them."""

    def __init__(self, rt, sim, *, client_options=None, client_wrapper=None):
        outcome = register_and_consent(rt, sim, PROVIDER_ID)
        assert outcome.succeeded, outcome.message
        self.rt, self.sim = rt, sim
        self.provider = rt.providers.get_provider(PROVIDER_ID)
        services = rt.derive(calls_per_minute=SIM_RATE, client_options=client_options or {})
        self.sync = services.sync
        self.customer = sim.control.customers()[0]["id"]
        wrapper = client_wrapper or (lambda client: client)
        writeback = services.writeback
        self.service = WritebackService(
            log_store=writeback.log_store, tables=rt.tables, providers=rt.providers, queues=rt.queues,
            clock=self.sim_now, sleep=lambda s: None,
            client_factory=lambda provider, record: wrapper(
                services.clients.partner_center(provider).bind(correlation_id=record.correlation_id)),
        )
        self.sync_customer()
        self.counter = 0

    def sim_now(self) -> dt.datetime:
        return parse_time(self.sim.control.now())

    def sync_customer(self) -> dict:
        return summarize(self.sync.sync_customer(self.provider, self.customer))

    def truth(self, sid: str) -> dict:
        return next(s for s in self.sim.control.subscriptions(self.customer) if s["id"] == sid)

    def local(self, sid: str) -> dict:
        return self.rt.tables.table("subscriptions").find_entity(escape_key(f"{PROVIDER_ID}|{self.customer}"),
                                                                  escape_key(sid))

    def pick(self, *, nce: bool | None = None, status: str = "active") -> dict:
        return next(s for s in self.sim.control.subscriptions(self.customer)
                    if s["status"] == status and (nce is None or s["isNce"] == nce))

    def new_subscription(self, **fields) -> dict:
        sub = self.sim.control.add_subscription(self.customer, **fields)
        self.sync_customer()
        return sub

    def message(self, operation: str, sid: str | None = None, key: str | None = None, **params) -> bytes:
        self.counter += 1
        body = {"idempotencyKey": key or f"k-{self.counter}-{operation}", "provider": PROVIDER_ID,
                "customer": self.customer, "operation": operation, **params}
        if sid:
            body["subscription"] = sid
        return json.dumps(body).encode()

    def deliver(self, body: bytes, dequeue_count: int = 1):
        return self.service.handle_message(body, message_id=f"m-{self.counter}", dequeue_count=dequeue_count)

    def calls(self, key: str) -> int:
        return self.sim.control.calls().get(key, {}).get("count", 0)


@pytest.fixture
def world(rt, sim):
    return World(rt, sim)


def test_quantity_change_is_applied_once_and_mirrored_locally(world):
    sub = world.pick()
    target = sub["quantity"] + 3
    body = world.message("subscription.quantity", sub["id"], quantity=target)
    world.sim.control.reset_calls()

    record = world.deliver(body)
    assert record.state == "succeeded", record.reason
    assert record.before["quantity"] == sub["quantity"] and record.after["quantity"] == target
    assert record.attempts == 1 and record.request_id
    assert world.truth(sub["id"])["quantity"] == target
    row = world.local(sub["id"])
    assert row["quantity"] == target and row["etag"] == world.truth(sub["id"])["attributes"]["etag"]
    assert world.sync_customer()["rows_written"] == 0  # the local row is exactly what sync would write

    # redelivery of a finished message: nothing is sent
    again = world.deliver(body)
    assert again.state == "succeeded" and again.attempts == 1
    # redelivery after a crash mid-apply (PATCH landed, record still says applying): re-read, no PATCH
    entity = world.service.find_record(PROVIDER_ID, record.idempotency_key).to_entity()
    entity["state"] = "applying"
    world.service.log_store.replace(entity)
    held = world.deliver(body, dequeue_count=2)  # within the claim's lease: left to its holder
    assert held.state == "applying" and held.attempts == 1
    world.sim.control.advance_clock(seconds=CLAIM_LEASE.total_seconds() + 1)  # the holder is presumed dead
    resumed = world.deliver(body, dequeue_count=3)
    assert resumed.state == "succeeded" and resumed.attempts == 2
    assert world.calls(PATCH_KEY) == 1
    assert world.truth(sub["id"])["quantity"] == target

    stored = world.service.find_record(PROVIDER_ID, record.idempotency_key)
    assert stored.state == "succeeded" and stored.finished_at is not None


def test_nce_decrease_inside_the_window_then_refused_after_it(world):
    now = world.sim_now()
    sub = world.new_subscription(nce=True, quantity=5, days_ago=0,
                                 cancellation_allowed_until=(now + dt.timedelta(days=3)).isoformat())
    inside = world.deliver(world.message("subscription.quantity", sub["id"], quantity=4))
    assert inside.state == "succeeded", inside.reason

    world.sim.control.advance_clock(days=4)
    world.sim.control.reset_calls()
    after = world.deliver(world.message("subscription.quantity", sub["id"], quantity=3))
    assert after.state == "rejected" and after.error_code == "800090"
    assert "cancellation window" in after.reason and "increases" in after.reason
    world.service.dismiss(after.idempotency_key)  # a refusal blocks later changes until dismissed
    cancel = world.deliver(world.message("subscription.cancel", sub["id"]))
    assert cancel.state == "rejected" and cancel.error_code == "900117"
    assert world.calls(PATCH_KEY) == 0  # decided locally, nothing sent
    assert world.truth(sub["id"])["quantity"] == 4 and world.truth(sub["id"])["status"] == "active"
    world.service.dismiss(cancel.idempotency_key)
    increase = world.deliver(world.message("subscription.quantity", sub["id"], quantity=9))
    assert increase.state == "succeeded"  # increases stay allowed


def test_suspended_subscription_rules(world):
    sub = world.pick(nce=False)
    suspended = world.deliver(world.message("subscription.suspend", sub["id"]))
    assert suspended.state == "succeeded" and world.truth(sub["id"])["status"] == "suspended"
    assert world.local(sub["id"])["status"] == "suspended"
    world.sim.control.reset_calls()

    quantity = world.deliver(world.message("subscription.quantity", sub["id"], quantity=sub["quantity"] + 1))
    assert quantity.state == "rejected" and quantity.error_code == "800091" and "reactivate" in quantity.reason
    world.service.dismiss(quantity.idempotency_key)
    renew = world.deliver(world.message("subscription.autoRenew", sub["id"], **auto_renew_flip(sub)))
    assert renew.state == "rejected" and renew.error_code == "800091"
    assert world.calls(PATCH_KEY) == 0
    world.service.dismiss(renew.idempotency_key)

    back = world.deliver(world.message("subscription.reactivate", sub["id"]))
    assert back.state == "succeeded" and world.truth(sub["id"])["status"] == "active"
    assert world.sync_customer()["rows_written"] == 0


def auto_renew_flip(sub: dict) -> dict:
    """The other auto-renew value; turning it off says which end of term is meant (2026 rules)."""
    wanted = not sub["autoRenewEnabled"]
    return {"autoRenewEnabled": wanted} if wanted else {"autoRenewEnabled": False, "action": "cancel"}


class EditAfterFirstRead:
    """Changes the subscription upstream right after pcsync's first GET of it (a portal user
    racing the write-back), so the PATCH that follows carries a stale etag."""

    def __init__(self, client, edit):
        self.client, self.edit = client, edit

    def get_json(self, path, **kwargs):
        result = self.client.get_json(path, **kwargs)
        if self.edit and "/subscriptions/" in path:
            edit, self.edit = self.edit, None
            edit()
        return result

    def send_json(self, *args, **kwargs):
        return self.client.send_json(*args, **kwargs)


def test_stale_etag_retried_once_when_the_field_did_not_move(rt, sim):
    edits = []
    world = World(rt, sim, client_wrapper=lambda client: EditAfterFirstRead(client, edits.pop() if edits else None))
    sub = world.pick()
    edits.append(lambda: sim.control.update_subscription(world.customer, sub["id"], friendlyName="renamed in portal"))
    sim.control.reset_calls()
    record = world.deliver(world.message("subscription.quantity", sub["id"], quantity=sub["quantity"] + 1))
    assert record.state == "succeeded", record.reason
    statuses = sim.control.calls()[PATCH_KEY]["statuses"]
    assert statuses == {"400": 1, "200": 1}
    truth = world.truth(sub["id"])
    assert truth["quantity"] == sub["quantity"] + 1 and truth["friendlyName"] == "renamed in portal"
    assert world.sync_customer()["rows_written"] == 0


def test_stale_etag_when_the_field_changed_upstream_is_a_conflict(rt, sim):
    edits = []
    world = World(rt, sim, client_wrapper=lambda client: EditAfterFirstRead(client, edits.pop() if edits else None))
    sub = world.pick()
    edits.append(lambda: sim.control.update_subscription(world.customer, sub["id"], quantity=sub["quantity"] + 7))
    sim.control.reset_calls()
    record = world.deliver(world.message("subscription.quantity", sub["id"], quantity=sub["quantity"] + 1))
    assert record.state == "rejected" and record.error_code == "2055"
    assert record.reason.startswith("changed in Partner Center since")
    assert f"quantity was {sub['quantity']}, is now {sub['quantity'] + 7}" in record.reason
    assert sim.control.calls()[PATCH_KEY]["count"] == 1
    assert world.truth(sub["id"])["quantity"] == sub["quantity"] + 7  # the portal's change stands
    assert world.local(sub["id"])["quantity"] == sub["quantity"] + 7


def test_202_is_confirmed_by_polling(world):
    sub = world.pick()
    world.sim.control.set_faults(write_202=1.0)
    try:
        record = world.deliver(world.message("subscription.autoRenew", sub["id"], **auto_renew_flip(sub)))
    finally:
        world.sim.control.set_faults(write_202=0)
    assert record.state == "succeeded" and "202" in record.reason
    assert record.location == f"/customers/{world.customer}/subscriptions/{sub['id']}"
    assert world.truth(sub["id"])["autoRenewEnabled"] is (not sub["autoRenewEnabled"])
    assert world.sync_customer()["rows_written"] == 0


def accept(world, record) -> None:
    """The customer accepts the attestation link; the write-backs timer carries on."""
    assert record.state == "waiting" and record.attestation["state"] == "link_sent", record.reason
    world.sim.control.accept_attestation(record.attestation["attestationId"])
    world.service.run_timer()


def test_agreement_confirmation_created_once(world):
    contact = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com", "phoneNumber": "4255550199"}
    body = world.message("agreement.confirm", contact=contact, dateAgreed="2024-05-01")
    world.sim.control.reset_calls()
    accept(world, world.deliver(body))
    record = world.service.find_record(PROVIDER_ID, json.loads(body)["idempotencyKey"])
    assert record.state == "succeeded", record.reason
    assert record.after["contactEmail"] == "ada@example.com" and record.after["templateId"]
    truth = [a for a in world.sim.control.agreements()
             if a["customerId"] == world.customer and a["primaryContact"]["email"] == "ada@example.com"]
    assert len(truth) == 1 and world.calls(POST_ATTESTATION_KEY) == 1
    assert world.calls(POST_AGREEMENT_KEY) == 1 and world.sim.control.calls()[POST_AGREEMENT_KEY]["statuses"] == {"201": 1}
    # redelivered after a crash before the record was finished: found, not created again
    entity = world.service.find_record(PROVIDER_ID, record.idempotency_key).to_entity()
    entity["state"] = "applying"
    world.service.log_store.replace(entity)
    world.sim.control.advance_clock(seconds=CLAIM_LEASE.total_seconds() + 1)  # the claim's lease ran out
    assert world.deliver(body, dequeue_count=2).state == "succeeded"
    assert world.calls(POST_AGREEMENT_KEY) == 1
    runs = world.sync.sync_customer(world.provider, world.customer)
    assert {r.stream: r.rows_written for r in runs} == {"subscriptions": 0, "agreements": 0}


def test_poison_message_is_recorded_as_failed(rt, sim):
    world = World(rt, sim, client_options={"retry": FAST_RETRY})
    sub = world.pick()
    body = world.message("subscription.quantity", sub["id"], quantity=sub["quantity"] + 1)
    sim.control.set_faults(fault_5xx=1.0)
    try:
        with pytest.raises(ApplyFailed):
            world.deliver(body, dequeue_count=1)
        first = world.service.find_record(PROVIDER_ID, json.loads(body)["idempotencyKey"])
        assert first.state == "failed" and "will retry" in first.reason
        with pytest.raises(ApplyFailed):
            world.deliver(body, dequeue_count=MAX_DELIVERIES)
    finally:
        sim.control.set_faults(fault_5xx=0)
    record = world.service.find_record(PROVIDER_ID, json.loads(body)["idempotencyKey"])
    assert record.state == "failed" and record.attempts == 2 and record.error_code == "HTTP 503"
    assert "gave up after 5 deliveries" in record.reason and "writebacks-poison" in record.reason
    assert world.truth(sub["id"])["quantity"] == sub["quantity"]


def test_cli_applies_now_and_shows_the_record(world, capsys):
    from sync.writeback.cli import register

    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    sub = world.pick()
    args = parser.parse_args(["writeback", "--provider", PROVIDER_ID, "--customer", world.customer, "--subscription",
                              sub["id"], "--quantity", str(sub["quantity"] + 1), "--key", "cli-1"])
    assert args.handler(args, world.rt) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "succeeded"
    assert world.truth(sub["id"])["quantity"] == sub["quantity"] + 1
    args = parser.parse_args(["writeback-show", "cli-1"])
    assert args.handler(args, world.rt) == 0 and json.loads(capsys.readouterr().out)["after"]["quantity"] == sub["quantity"] + 1
    bad = parser.parse_args(["writeback", "--provider", PROVIDER_ID, "--customer", world.customer, "--quantity", "2"])
    assert bad.handler(bad, world.rt) == 2 and "subscription: is required" in capsys.readouterr().err


# -- exactly once in effect, also when Partner Center moves (issue 9) -----------------------------


class Killed(BaseException):
    """The process dies here: a BaseException, so no handler in the service runs."""


class KilledAfterPatch:
    """The process is killed right after a PATCH got its answer, before the log is updated."""

    def __init__(self, client, armed: dict):
        self.client, self.armed = client, armed

    def get_json(self, *args, **kwargs):
        return self.client.get_json(*args, **kwargs)

    def send_json(self, *args, **kwargs):
        answer = self.client.send_json(*args, **kwargs)
        if self.armed.pop("kill", False):
            raise Killed()
        return answer


class AnswerLost(KilledAfterPatch):
    """The PATCH is applied but its answer is cut short (the simulator's truncate fault, for
    that one call only)."""

    def __init__(self, client, armed: dict, sim):
        super().__init__(client, armed)
        self.sim = sim

    def send_json(self, *args, **kwargs):
        if not self.armed.pop("lose", False):
            return self.client.send_json(*args, **kwargs)
        self.sim.control.set_faults(fault_truncate=1.0)
        try:
            return self.client.send_json(*args, **kwargs)
        finally:
            self.sim.control.set_faults(fault_truncate=0)


@pytest.mark.parametrize("operation, change, portal, field", [
    ("subscription.quantity", lambda sub: {"quantity": sub["quantity"] + 1},
     lambda sub: {"quantity": sub["quantity"] + 5}, "quantity"),
    ("subscription.suspend", lambda sub: {}, lambda sub: {"status": "active"}, "status"),
])
def test_killed_after_the_patch_then_changed_in_the_portal_is_a_conflict(rt, sim, operation, change, portal, field):
    armed = {"kill": True}
    world = World(rt, sim, client_wrapper=lambda client: KilledAfterPatch(client, armed))
    sub = world.pick(nce=False)
    body = world.message(operation, sub["id"], **change(sub))
    sim.control.reset_calls()
    with pytest.raises(Killed):
        world.deliver(body)
    key = json.loads(body)["idempotencyKey"]
    assert world.service.find_record(PROVIDER_ID, key).state == "applying"
    upstream = portal(sub)
    sim.control.update_subscription(world.customer, sub["id"], **upstream)  # someone in the portal
    sim.control.advance_clock(seconds=CLAIM_LEASE.total_seconds() + 1)  # the redelivery takes the claim over
    record = world.deliver(body, dequeue_count=2)
    assert record.state == "conflict", record.reason
    assert f"changed in Partner Center since to {json.dumps(upstream[field])}" in record.reason
    assert world.calls(PATCH_KEY) == 1 and world.truth(sub["id"])[field] == upstream[field]
    assert world.local(sub["id"])[field] == upstream[field] and world.sync_customer()["rows_written"] == 0


def test_a_patch_whose_answer_was_lost_then_changed_in_the_portal_is_a_conflict(rt, sim):
    armed = {"lose": True}
    world = World(rt, sim, client_options={"retry": FAST_RETRY},
                  client_wrapper=lambda client: AnswerLost(client, armed, sim))
    sub = world.pick()
    body = world.message("subscription.quantity", sub["id"], quantity=sub["quantity"] + 1)
    sim.control.reset_calls()
    with pytest.raises(ApplyFailed):
        world.deliver(body)
    assert world.truth(sub["id"])["quantity"] == sub["quantity"] + 1  # it was applied
    failed = world.service.find_record(PROVIDER_ID, json.loads(body)["idempotencyKey"])
    assert failed.state == "failed" and "may have been applied" in failed.reason and "not applied" not in failed.reason
    sim.control.update_subscription(world.customer, sub["id"], quantity=sub["quantity"] + 9)
    record = world.deliver(body, dequeue_count=2)
    assert record.state == "conflict" and "possibly applied at" in record.reason, record.reason
    assert world.calls(PATCH_KEY) == 1 and world.truth(sub["id"])["quantity"] == sub["quantity"] + 9


def test_agreement_without_a_date_redelivered_after_a_503_is_confirmed_once(rt, sim):
    world = World(rt, sim, client_options={"retry": FAST_RETRY})
    contact = {"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com"}
    body = world.message("agreement.confirm", contact=contact)  # no dateAgreed: the server fills it in
    sim.control.reset_calls()
    sim.control.set_faults(fault_5xx=1.0)
    try:
        with pytest.raises(ApplyFailed):
            world.deliver(body)
    finally:
        sim.control.set_faults(fault_5xx=0)
    sim.control.advance_clock(seconds=31)  # the host redelivers after its visibility timeout
    accept(world, world.deliver(body, dequeue_count=2))
    record = world.service.find_record(PROVIDER_ID, json.loads(body)["idempotencyKey"])
    assert (record.state, record.provider_id) == ("succeeded", PROVIDER_ID), record.reason
    assert world.calls(POST_AGREEMENT_KEY) == 1 and world.calls(POST_ATTESTATION_KEY) == 1


def test_an_upper_case_customer_id_is_one_partition(world):
    sub = world.pick()
    body = json.loads(world.message("subscription.quantity", sub["id"].upper(), quantity=sub["quantity"] + 1))
    body["customer"] = world.customer.upper()
    record = world.deliver(json.dumps(body).encode())
    assert record.state == "succeeded" and record.customer_id == world.customer, record.reason
    partitions = {e["PartitionKey"] for e in world.rt.tables.table("subscriptions").list_entities()}
    assert partitions == {escape_key(f"{PROVIDER_ID}|{world.customer}")}
    assert world.local(sub["id"])["quantity"] == sub["quantity"] + 1 and world.sync_customer()["rows_written"] == 0
