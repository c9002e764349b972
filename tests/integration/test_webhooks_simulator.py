"""End to end: `pcsync webhook register` against the simulator's registration API, signed events
delivered by the simulator to a local server that hands them to the registered function, queue
messages and `webhookevents` rows checked in Azurite."""
from __future__ import annotations

import json

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.tables import escape_key
from sync.webhooks import functions as webhook_functions
from sync.webhooks.cli import register
from sync.webhooks.service import WEBHOOK_EVENTS_TABLE
from tests.fakes.webhooks import capture_server, consented_webhook_runtime, http_request

PROVIDER_ID = "hook-partner"


@pytest.fixture(scope="module")
def handler():
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(webhook_functions.bp)
    return {f.get_function_name(): f for f in app.get_functions()}["partner_center_webhook"].get_user_function()


@pytest.fixture
def runtime(storage, simulator):
    yield from consented_webhook_runtime(simulator, storage, PROVIDER_ID)


@pytest.fixture
def pcsync_endpoint(runtime, handler):
    """A local HTTP server forwarding each POST to the function; yields (callback URL, deliveries)."""
    def forward(delivery):
        response = handler(http_request(delivery))
        return response.status_code, response.get_body()

    with capture_server(forward) as (base, received):
        yield f"{base}/api/webhooks/partner-center/{PROVIDER_ID}?code=test-function-key", received


def queued(runtime, queue: str) -> list[dict]:
    client = QueueClient.from_connection_string(runtime.settings.storage.connection_string, queue,
                                                message_decode_policy=TextBase64DecodePolicy())
    try:
        return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]
    except Exception:  # the queue does not exist yet
        return []


def events(runtime) -> list[dict]:
    return list(runtime.tables.table(WEBHOOK_EVENTS_TABLE).list_entities(partition_key=escape_key(PROVIDER_ID)))


def test_registered_events_become_queue_messages_and_records(runtime, simulator, pcsync_endpoint):
    url, received = pcsync_endpoint
    registration = runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated", "invoice-ready", "test-created"])
    assert registration["WebhookUrl"] == url
    assert sorted(registration["WebhookEvents"]) == ["invoice-ready", "subscription-updated", "test-created"]
    # registering again replaces the registration (PUT) instead of failing with 409
    assert runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated", "invoice-ready", "test-created"])

    customer = simulator.control.customers()[0]["id"]
    subscription = simulator.control.subscriptions(customer)[0]["id"]
    uri = f"{simulator.partner_center_url}/webhooks/v1/customers/{customer}/subscriptions/{subscription}"
    delivered = simulator.control.send_webhook("subscription-updated", uri)
    assert delivered["status"] == 200, delivered
    invoice = simulator.control.invoices()[0]["id"]
    delivered = simulator.control.send_webhook("invoice-ready", f"{simulator.partner_center_url}/v1/invoices/{invoice}")
    assert delivered["status"] == 200, delivered

    [sync_message] = queued(runtime, "sync-customer")
    assert sync_message["provider"] == PROVIDER_ID and sync_message["customer"] == customer
    [invoice_message] = queued(runtime, "import-invoice")
    assert invoice_message["provider"] == PROVIDER_ID and invoice_message["invoice"] == invoice
    assert sync_message["correlationId"] != invoice_message["correlationId"]

    rows = events(runtime)
    assert sorted((r["event_name"], r["outcome"], r["queue"]) for r in rows) == [
        ("invoice-ready", "enqueued", "import-invoice"), ("subscription-updated", "enqueued", "sync-customer")]
    assert all(r["status"] == 200 and not any("Signature" in str(v) for v in r.values()) for r in rows)

    # the simulator sees 200 in its own delivery log too
    assert [d["status"] for d in simulator.control.webhook_deliveries()[-2:]] == [200, 200]
    assert len(received) == 2


def test_tampered_body_is_401_and_queues_nothing(runtime, simulator, pcsync_endpoint, handler):
    url, received = pcsync_endpoint
    runtime.webhook_registrations.register(PROVIDER_ID, url, ["invoice-ready"])
    invoice = simulator.control.invoices()[0]["id"]
    simulator.control.send_webhook("invoice-ready", f"{simulator.partner_center_url}/v1/invoices/{invoice}")
    original = received[-1]
    before = len(queued(runtime, "import-invoice"))

    tampered = original.body.replace(invoice.encode(), b"G999999999")
    response = handler(http_request(original, body=tampered))
    assert response.status_code == 401
    assert len(queued(runtime, "import-invoice")) == before
    newest = sorted(events(runtime), key=lambda r: r["RowKey"])[0]
    assert (newest["outcome"], newest["status"]) == ("rejected", 401)


