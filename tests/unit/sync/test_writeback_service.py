"""Write-back service with fakes: validation, idempotency, local rules, conflicts, 202, failures."""
from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from shared.errors import ConsentRequired, Conflict, NotFound, ValidationFailed
from shared.partner_center import WriteResponse
from shared.partner_center_errors import BadRequestError, ServiceError, TransportError
from shared.providers import ProviderConnection
from sync.writeback.log import INVALID_PARTITION
from sync.writeback.record import WritebackState
from sync.writeback.request import WritebackRequest, parse_request
from sync.writeback.rules import DecisionKind, decide, patched
from sync.writeback.schedule import WritebackTimer
from sync.writeback.service import MAX_MESSAGE_BYTES, ApplyFailed, WritebackService
from tests.fakes.partner_center import FakeQueues, FakeTables

NOW = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.timezone.utc)
NCE_OFFER = "CFQ7TTC0LH18:0001:CFQ7TTC0KDN3"


def subscription(*, nce=True, quantity=10, status="active", window_days=3, auto_renew=True, refundable=None,
                 version=1) -> dict[str, Any]:
    sub = {"id": "s1", "offerId": NCE_OFFER if nce else "2828BE95-46BA-4F91-B2FD-0BEF192ECF60", "quantity": quantity,
           "status": status, "autoRenewEnabled": auto_renew, "billingCycle": "monthly",
           "attributes": {"etag": f"etag-{version}", "objectType": "Subscription"}}
    if nce:
        sub["cancellationAllowedUntilDate"] = (NOW + dt.timedelta(days=window_days)).isoformat().replace("+00:00", "Z")
        if refundable is not None:
            sub["refundableQuantity"] = {"totalQuantity": refundable, "details": []}
    return sub


def request(operation="subscription.quantity", key="k1", **params) -> WritebackRequest:
    body = {"idempotencyKey": key, "provider": "p1", "customer": "c1", "operation": operation, **params}
    if operation != "agreement.confirm":
        body.setdefault("subscription", "s1")
    return parse_request(body, now=NOW)


# -- validation -------------------------------------------------------------------------------


def test_valid_request_is_normalised_and_keys_are_case_insensitive():
    parsed = parse_request({"IdempotencyKey": "order-1", "PROVIDER": "p1", "customer": "c1",
                            "operation": "subscription.autoRenew", "Subscription": "s1", "auto_renew_enabled": False, "action": "cancel",
                            "requestedBy": "billing system"}, now=NOW)
    assert (parsed.idempotency_key, parsed.auto_renew, parsed.requested_by) == ("order-1", False, "billing system")
    agreement = request("agreement.confirm", contact={"firstName": "A", "lastName": "B", "email": "a@b.example"})
    assert agreement.date_agreed == "2025-03-10T12:00:00Z" and agreement.subscription_id is None


@pytest.mark.parametrize("body, expected", [
    ("nope", {"body"}),
    ({}, {"idempotencyKey", "provider", "customer", "operation"}),
    ({"idempotencyKey": "k", "provider": "p1", "customer": "c1", "operation": "subscription.quantity"},
     {"subscription", "quantity"}),
    ({"idempotencyKey": "k", "provider": "p1", "customer": "c1", "operation": "subscription.quantity",
      "subscription": "s1", "quantity": True, "autoRenewEnabled": True}, {"quantity", "autoRenewEnabled"}),
    ({"idempotencyKey": "k/../x", "provider": "p1", "customer": "c/1", "operation": "subscription.suspend",
      "subscription": "s1"}, {"idempotencyKey", "customer"}),
    ({"idempotencyKey": "k", "provider": "p1", "customer": "c1", "operation": "agreement.confirm",
      "contact": {"firstName": "A", "lastName": "B", "email": "a@b.example", "fax": "1"}, "dateAgreed": "2099-01-01"},
     {"contact", "dateAgreed"}),
    ({"idempotencyKey": "k", "idempotency_key": "k2", "provider": "p1", "customer": "c1",
      "operation": "subscription.suspend", "subscription": "s1"}, {"idempotencyKey"}),
])
def test_invalid_requests_name_every_bad_field(body, expected):
    with pytest.raises(ValidationFailed) as caught:
        parse_request(body, now=NOW)
    assert set(caught.value.problems) == expected


def test_fingerprint_covers_the_change_not_who_asked():
    base = request(quantity=5)
    assert base.fingerprint() == parse_request({**base.to_message(), "requestedBy": "someone"}, now=NOW).fingerprint()
    assert base.fingerprint() != request(quantity=6).fingerprint()




