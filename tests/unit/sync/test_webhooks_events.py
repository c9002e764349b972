"""Webhook body validation, event -> work mapping, and the service with fakes."""
from __future__ import annotations

import json

import pytest

from shared.errors import ValidationFailed
from shared.providers import ProviderConnection
from sync.invoices.service import IMPORT_INVOICE_QUEUE
from sync.webhooks.errors import MalformedEvent, PayloadTooLarge, SignatureRejected, UnknownProvider
from sync.webhooks.events import WebhookEvent, map_event, parse_event
from sync.webhooks.service import WEBHOOK_EVENTS_TABLE, EnqueueFailed, WebhookService
from sync.webhooks.verify import SignatureVerifier
from tests.fakes.partner_center import FakeQueues, FakeTables
from tests.fakes.webhooks import NOW, FakeCustomers, MemoryAcceptedEvents, make_ca, make_leaf, signed_headers

from tests.support import SAMPLES_DIR as SAMPLES
CUSTOMER = "0c39d6d5-c70d-4c55-bc02-f620844f3fd1"
SUBSCRIPTION = "12345678-9abc-def0-1234-56789abcdef0"


def event(name: str, uri: str) -> WebhookEvent:
    return WebhookEvent(name, uri, name.split("-")[0], "2026-03-01T12:00:00+00:00")


# ---- body ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["webhook-callback-test-created.json", "webhook-event-invoice-ready.json",
                                    "webhook-event-usagerecords-threshold-exceeded.json"])
def test_documented_samples_parse(sample):
    parsed = parse_event((SAMPLES / sample).read_bytes())
    data = json.loads((SAMPLES / sample).read_text())
    assert (parsed.event_name, parsed.resource_uri, parsed.resource_name) == (
        data["EventName"], data["ResourceUri"], data["ResourceName"])
    assert parsed.audit_uri is None


def test_keys_are_matched_case_insensitively():
    parsed = parse_event(b'{"eventname":"invoice-ready","RESOURCEURI":"/v1/invoices/G1","resourceName":"invoice",'
                         b'"resourcechangeutcdate":"2026-03-01T00:00:00Z","AuditUri":"https://x/a"}')
    assert parsed.event_name == "invoice-ready" and parsed.audit_uri == "https://x/a"


