"""Replay protection, the age window and provider binding of webhook events (issue 9, points
15, 16 and 7's webhook entry point), with fakes: a signed event is acted on once, only while it
is recent, and only on the URL of the provider its customer belongs to."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.providers import ProviderConnection
from sync.webhooks.errors import ForeignCustomer, MalformedEvent, SignatureRejected
from sync.webhooks.events import WebhookEvent
from sync.webhooks.replay import event_identity
from sync.webhooks.service import WEBHOOK_EVENTS_TABLE, EnqueueFailed, WebhookService
from sync.webhooks.verify import SignatureVerifier
from tests.fakes.partner_center import FakeQueues, FakeTables
from tests.fakes.webhooks import NOW, FakeCustomers, MemoryAcceptedEvents, make_ca, make_leaf, signed_headers

CUSTOMER = "0c39d6d5-c70d-4c55-bc02-f620844f3fd1"
OTHER_CUSTOMER = "9b2f7c1e-0d3a-4e5b-8f6a-1c2d3e4f5a6b"
SUBSCRIPTION = "12345678-9abc-def0-1234-56789abcdef0"


class FakeProviders:
    def __init__(self, *providers: ProviderConnection):
        self.providers = {p.id: p for p in providers}

    def find_provider(self, provider_id):
        return self.providers.get(provider_id)


class FlakyQueues(FakeQueues):
    """Fails the first send, then works."""

    def __init__(self):
        super().__init__()
        self.failures = 1

    def send_json(self, queue_name, message, *, delay_seconds=None):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("storage is down")
        super().send_json(queue_name, message)


def provider(pid: str) -> ProviderConnection:
    return ProviderConnection(id=pid, name=pid, country_code="US", currency_code="USD",
                              tenant_id="cd613e30-d8f1-4adf-91b7-584a2265b1f5")


@pytest.fixture(scope="module")
def pki():
    ca = make_ca()
    return ca, make_leaf(ca)


def make_service(pki, **options) -> WebhookService:
    ca, leaf = pki
    verifier = SignatureVerifier(allowed_hosts=["certs.example.test"], fetch=lambda url: leaf.pem,
                                 trust_anchors=lambda: [ca.cert], clock=lambda: NOW.timestamp())
    options.setdefault("customers", FakeCustomers({"p1": {CUSTOMER}, "p2": {OTHER_CUSTOMER}}))
    return WebhookService(FakeProviders(provider("p1"), provider("p2")), FakeTables(), options.pop("queues", FakeQueues()),
                          verifier, now=lambda: NOW, accepted=MemoryAcceptedEvents(), **options)


@pytest.fixture
def service(pki):
    return make_service(pki)


def body_for(changed: str = "2026-03-01T11:59:00.1234567Z", customer: str = CUSTOMER,
             event: str = "subscription-updated") -> bytes:
    return json.dumps({"EventName": event, "ResourceName": "subscription", "AuditUri": None,
                       "ResourceUri": f"https://api.partnercenter.microsoft.com/webhooks/v1/customers/{customer}"
                                      f"/subscriptions/{SUBSCRIPTION}",
                       "ResourceChangeUtcDate": changed}).encode()


def post(service, pki, body: bytes, provider_id: str = "p1"):
    return service.receive(provider_id, headers=signed_headers(pki[1].key, body), body=body)


def outcomes(service) -> list[str]:
    return sorted(r["outcome"] for r in service.tables.table(WEBHOOK_EVENTS_TABLE).rows.values())


def sent(service) -> list[dict]:
    return service.queues.sent.get("sync-customer", [])


# ---- 15: replay and age ----------------------------------------------------------------------


def test_an_event_from_2019_posted_30_times_queues_nothing(service, pki):
    """Before: each of the 30 posts queued a sync-customer message."""
    body = body_for("2019-06-01T10:00:00Z")
    receipts = [post(service, pki, body) for _ in range(30)]
    assert sent(service) == []
    assert {r.outcome.value for r in receipts} == {"stale"} and receipts[0].to_json()["status"] == "accepted"
    assert outcomes(service) == ["stale"] * 30  # recorded and acknowledged, not acted on


def test_a_fresh_event_posted_30_times_queues_once(service, pki):
    """Before: 30 messages. After: the first is queued, the 29 repeats are answered 200 as duplicates."""
    body = body_for()
    receipts = [post(service, pki, body) for _ in range(30)]
    assert len(sent(service)) == 1
    assert [r.outcome.value for r in receipts] == ["enqueued"] + ["duplicate"] * 29
    assert outcomes(service) == ["duplicate"] * 29 + ["enqueued"]


def test_a_new_change_of_the_same_resource_is_not_a_repeat(service, pki):
    post(service, pki, body_for("2026-03-01T11:00:00Z"))
    post(service, pki, body_for("2026-03-01T11:30:00Z"))
    assert len(sent(service)) == 2


def test_the_identity_ignores_id_case():
    a = WebhookEvent("subscription-updated", f"/customers/{CUSTOMER}/subscriptions/x", "s", "2026-03-01T00:00:00Z")
    b = WebhookEvent("Subscription-Updated", f"/customers/{CUSTOMER.upper()}/subscriptions/X", "s", "2026-03-01T00:00:00Z")
    assert event_identity(a) == event_identity(b)


def test_the_age_window_is_configurable(pki):
    body = body_for("2026-02-01T00:00:00Z")  # 28 days before NOW
    assert post(make_service(pki), pki, body).outcome.value == "stale"  # default 7 days
    wide = make_service(pki, max_age=timedelta(days=60))
    assert post(wide, pki, body).outcome.value == "enqueued" and len(sent(wide)) == 1


def test_an_undated_event_that_would_queue_work_is_400(service, pki):
    with pytest.raises(MalformedEvent, match="ResourceChangeUtcDate"):
        post(service, pki, body_for("yesterday"))
    assert sent(service) == [] and outcomes(service) == ["rejected"]


def test_a_queue_failure_does_not_make_the_redelivery_a_duplicate(pki):
    service = make_service(pki, queues=FlakyQueues())
    body = body_for()
    with pytest.raises(EnqueueFailed):
        post(service, pki, body)
    assert post(service, pki, body).outcome.value == "enqueued" and len(sent(service)) == 1


def test_a_forged_copy_of_an_accepted_event_is_still_a_signature_failure(service, pki):
    body = body_for()
    post(service, pki, body)
    with pytest.raises(SignatureRejected):
        service.receive("p1", headers=signed_headers(pki[1].key, body), body=body.replace(b"11:59", b"11:58"))
    assert len(sent(service)) == 1


# ---- 16: bound to the provider ---------------------------------------------------------------


def test_an_event_for_another_providers_customer_is_404_and_queues_nothing(service, pki):
    """Before: p1's signed event posted to p2's URL queued a sync of p1's customer under p2."""
    body = body_for()
    with pytest.raises(ForeignCustomer) as caught:
        post(service, pki, body, provider_id="p2")
    assert caught.value.status == 404 and sent(service) == []
    assert outcomes(service) == ["rejected"]
    # the refusal on p2's URL does not spend the event: on p1's own URL it is acted on
    assert post(service, pki, body).outcome.value == "enqueued" and sent(service)[0]["provider"] == "p1"