# -- rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("req, sub, kind, code", [
    (dict(quantity=12), dict(), "patch", None),
    (dict(quantity=10), dict(), "noop", None),
    (dict(quantity=8), dict(window_days=2), "patch", None),
    (dict(quantity=8), dict(window_days=-1), "reject", "800090"),
    (dict(quantity=5), dict(refundable=3), "reject", "800090"),
    (dict(quantity=8), dict(nce=False), "patch", None),
    (dict(quantity=12), dict(status="suspended"), "reject", "800091"),
    (dict(quantity=12), dict(status="deleted"), "reject", "2011"),
    (dict(operation="subscription.suspend"), dict(status="suspended"), "noop", None),
    (dict(operation="subscription.reactivate"), dict(status="suspended"), "patch", None),
    (dict(operation="subscription.reactivate"), dict(status="active"), "noop", None),
    (dict(operation="subscription.cancel"), dict(window_days=-1), "reject", "900117"),
    (dict(operation="subscription.cancel"), dict(nce=False), "reject", None),
    (dict(operation="subscription.cancel"), dict(), "patch", None),
    (dict(operation="subscription.autoRenew", autoRenewEnabled=False, action="cancel"), dict(status="suspended"),
     "reject", "800091"),
    (dict(operation="subscription.autoRenew", autoRenewEnabled=True), dict(), "noop", None),
])
def test_rules_are_checked_locally(req, sub, kind, code):
    decision = decide(request(**req), subscription(**sub), NOW)
    assert (decision.kind, decision.code) == (DecisionKind(kind), code), decision.reason


def test_patch_body_is_the_full_resource_with_its_etag():
    body = patched(subscription(), {"quantity": 12})
    assert body["quantity"] == 12 and body["attributes"]["etag"] == "etag-1" and body["billingCycle"] == "monthly"


# -- the service with fakes ---------------------------------------------------------------------


class FakeLog:
    """writebackops in memory, with etags for the conditional writes."""

    def __init__(self):
        self.rows: dict[tuple[str, str], tuple[dict, str]] = {}
        self.version = 0

    def _etag(self) -> str:
        self.version += 1
        return f"v{self.version}"

    def find(self, pk, rk):
        found = self.rows.get((pk, rk))
        return (copy.deepcopy(found[0]), found[1]) if found else None

    def create(self, entity):
        key = (entity["PartitionKey"], entity["RowKey"])
        if key in self.rows:
            return False
        self.rows[key] = (json.loads(json.dumps(entity, default=str)), self._etag())
        return True

    def replace(self, entity, *, etag=None):
        key = (entity["PartitionKey"], entity["RowKey"])
        if etag is not None and (key not in self.rows or self.rows[key][1] != etag):
            return False
        self.rows[key] = (json.loads(json.dumps(entity, default=str)), self._etag())
        return True

    def by_row_key(self, rk):
        return [copy.deepcopy(v) for (pk, r), v in self.rows.items() if r == rk]

    def _where(self, **columns):
        return [copy.deepcopy(v) for v in self.rows.values() if all(v[0].get(k) == c for k, c in columns.items())]

    def for_subscription(self, pk, customer_id, subscription_id):
        return [row for row in self._where(customer_id=customer_id, subscription_id=subscription_id)
                if row[0]["PartitionKey"] == pk]

    def in_state(self, state):
        return self._where(state=state)

    def verifications_pending(self):
        return self._where(verification_state="pending")


class FakeProviders:
    def __init__(self, **overrides):
        self.provider = ProviderConnection(id="p1", name="P", country_code="US", currency_code="USD",
                                           tenant_id="t", consent_status="active", consented_at="2025-01-01")
        for k, v in overrides.items():
            object.__setattr__(self.provider, k, v)

    def find_provider(self, provider_id):
        return self.provider if provider_id == "p1" else None