@pytest.mark.parametrize("body, message", [
    (b"", "not UTF-8 JSON"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested more than 32 levels deep"),
    (b'{"EventName":"x","ResourceUri":"u","ResourceName":"n"}', "ResourceChangeUtcDate"),
    (b'{"EventName":"","ResourceUri":"u","ResourceName":"n","ResourceChangeUtcDate":"d"}', "EventName"),
    (b'{"EventName":"a b","ResourceUri":"u","ResourceName":"n","ResourceChangeUtcDate":"d"}', "not an event name"),
    (b'{"EventName":"x","ResourceUri":7,"ResourceName":"n","ResourceChangeUtcDate":"d"}', "ResourceUri"),
])
def test_malformed_bodies(body, message):
    with pytest.raises(MalformedEvent, match=message):
        parse_event(body)


def test_oversized_body():
    with pytest.raises(PayloadTooLarge):
        parse_event(b"{" + b" " * (64 * 1024) + b"}")


# ---- mapping -------------------------------------------------------------------------------


def test_subscription_updated_becomes_the_deltas_targeted_work():
    uri = f"http://api.partnercenter.microsoft.com/webhooks/v1/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}"
    work = map_event("p1", event("subscription-updated", uri), correlation_id="c-1")
    assert work.queue == "sync-customer" and work.outcome == "enqueued"
    assert work.message == {"provider": "p1", "customer": CUSTOMER, "correlationId": "c-1",
                            "resources": ["subscriptions"], "mode": "delta", "source": "webhook"}


def test_invoice_ready_becomes_an_import_invoice_message():
    work = map_event("p1", event("Invoice-Ready", "https://api.partnercenter.microsoft.com/v1/invoices/G000123456"),
                     correlation_id="c-2")
    assert work.queue == IMPORT_INVOICE_QUEUE == "import-invoice"
    assert work.message == {"provider": "p1", "invoice": "G000123456", "correlationId": "c-2"}


def test_test_created_is_acknowledged_and_others_ignored():
    assert map_event("p1", event("test-created", "http://localhost/v1/webhooks/registration/test"),
                     correlation_id="c").outcome == "acknowledged"
    ignored = map_event("p1", event("usagerecords-thresholdExceeded", "https://x/v1/customers/usagerecords"),
                        correlation_id="c")
    assert (ignored.outcome, ignored.queue) == ("ignored", None) and "not handled" in ignored.reason


@pytest.mark.parametrize("name, uri", [
    ("subscription-updated", "https://x/v1/customers/abc"),
    ("subscription-updated", "https://x/v1/customers/bad%20id!/subscriptions/s1"),
    ("invoice-ready", "https://x/v1/invoices/"),
    ("invoice-ready", "https://x/v1/invoices/../../etc"),
])
def test_handled_events_need_their_resource(name, uri):
    with pytest.raises(MalformedEvent):
        map_event("p1", event(name, uri), correlation_id="c")


# ---- the service with fakes ----------------------------------------------------------------


class FakeProviders:
    def __init__(self, *providers: ProviderConnection):
        self.providers = {p.id: p for p in providers}

    def find_provider(self, provider_id):
        return self.providers.get(provider_id)


class BrokenQueues:
    def send_json(self, *args, **kwargs):
        raise ConnectionError("storage is down")


URL = "https://certs.example.test/cert.cer"


@pytest.fixture(scope="module")
def pki():
    ca = make_ca()
    return ca, make_leaf(ca)


def provider(pid: str, enabled: bool = True) -> ProviderConnection:
    return ProviderConnection(id=pid, name=pid, country_code="US", currency_code="USD",
                              tenant_id="cd613e30-d8f1-4adf-91b7-584a2265b1f5", enabled=enabled)


@pytest.fixture
def service(pki):
    ca, leaf = pki
    verifier = SignatureVerifier(allowed_hosts=["certs.example.test"], fetch=lambda url: leaf.pem,
                                 trust_anchors=lambda: [ca.cert], clock=lambda: NOW.timestamp())
    return WebhookService(FakeProviders(provider("p1"), provider("p2"), provider("off", enabled=False)), FakeTables(),
                          FakeQueues(), verifier, now=lambda: NOW, customers=FakeCustomers({"p1": {CUSTOMER}}),
                          accepted=MemoryAcceptedEvents())


def body_for(name: str, uri: str) -> bytes:
    return json.dumps({"EventName": name, "ResourceUri": uri, "ResourceName": name.split("-")[0],
                       "AuditUri": None, "ResourceChangeUtcDate": "2026-03-01T12:00:00+00:00"}).encode()


def rows(service):
    return list(service.tables.table(WEBHOOK_EVENTS_TABLE).rows.values())


def test_receive_enqueues_and_records(service, pki):
    body = body_for("subscription-updated", f"https://x/webhooks/v1/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}")
    receipt = service.receive("p1", headers=signed_headers(pki[1].key, body), body=body)
    assert receipt.to_json()["outcome"] == "enqueued" and receipt.queue == "sync-customer"
    assert service.queues.sent["sync-customer"] == [{"provider": "p1", "customer": CUSTOMER,
                                                    "correlationId": receipt.correlation_id,
                                                    "resources": ["subscriptions"], "mode": "delta",
                                                    "source": "webhook"}]
    [row] = rows(service)
    assert row["PartitionKey"] == "p1" and row["event_name"] == "subscription-updated"
    assert (row["outcome"], row["status"], row["queue"]) == ("enqueued", 200, "sync-customer")
    assert not any("Signature" in str(v) for v in row.values())


def test_rows_sort_newest_first(service, pki):
    times = iter([NOW, NOW.replace(hour=13)])
    service.now = lambda: next(times)
    for _ in range(2):
        body = body_for("test-created", "http://localhost/v1/webhooks/registration/test")
        service.receive("p1", headers=signed_headers(pki[1].key, body), body=body)
    keys = sorted(r["RowKey"] for r in rows(service))
    first = next(r for r in rows(service) if r["RowKey"] == keys[0])
    assert first["received_at"].hour == 13


def test_bad_signature_is_recorded_and_nothing_is_queued(service, pki):
    body = body_for("invoice-ready", "https://x/v1/invoices/G1")
    headers = signed_headers(pki[1].key, body)
    with pytest.raises(SignatureRejected) as caught:
        service.receive("p1", headers=headers, body=body.replace(b"G1", b"G2"))
    assert caught.value.status == 401
    assert service.queues.sent == {}
    [row] = rows(service)
    assert row["outcome"] == "rejected" and row["status"] == 401 and "does not match" in row["reason"]


@pytest.mark.parametrize("pid", ["nobody", "off"])
def test_unknown_disabled_provider(service, pki, pid):
    body = body_for("test-created", "http://localhost/test")
    with pytest.raises(UnknownProvider) as caught:
        service.receive(pid, headers=signed_headers(pki[1].key, body), body=body)
    assert caught.value.status == 404 and rows(service) == []


@pytest.mark.parametrize("pid", ["Bad_Id", "../x", "p1\n", "p1 ", " p1", "p1\x00", "p1\t"])
def test_invalid_provider_id_is_400(service, pki, pid):
    """Ids with whitespace or control characters are refused; "p1\n" was looked up as p1's
    neighbour (the id pattern's "$" matched before the newline)."""
    body = body_for("test-created", "http://localhost/test")
    with pytest.raises(ValidationFailed):
        service.receive(pid, headers=signed_headers(pki[1].key, body), body=body)
    assert rows(service) == []


def test_malformed_but_signed_event(service, pki):
    body = b'{"EventName":"subscription-updated"}'
    with pytest.raises(MalformedEvent):
        service.receive("p1", headers=signed_headers(pki[1].key, body), body=body)
    assert rows(service)[0]["status"] == 400


def test_queue_failure_is_a_503_for_redelivery(service, pki):
    service.queues = BrokenQueues()
    body = body_for("invoice-ready", "https://x/v1/invoices/G1")
    with pytest.raises(EnqueueFailed):
        service.receive("p1", headers=signed_headers(pki[1].key, body), body=body)
    assert rows(service)[0]["status"] == 503


def test_list_events(service, pki):
    body = body_for("test-created", "http://localhost/test")
    service.receive("p1", headers=signed_headers(pki[1].key, body), body=body)
    [recent] = service.list_events("p1")
    assert recent["event_name"] == "test-created" and recent["outcome"] == "acknowledged"
