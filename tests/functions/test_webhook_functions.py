"""The webhook function as the host calls it: a FunctionApp with only its blueprint, real
``func.HttpRequest`` objects built from deliveries the simulator signed (Azurite + simulator)."""
from __future__ import annotations

import json

import azure.functions as func
import pytest

from sync.webhooks import functions as webhook_functions
from tests.fakes.webhooks import capture_server, consented_webhook_runtime, http_request

PROVIDER_ID = "hook-fn"


@pytest.fixture(scope="module")
def functions():
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(webhook_functions.bp)
    return {f.get_function_name(): f for f in app.get_functions()}  # get_functions() only once


@pytest.fixture
def handler(functions):
    return functions["partner_center_webhook"].get_user_function()


@pytest.fixture
def runtime(storage, simulator):
    yield from consented_webhook_runtime(simulator, storage, PROVIDER_ID)


@pytest.fixture
def deliveries(runtime, simulator):
    """Deliveries signed by the simulator, captured (answered 200) and not yet processed."""
    with capture_server() as (base, received):
        url = f"{base}/api/webhooks/partner-center/{PROVIDER_ID}?code=test-key"
        runtime.webhook_registrations.register(PROVIDER_ID, url, ["subscription-updated", "invoice-ready", "test-created"])
        yield simulator, received


def call(handler, request) -> tuple[int, dict]:
    response = handler(request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def test_binding(functions):
    bindings = json.loads(functions["partner_center_webhook"].get_function_json())["bindings"]
    trigger = next(b for b in bindings if b["type"] == "httpTrigger")
    assert trigger["route"] == "webhooks/partner-center/{provider}"
    assert trigger["methods"] == ["POST"]
    assert trigger["authLevel"] == "FUNCTION"


def test_signed_delivery_is_accepted_and_tampered_copy_refused(handler, deliveries):
    sim, received = deliveries
    sim.control.send_webhook("test-created", "https://127.0.0.1/webhooks/v1/registration/validationEvents/x")
    [delivery] = received
    status, body = call(handler, http_request(delivery))
    assert status == 200 and body["outcome"] == "acknowledged" and body["event"] == "test-created"

    status, body = call(handler, http_request(delivery, body=delivery.body.replace(b"test-created", b"test-creates")))
    assert status == 401 and "does not match" in body["error"]


def test_unknown_provider_and_oversized_body(handler, deliveries):
    sim, received = deliveries
    sim.control.send_webhook("test-created", "https://127.0.0.1/test")
    status, body = call(handler, http_request(received[0], provider="nobody"))
    assert status == 404 and "error" in body
    status, body = call(handler, http_request(received[0], body=b"{" + b" " * 70_000 + b"}"))
    assert status == 413


def test_signed_but_malformed_event_is_400(handler, deliveries):
    sim, received = deliveries
    sim.control.send_webhook("subscription-updated", "https://127.0.0.1/v1/customers/only-a-customer")
    status, body = call(handler, http_request(received[0]))
    assert status == 400 and "subscriptions" in body["error"]


def test_unexpected_failure_is_json_without_trace(handler, deliveries, runtime, monkeypatch):
    sim, received = deliveries
    sim.control.send_webhook("test-created", "https://127.0.0.1/test")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runtime.providers.__class__, "find_provider", broken)
    status, body = call(handler, http_request(received[0]))
    assert status == 500 and body == {"error": "internal error"}