class FakeClient:
    """One subscription behind GET/PATCH with etag checks, plus scripted failures."""

    def __init__(self, sub=None, *, errors=(), answer_202=False, apply_202=True):
        self.sub = sub or subscription()
        self.errors = list(errors)
        self.answer_202, self.apply_202 = answer_202, apply_202
        self.patches: list[dict] = []
        self.request_ids: list[str] = []
        self.replay_safe: list[bool] = []
        self.gets = 0

    def get_json(self, path, *, params=None, customer_id=None):
        self.gets += 1
        if self.errors and self.errors[0][0] == "GET":
            raise self.errors.pop(0)[1]
        return copy.deepcopy(self.sub)

    def send_json(self, method, path, body, *, headers=None, customer_id=None, replay_safe=False, request_id=None):
        assert method == "PATCH" and headers["If-Match"] == f'"{body["attributes"]["etag"]}"'
        self.patches.append(body)
        self.request_ids.append(request_id)
        self.replay_safe.append(replay_safe)
        if self.errors and self.errors[0][0] == "PATCH":
            raise self.errors.pop(0)[1]
        if body["attributes"]["etag"] != self.sub["attributes"]["etag"]:
            raise BadRequestError("stale", status=400, code="2055", description="Etag is no longer valid")
        if not self.answer_202 or self.apply_202:
            self.upstream(**{k: body[k] for k in ("quantity", "status", "autoRenewEnabled")})
        if self.answer_202:
            return WriteResponse(202, {}, "/customers/c1/subscriptions/s1", request_id)
        return WriteResponse(200, copy.deepcopy(self.sub), None, request_id)

    def upstream(self, **changes):
        self.sub.update(changes)
        version = int(self.sub["attributes"]["etag"].split("-")[1]) + 1
        self.sub["attributes"]["etag"] = f"etag-{version}"


def make_service(client=None, *, providers=None, clock=None, tables=None, queues=None):
    client = client or FakeClient()
    service = WritebackService(log_store=FakeLog(), tables=tables or FakeTables(),
                               providers=providers or FakeProviders(), queues=queues or FakeQueues(),
                               client_factory=lambda provider, record: client,
                               clock=clock or (lambda: NOW), sleep=lambda s: None, confirm_polls=3)
    return service, client


def body(operation="subscription.quantity", key="k1", **params) -> dict:
    message = {"idempotencyKey": key, "provider": "p1", "customer": "c1", "operation": operation, "subscription": "s1"}
    return {**message, **params}


def message(**kwargs) -> bytes:
    return json.dumps(body(**kwargs)).encode()


def test_submit_is_idempotent_and_refuses_a_different_body_with_the_same_key():
    service, _ = make_service()
    first = service.submit(body(quantity=12))
    assert (first.created, first.queued, first.record.state) == (True, True, "accepted")
    second = service.submit(body(quantity=12, requestedBy="retrying client"))
    assert second.created is False and second.record.idempotency_key == "k1" and not second.queued
    assert len(service.queues.sent["writebacks"]) == 1  # one message per key: the first one is on its way
    service.handle_message(message(quantity=12))
    third = service.submit(body(quantity=12))
    assert third.record.state == "succeeded" and not third.queued and len(service.queues.sent["writebacks"]) == 1
    with pytest.raises(Conflict, match="different request"):
        service.submit(body(quantity=13))
    with pytest.raises(NotFound):
        service.submit({**body(quantity=1), "provider": "p2"})


def test_applied_once_and_local_row_written_like_sync():
    service, client = make_service()
    record = service.handle_message(message(quantity=12))
    assert record.state == "succeeded" and record.before["quantity"] == 10 and record.after["quantity"] == 12
    assert len(client.patches) == 1
    row = service.tables.table("subscriptions").find_entity("p1|c1", "s1")
    from sync.streams import SUBSCRIPTIONS

    assert row["content_hash"] == SUBSCRIPTIONS.build_row(client.sub, provider_id="p1", customer_id="c1")["content_hash"]
    again = service.handle_message(message(quantity=12), dequeue_count=2)
    assert again.state == "succeeded" and len(client.patches) == 1


def test_redelivery_mid_apply_rechecks_instead_of_patching_again():
    service, client = make_service()
    service.accept(request(quantity=12), source="queue")
    client.upstream(quantity=12)  # the first delivery's PATCH landed, then the worker died
    record = service.handle_message(message(quantity=12), dequeue_count=2)
    assert record.state == "succeeded" and client.patches == [] and "already" in record.reason


def test_local_rejection_sends_nothing():
    service, client = make_service(FakeClient(subscription(window_days=-2)))
    record = service.handle_message(message(quantity=4))
    assert record.state == "rejected" and record.error_code == "800090" and client.patches == []


def test_server_rejection_is_recorded_with_its_code():
    error = BadRequestError("x", status=400, code="2002", description="Subscription quantity is not within range")
    service, client = make_service(FakeClient(errors=[("PATCH", error)]))
    record = service.handle_message(message(quantity=12))
    assert record.state == "rejected" and record.error_code == "2002" and "not within range" in record.reason