def test_the_binding_check_is_asked_once_per_new_event(service, pki):
    body = body_for()
    for _ in range(5):
        post(service, pki, body)
    assert service.customers.asked == [("p1", CUSTOMER)]


def test_a_failing_binding_check_releases_the_event_for_redelivery(pki):
    class Unreachable(FakeCustomers):
        def belongs(self, provider, customer_id):
            if not self.asked:
                self.asked.append((provider.id, customer_id))
                raise ConnectionError("partner center is down")
            return True

    service = make_service(pki, customers=Unreachable())
    with pytest.raises(ConnectionError):
        post(service, pki, body_for())
    assert post(service, pki, body_for()).outcome.value == "enqueued"


def test_events_without_a_customer_are_not_bound(service, pki):
    body = json.dumps({"EventName": "invoice-ready", "ResourceUri": "https://x/v1/invoices/G000123456",
                       "ResourceName": "invoice", "ResourceChangeUtcDate": "2026-03-01T11:00:00Z"}).encode()
    assert post(service, pki, body, provider_id="p2").outcome.value == "enqueued"
    assert service.customers.asked == []


# ---- 7: the customer id from the URI is canonical ----------------------------------------------


def test_an_upper_case_customer_id_in_the_uri_is_queued_lower_case(service, pki):
    """Before: the message carried the id as the URI spelled it, a second partition for the sync."""
    receipt = post(service, pki, body_for(customer=CUSTOMER.upper()))
    assert receipt.outcome.value == "enqueued"
    assert sent(service)[0]["customer"] == CUSTOMER
    assert service.customers.asked == [("p1", CUSTOMER)]


# ---- 11: a deeply nested body, signed or not -------------------------------------------------


DEEP = b'{"a":' * 2500 + b"1" + b"}" * 2500  # ~15 KB


def test_a_signed_deeply_nested_body_is_400_and_recorded(service, pki):
    with pytest.raises(MalformedEvent, match="nested"):
        post(service, pki, DEEP)
    assert outcomes(service) == ["rejected"] and sent(service) == []


def test_an_unsigned_deeply_nested_body_is_401_and_recorded(service):
    with pytest.raises(SignatureRejected):
        service.receive("p1", headers={"Content-Type": "application/json"}, body=DEEP)
    assert outcomes(service) == ["rejected"]