def test_unregistered_event_is_refused_by_partner_center(runtime, simulator, pcsync_endpoint):
    url, _ = pcsync_endpoint
    runtime.webhook_registrations.register(PROVIDER_ID, url, ["test-created"])
    from simulator.testing import ControlError

    with pytest.raises(ControlError):
        simulator.control.send_webhook("invoice-ready", f"{simulator.partner_center_url}/v1/invoices/G1")


def test_cli_register_and_status(runtime, simulator, pcsync_endpoint, capsys):
    import argparse

    url, _ = pcsync_endpoint
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webhook", "register", "--provider", PROVIDER_ID, "--url", url])
    assert args.handler(args, runtime) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "test-function-key" not in json.dumps(printed) and printed["WebhookUrl"].endswith("code=***")

    simulator.control.send_webhook("test-created", f"{simulator.partner_center_url}/webhooks/v1/registration/test")
    args = parser.parse_args(["webhook", "status", "--provider", PROVIDER_ID])
    assert args.handler(args, runtime) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["registered"] and report["recentEvents"][0]["event_name"] == "test-created"
    assert "test-function-key" not in json.dumps(report)

    args = parser.parse_args(["webhook", "register", "--provider", PROVIDER_ID, "--url", url, "--events", "no-such-event"])
    from shared.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        args.handler(args, runtime)


# ---- issue 9: replay, age window, provider binding (Azurite + simulator) ----------------------


def _subscription_uri(simulator, customer: str) -> str:
    subscription = simulator.control.subscriptions(customer)[0]["id"] if customer else "x"
    return f"{simulator.partner_center_url}/webhooks/v1/customers/{customer}/subscriptions/{subscription}"


def test_a_signed_event_replayed_30_times_at_once_queues_one_sync(runtime, simulator, pcsync_endpoint, handler):
    """Before: 30 posts of one signed delivery queued 30 syncs. The claim is an insert in
    Azurite, so 30 concurrent posts still queue exactly one."""
    from concurrent.futures import ThreadPoolExecutor

    url, received = pcsync_endpoint
    runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated"])
    customer = simulator.control.customers()[0]["id"]
    simulator.control.send_webhook("subscription-updated", _subscription_uri(simulator, customer))
    delivery = received[-1]
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: handler(http_request(delivery)), range(30)))
    assert {a.status_code for a in answers} == {200}
    assert len(queued(runtime, "sync-customer")) == 1  # the first delivery (forwarded) + 30 repeats
    outcomes = sorted(r["outcome"] for r in events(runtime))
    assert outcomes == ["duplicate"] * 30 + ["enqueued"]


def test_a_signed_event_dated_2019_posted_30_times_queues_nothing(runtime, simulator, pcsync_endpoint, handler):
    url, received = pcsync_endpoint
    runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated"])
    customer = simulator.control.customers()[0]["id"]
    simulator.control.send_webhook("subscription-updated", _subscription_uri(simulator, customer),
                                   ResourceChangeUtcDate="2019-05-14T08:00:00.0000000Z")
    for _ in range(29):
        assert handler(http_request(received[-1])).status_code == 200
    assert queued(runtime, "sync-customer") == []
    assert sorted(r["outcome"] for r in events(runtime)) == ["stale"] * 30


def test_an_event_naming_a_customer_the_provider_does_not_have_is_404(runtime, simulator, pcsync_endpoint, handler):
    """Before: accepted and queued. The customer is neither in the provider's customers table nor
    known to Partner Center with the provider's consent (one read)."""
    url, received = pcsync_endpoint
    runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated"])
    stranger = "5f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    uri = f"{simulator.partner_center_url}/webhooks/v1/customers/{stranger}/subscriptions/{stranger}"
    simulator.control.send_webhook("subscription-updated", uri)
    assert received[-1] and queued(runtime, "sync-customer") == []
    response = handler(http_request(received[-1]))
    assert response.status_code == 404 and "not a customer of provider" in json.loads(response.get_body())["error"]
    assert queued(runtime, "sync-customer") == []


def test_a_known_customer_row_binds_without_a_partner_center_read(runtime, simulator, pcsync_endpoint, handler):
    """A customer synced for the provider is bound from its row; an upper-case id in the URI is
    looked up and queued in its canonical (lower-case) form."""
    from sync.streams import CUSTOMERS

    url, received = pcsync_endpoint
    runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated"])
    known = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"  # not in the simulator: only the row vouches for it
    runtime.tables.table(CUSTOMERS.table).upsert_entity(
        {"PartitionKey": CUSTOMERS.partition_key(PROVIDER_ID), "RowKey": known, "id": known})
    uri = f"{simulator.partner_center_url}/webhooks/v1/customers/{known.upper()}/subscriptions/{known}"
    simulator.control.send_webhook("subscription-updated", uri)
    [message] = queued(runtime, "sync-customer")
    assert message["customer"] == known