def edited_in_the_portal_after_the_first_read(client, **changes):
    """Someone changes the subscription in Partner Center between our read and our PATCH, so the
    PATCH meets a stale etag."""
    original_get = client.get_json

    def get_then_edit(path, **kwargs):
        result = original_get(path, **kwargs)
        if client.gets == 1:
            client.upstream(**changes)
        return result

    client.get_json = get_then_edit
    return client


def test_stale_etag_with_an_unrelated_change_is_retried_once():
    client = edited_in_the_portal_after_the_first_read(FakeClient(), autoRenewEnabled=False)
    service, _ = make_service(client)
    record = service.handle_message(message(quantity=12))
    assert record.state == "succeeded" and len(client.patches) == 2 and client.sub["quantity"] == 12


def test_stale_etag_with_the_field_changed_upstream_is_rejected():
    client = edited_in_the_portal_after_the_first_read(FakeClient(), quantity=20)
    service, _ = make_service(client)
    record = service.handle_message(message(quantity=12))
    assert record.state == "rejected" and record.reason.startswith("changed in Partner Center since 2025-03-10T12:00:00Z")
    assert "quantity was 10, is now 20" in record.reason and client.sub["quantity"] == 20


def test_202_confirmed_by_polling_or_left_unconfirmed():
    service, client = make_service(FakeClient(answer_202=True))
    record = service.handle_message(message(quantity=12))
    assert record.state == "succeeded" and record.location == "/customers/c1/subscriptions/s1"
    service, client = make_service(FakeClient(answer_202=True, apply_202=False))
    record = service.handle_message(message(quantity=12))
    assert record.state == "unconfirmed" and "3 polls" in record.reason and client.gets == 4


def test_transient_failures_raise_and_the_last_delivery_records_why():
    outage = ServiceError("GET -> HTTP 503", status=503, code="0")
    service, client = make_service(FakeClient(errors=[("GET", outage), ("GET", outage)]))
    with pytest.raises(ApplyFailed):
        service.handle_message(message(quantity=12), dequeue_count=1)
    record = service.find_record("p1", "k1")
    assert record.state == "failed" and "will retry" in record.reason and record.error_code == "HTTP 503"
    with pytest.raises(ApplyFailed):
        service.handle_message(message(quantity=12), dequeue_count=5)
    record = service.find_record("p1", "k1")
    assert record.attempts == 2 and "gave up after 5 deliveries" in record.reason
    assert service.submit(body(quantity=12)).queued  # an operator may resubmit a failed request
    assert service.handle_message(message(quantity=12)).state == "succeeded"


class ExpiredTokens(FakeClient):
    def get_json(self, path, **kwargs):
        raise ConsentRequired("p1", "expired", "refresh token expired (AADSTS700082)")


def test_consent_problems_are_rejections_without_partner_center_calls():
    service, client = make_service(ExpiredTokens())
    record = service.handle_message(message(quantity=12))
    assert record.state == "rejected" and record.reason.startswith("consent needed") and client.patches == []
    service, client = make_service(providers=FakeProviders(consent_status="revoked"))
    record = service.handle_message(message(quantity=12))
    assert record.state == "rejected" and "revoked" in record.reason and client.gets == 0


@pytest.mark.parametrize("raw, problem", [
    (b"x" * (MAX_MESSAGE_BYTES + 1), "larger than"),
    (b"\xff", "not UTF-8"),
    (b"{", "not valid JSON"),
    (b"[" * 40 + b"]" * 40, "nested more than"),
    (b'["x"]', "must be a JSON object"),
])
def test_undecodable_messages_are_recorded_as_rejected(raw, problem):
    service, client = make_service()
    record = service.handle_message(raw, message_id="m-1")
    assert (record.state, record.provider_id, record.idempotency_key) == ("rejected", INVALID_PARTITION, "m-1")
    assert record.reason.startswith("invalid write-back message: body: ") and problem in record.reason
    (entity, _), = service.log_store.rows.values()
    assert entity["state"] == "rejected" and type(entity["state"]) is str and client.gets == 0


def test_states_keep_their_stored_values():
    assert [state.value for state in WritebackState] == [
        "accepted", "applying", "succeeded", "rejected", "failed", "pending_confirmation", "unconfirmed", "conflict",
        "scheduled", "blocked", "waiting", "dismissed"]
    assert f"{WritebackState.PENDING_CONFIRMATION}" == "pending_confirmation"


def test_bad_messages_are_recorded_under_their_message_id():
    service, _ = make_service()
    record = service.handle_message(b'{"idempotencyKey": "k9", "provider": "p1", "surprise": 1}', message_id="m-9")
    assert record.state == "rejected" and record.provider_id == "_invalid"
    (entity, _), = service.log_store.rows.values()
    assert entity["RowKey"] == "m-9" and "surprise" in entity["reason"] and entity["provider_id"] == "p1"


def test_same_key_different_body_on_the_queue_is_recorded_not_applied():
    service, client = make_service()
    service.handle_message(message(quantity=12))
    record = service.handle_message(message(quantity=14), message_id="m-2")
    assert record.state == "rejected" and "different request" in record.reason and len(client.patches) == 1
    assert service.get_record("k1").after["quantity"] == 12


# -- exactly once in effect, also when Partner Center moves (issue 9) -----------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += dt.timedelta(**delta)


class Killed(BaseException):
    """The process dies here: a BaseException, so no handler in the service runs."""


class DiesAroundThePatch(FakeClient):
    """The process is killed once, right after the PATCH landed (``after=True``) or right before
    it went out (``after=False``): the log is never told."""

    def __init__(self, *args, after=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.dies, self.after = True, after

    def send_json(self, method, path, body, **kwargs):
        if self.dies and not self.after:
            self.dies = False
            raise Killed()
        answer = super().send_json(method, path, body, **kwargs)
        if self.dies:
            self.dies = False
            raise Killed()
        return answer


class RecordingQueues(FakeQueues):
    def __init__(self):
        super().__init__()
        self.delays: list = []

    def send_json(self, queue_name, message, *, delay_seconds=None):
        super().send_json(queue_name, message, delay_seconds=delay_seconds)
        self.delays.append(delay_seconds)


def killed_after_patch(operation, params, *, after=True):
    clock = Clock()
    client = DiesAroundThePatch(after=after)
    service, _ = make_service(client, clock=clock, queues=RecordingQueues())
    with pytest.raises(Killed):
        service.handle_message(message(operation=operation, **params))
    assert service.find_record("p1", "k1").state == "applying"  # the log was never told
    return service, client, clock


@pytest.mark.parametrize("operation, params, portal, field", [
    ("subscription.quantity", {"quantity": 12}, {"quantity": 20}, "quantity"),
    ("subscription.suspend", {}, {"status": "active"}, "status"),  # suspended by us, reactivated in the portal
])
def test_redelivery_after_a_kill_and_a_portal_change_is_a_conflict_not_a_second_patch(operation, params, portal,
                                                                                      field):
    service, client, clock = killed_after_patch(operation, params)
    client.upstream(**portal)  # someone changes the same field in Partner Center
    clock.advance(minutes=20)  # the host redelivers once the claim's lease has run out
    record = service.handle_message(message(operation=operation, **params), dequeue_count=2)
    assert record.state == "conflict" and record.final and record.sent["etag"] == "etag-1"
    assert len(client.patches) == 1 and client.sub[field] == portal[field]  # the portal's value stands
    assert record.reason.startswith("possibly applied at 2025-03-10T12:00:00Z")
    assert f"changed in Partner Center since to {json.dumps(portal[field])}" in record.reason
    assert client.request_ids[0] in record.reason and "etag-1" in record.reason
    assert service.tables.table("subscriptions").find_entity("p1|c1", "s1")[field] == portal[field]
    again = service.handle_message(message(operation=operation, **params), dequeue_count=3)
    assert again.state == "conflict" and len(client.patches) == 1  # final: never applied later either


def test_redelivery_after_a_kill_recognises_a_patch_that_landed():
    service, client, clock = killed_after_patch("subscription.quantity", {"quantity": 12})
    clock.advance(minutes=20)
    record = service.handle_message(message(quantity=12), dequeue_count=2)
    assert record.state == "succeeded" and "landed" in record.reason and len(client.patches) == 1


def test_redelivery_after_a_kill_before_the_send_sends_the_same_patch_again():
    service, client, clock = killed_after_patch("subscription.quantity", {"quantity": 12}, after=False)
    clock.advance(minutes=20)
    record = service.handle_message(message(quantity=12), dequeue_count=2)
    assert record.state == "succeeded" and client.sub["quantity"] == 12
    assert len(client.patches) == 1 and client.request_ids == [record.request_id]  # same etag, same request id


def test_a_live_claim_is_left_to_its_holder_and_taken_over_after_the_lease():
    service, client, clock = killed_after_patch("subscription.quantity", {"quantity": 12}, after=False)
    clock.advance(seconds=30)  # the host's visibility timeout: well inside the lease
    held = service.handle_message(message(quantity=12), dequeue_count=2)
    assert held.state == "applying" and client.patches == []
    lease = service.applier.claim_lease.total_seconds()
    assert service.queues.delays == [int(lease) - 30 + 1]  # its message comes back when the lease ends
    clock.advance(seconds=lease)
    record = service.handle_message(message(quantity=12), dequeue_count=1)
    assert record.state == "succeeded" and record.attempts == 2 and len(client.patches) == 1


class LosesTheAnswer(FakeClient):
    """The PATCH lands, its answer is lost, and a portal user then changes the quantity. A
    replay-safe write is sent again, as the transport does (and refused 2055, the etag moved)."""

    lose = True

    def send_json(self, method, path, body, *, replay_safe=False, **kwargs):
        if not self.lose:
            return super().send_json(method, path, body, replay_safe=replay_safe, **kwargs)
        self.lose = False
        super().send_json(method, path, body, replay_safe=replay_safe, **kwargs)
        self.upstream(quantity=20)
        if replay_safe:
            return super().send_json(method, path, body, replay_safe=replay_safe, **kwargs)
        raise TransportError("PATCH /customers/c1/subscriptions/s1 failed after 1 attempt(s): ChunkedEncodingError")


def test_an_ambiguous_patch_followed_by_a_portal_change_is_never_called_not_applied():
    clock = Clock()
    service, client = make_service(LosesTheAnswer(), clock=clock)
    with pytest.raises(ApplyFailed):
        service.handle_message(message(quantity=12))
    failed = service.find_record("p1", "k1")
    assert failed.state == "failed" and "not applied" not in failed.reason
    assert "may have been applied" in failed.reason and failed.sent["requestId"] in failed.reason
    record = service.handle_message(message(quantity=12), dequeue_count=2)
    assert record.state == "conflict" and "changed in Partner Center since to 20" in record.reason
    assert client.sub["quantity"] == 20 and client.replay_safe == [False]


# -- agreements: a server default is not part of the request ------------------------------------


class AgreementClient:
    """GET /agreements, GET/POST /customers/{id}/agreements, the enhanced attestation
    (POST /attestations/enhanced, GET .../{id} with ``status``), with scripted GET failures."""

    def __init__(self, errors=(), status="Pending", duplicate=False):
        self.errors = list(errors)
        self.agreements: list[dict] = []
        self.posts: list[dict] = []
        self.attestations: list[dict] = []
        self.status, self.duplicate = status, duplicate

    def get_json(self, path, *, params=None, customer_id=None):
        if self.errors:
            raise self.errors.pop(0)
        if path == "/agreements":
            return {"items": [{"templateId": "tpl-1", "agreementType": "MicrosoftCustomerAgreement"}]}
        if path.startswith("/attestations/enhanced/"):
            return {"id": path.rsplit("/", 1)[1], "status": self.status, "expiresDateTime": "2025-03-17T12:00:00Z"}
        if path == "/customers/c1":
            return {"companyProfile": {"companyName": "Contoso"},
                    "billingProfile": {"language": "en", "defaultAddress": {"country": "US"}}}
        return {"items": copy.deepcopy(self.agreements)}

    def send_json(self, method, path, body, *, customer_id=None, replay_safe=False, request_id=None, headers=None):
        if path == "/attestations/enhanced":
            self.attestations.append(body)
            return WriteResponse(201, {"id": f"att-{len(self.attestations)}"}, None, request_id)
        self.posts.append(body)
        body = {**body, "primaryContact": dict(CONTACT), "templateId": "tpl-1", "type": "MicrosoftCustomerAgreement",
                "dateAgreed": "2025-03-10T12:00:00Z"}
        if self.duplicate:
            raise BadRequestError("dup", status=400, code="600061", description="already exists")
        self.agreements.append(copy.deepcopy(body))
        return WriteResponse(201, copy.deepcopy(body), None, request_id)


CONTACT = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}


def agreement_body(**extra) -> dict:
    return {"idempotencyKey": "a1", "provider": "p1", "customer": "c1", "operation": "agreement.confirm",
            "contact": CONTACT, **extra}


def test_a_defaulted_date_agreed_is_not_part_of_the_request():
    first = parse_request(agreement_body(), now=NOW)
    later = parse_request(agreement_body(), now=NOW + dt.timedelta(seconds=1))
    assert first.fingerprint() == later.fingerprint() and first.date_agreed != later.date_agreed
    assert "dateAgreed" not in first.to_message() and first.params()["dateAgreed"] == "2025-03-10T12:00:00Z"
    given = parse_request(agreement_body(dateAgreed="2024-05-01"), now=NOW)
    assert given.fingerprint() != first.fingerprint() and given.to_message()["dateAgreed"] == "2024-05-01T00:00:00Z"


def test_the_same_agreement_body_a_second_later_is_the_same_request():
    clock = Clock()
    service, _ = make_service(AgreementClient(), clock=clock)
    first = service.submit(agreement_body())
    clock.advance(seconds=1)
    again = service.submit(agreement_body())  # was 409 "a different request"
    assert again.record.idempotency_key == "a1" and not again.created and not again.queued
    assert again.record.params["dateAgreed"] == first.record.params["dateAgreed"] == "2025-03-10T12:00:00Z"


def test_an_agreement_redelivered_after_a_503_is_confirmed_once():
    clock = Clock()
    client = AgreementClient(errors=[ServiceError("GET /agreements -> HTTP 503", status=503, code="0")])
    service, _ = make_service(client, clock=clock)
    raw = json.dumps(agreement_body()).encode()
    with pytest.raises(ApplyFailed):
        service.handle_message(raw, message_id="m-1")
    clock.advance(seconds=30)
    record = service.handle_message(raw, message_id="m-1", dequeue_count=2)
    assert record.state == "waiting" and record.attestation["state"] == "link_sent", record.reason
    assert record.attestation["link"] == "https://cdn.partner.microsoft.com/mca/?attestationid=att-1"
    assert client.attestations[0]["companyName"] == "Contoso" and client.attestations[0]["country"] == "US"
    client.status = "Accepted"  # the customer accepts; the timer re-checks
    WritebackTimer(service).run([])
    record = service.find_record("p1", "a1")
    assert record.state == "succeeded" and record.attestation["state"] == "agreement_created", record.reason
    assert [h["state"] for h in record.attestation["history"]] == ["required", "link_sent", "accepted",
                                                                   "agreement_created"]
    assert all(h["at"] for h in record.attestation["history"])
    assert client.posts == [{"attestationId": "att-1"}] and len(client.attestations) == 1


@pytest.mark.parametrize("status, duplicate, state, attestation", [
    ("Accepted", True, "succeeded", "agreement_created"),  # 600061 is success
    ("Expired", False, "rejected", "expired"),
    ("Pending", False, "waiting", "link_sent"),
])
def test_the_attestation_state_machine(status, duplicate, state, attestation):
    client = AgreementClient(status=status, duplicate=duplicate)
    service, _ = make_service(client)
    service.handle_message(json.dumps(agreement_body()).encode(), message_id="m-1")
    WritebackTimer(service).run([])
    record = service.find_record("p1", "a1")
    assert (record.state, record.attestation["state"]) == (state, attestation), record.reason
    if state == "rejected":
        retried = service.retry("a1")  # a new link
        assert retried.state == "accepted"
        client.status = "Pending"
        assert service.apply(retried).attestation["attestationId"] == "att-2"


def test_an_agreement_that_predates_2023_04_01_needs_attestation_and_a_newer_one_does_not():
    client = AgreementClient()
    client.agreements.append({"templateId": "tpl-1", "dateAgreed": "2022-06-01T00:00:00Z", "type": "MicrosoftCustomerAgreement",
                              "primaryContact": dict(CONTACT)})
    service, _ = make_service(client)
    record = service.handle_message(json.dumps(agreement_body()).encode(), message_id="m-1")
    assert record.attestation["history"][0]["state"] == "required" and "predates" in str(record.attestation)
    client.agreements[0]["dateAgreed"] = "2024-01-01T00:00:00Z"
    other = service.handle_message(json.dumps(agreement_body(idempotencyKey="a2")).encode(), message_id="m-2")
    assert other.state == "succeeded" and other.attestation["state"] == "agreement_created"


# -- one queue message per key ----------------------------------------------------------------


class DyingQueues(FakeQueues):
    """A queue send that kills the process (``Killed``) or fails (``error``), once."""

    def __init__(self, failure):
        super().__init__()
        self.failure = failure

    def send_json(self, queue_name, message, *, delay_seconds=None):
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        super().send_json(queue_name, message, delay_seconds=delay_seconds)


def test_many_submissions_of_one_key_send_one_message():
    service, client = make_service()
    outcomes = [service.submit(body(quantity=12)) for _ in range(8)]
    assert [o.queued for o in outcomes] == [True] + [False] * 7
    assert len(service.queues.sent["writebacks"]) == 1
    assert service.find_record("p1", "k1").enqueue == "sent"


def test_a_crash_between_insert_and_enqueue_is_queued_once_by_a_later_submission():
    clock = Clock()
    service, client = make_service(clock=clock, queues=DyingQueues(Killed()))
    with pytest.raises(Killed):
        service.submit(body(quantity=12))
    assert service.find_record("p1", "k1").enqueue == "sending" and not service.queues.sent["writebacks"]
    assert not service.submit(body(quantity=12)).queued  # the creator may still be sending
    clock.advance(minutes=2)
    assert [service.submit(body(quantity=12)).queued for _ in range(3)] == [True, False, False]
    (queued,) = service.queues.sent["writebacks"]
    assert service.handle_message(json.dumps(queued).encode()).state == "succeeded" and len(client.patches) == 1


def test_a_failed_enqueue_is_sent_by_the_next_submission():
    service, _ = make_service(queues=DyingQueues(RuntimeError("queue down")))
    with pytest.raises(RuntimeError):
        service.submit(body(quantity=12))
    assert service.find_record("p1", "k1").enqueue == "unsent"
    assert service.submit(body(quantity=12)).queued and len(service.queues.sent["writebacks"]) == 1


# -- the local row ------------------------------------------------------------------------------


class BrokenSubscriptionsTable(FakeTables):
    def table(self, name):
        table = super().table(name)
        if name == "subscriptions":
            def refuse(entity, *, replace=False):
                raise RuntimeError("PropertyValueTooLarge")
            table.upsert_entity = refuse
        return table


def test_a_local_row_that_cannot_be_stored_does_not_leave_the_record_applying():
    service, client = make_service(tables=BrokenSubscriptionsTable())
    record = service.handle_message(message(quantity=12))
    assert record.state == "succeeded" and client.sub["quantity"] == 12 and record.after["quantity"] == 12
    assert record.local_update == "failed" and "PropertyValueTooLarge" in record.local_update_reason
    stored = service.find_record("p1", "k1").to_json()
    assert (stored["state"], stored["localUpdate"]) == ("succeeded", "failed") and stored["localUpdateReason"]
    healthy, _ = make_service()
    assert healthy.handle_message(message(quantity=12)).local_update == "stored"


# -- ids in one case --------------------------------------------------------------------------

GUID = "5C8B2D3E-0A1F-4B6C-9D7E-1F2A3B4C5D6E"


def test_customer_and_subscription_ids_are_lower_cased():
    parsed = parse_request({**body(quantity=3), "customer": GUID, "subscription": GUID.replace("5C", "7A")}, now=NOW)
    assert parsed.customer_id == GUID.lower() and parsed.subscription_id == GUID.replace("5C", "7A").lower()
    service, client = make_service()
    upper = service.submit({**body(quantity=12), "customer": "C1", "subscription": "S1"})
    lower = service.submit(body(quantity=12))  # the same request, not "a different request"
    assert upper.record.customer_id == "c1" and lower.record.idempotency_key == "k1" and not lower.created
    (sent,) = service.queues.sent["writebacks"]
    assert (sent["customer"], sent["subscription"]) == ("c1", "s1")
    service.handle_message(json.dumps({**sent, "customer": "C1"}).encode())
    assert set(service.tables.table("subscriptions").rows) == {("p1|c1", "s1")}


def test_a_record_from_before_sent_existed_is_settled_from_its_before_snapshot_and_request_id():
    service, client, clock = killed_after_patch("subscription.quantity", {"quantity": 12})
    entity, _ = service.log_store.find("p1", "k1")
    entity["sent"] = ""  # as written by the previous version: before + request_id only
    service.log_store.replace(entity)
    client.upstream(quantity=20)
    clock.advance(minutes=20)
    record = service.handle_message(message(quantity=12), dequeue_count=2)
    assert record.state == "conflict" and len(client.patches) == 1 and client.sub["quantity"] == 20
