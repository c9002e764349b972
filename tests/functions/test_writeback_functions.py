"""The write-back blueprint's functions, called the way the host calls them (Azurite + simulator).

Only this blueprint is registered, on a local FunctionApp, so these tests do not depend on how
function_app.py is composed; ``get_functions()`` is called once per session.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from devservices import register_and_consent
from shared.tables import escape_key
from sync.writeback.intake import ENQUEUE_GRACE

PROVIDER_ID = "wbfn-partner"


@pytest.fixture(scope="session")
def functions():
    from sync.writeback.functions import bp

    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(bp)
    return {f.get_function_name(): f for f in app.get_functions()}


@pytest.fixture
def consented(sim_runtime, simulator):
    simulator.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0, write_202=0)
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID, name="Write-back partner")
    assert outcome.succeeded, outcome.message
    return sim_runtime


def post(functions, body) -> tuple[int, dict, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = func.HttpRequest(method="POST", url="http://localhost/api/writebacks", body=raw)
    response = functions["writebacks_submit"].get_user_function()(request)
    return response.status_code, json.loads(response.get_body() or b"null"), dict(response.headers)


def get(functions, key, params=None) -> tuple[int, dict]:
    request = func.HttpRequest(method="GET", url=f"http://localhost/api/writebacks/{key}", body=b"",
                               params=params or {}, route_params={"key": key})
    response = functions["writebacks_get"].get_user_function()(request)
    return response.status_code, json.loads(response.get_body() or b"null")


def deliver(functions, body: bytes, *, message_id="m1", dequeue_count=1) -> None:
    functions["writebacks_queue"].get_user_function()(
        QueueMessage(id=message_id, body=body, dequeue_count=dequeue_count))


def queued(runtime) -> list[bytes]:
    client = QueueClient.from_connection_string(runtime.settings.storage.connection_string, "writebacks",
                                                message_decode_policy=TextBase64DecodePolicy())
    return [m.content.encode() for m in client.receive_messages(max_messages=32, visibility_timeout=60)]


def records(runtime) -> list[dict]:
    return list(runtime.tables.table("writebackops").list_entities())


def test_bindings(functions):
    queue = json.loads(functions["writebacks_queue"].get_function_json())["bindings"][0]
    assert (queue["type"], queue["queueName"], queue["connection"]) == ("queueTrigger", "writebacks", "PCSYNC_STORAGE")
    for name, route, methods in (("writebacks_submit", "writebacks", ["POST"]),
                                 ("writebacks_get", "writebacks/{key}", ["GET"])):
        http = json.loads(functions[name].get_function_json())["bindings"][0]
        assert (http["route"], http["methods"], http["authLevel"]) == (route, methods, "FUNCTION")


def test_submit_queue_apply_and_read_back_without_leaking_secrets(functions, consented, simulator, caplog):
    runtime = consented
    customer = simulator.control.customers()[0]["id"]
    sub = next(s for s in simulator.control.subscriptions(customer) if s["status"] == "active")
    body = {"idempotencyKey": "order-4711", "provider": PROVIDER_ID, "customer": customer,
            "operation": "subscription.quantity", "subscription": sub["id"], "quantity": sub["quantity"] + 2}
    caplog.set_level(logging.DEBUG)

    status, record, headers = post(functions, body)
    assert status == 202 and record["state"] == "accepted" and headers["Location"] == "/api/writebacks/order-4711"
    (message,) = queued(runtime)
    assert json.loads(message)["idempotencyKey"] == "order-4711"

    deliver(functions, message)
    status, record = get(functions, "order-4711")
    assert status == 200 and record["state"] == "succeeded", record
    assert record["before"]["quantity"] == sub["quantity"] and record["after"]["quantity"] == sub["quantity"] + 2
    assert get(functions, "order-4711", {"provider": PROVIDER_ID})[1] == record
    row = runtime.tables.table("subscriptions").find_entity(escape_key(f"{PROVIDER_ID}|{customer}"), escape_key(sub["id"]))
    assert row["quantity"] == sub["quantity"] + 2

    # the same request again: the record, not a second change; a different body: 409
    status, again, _ = post(functions, body)
    assert status == 200 and again["state"] == "succeeded" and queued(runtime) == []
    status, conflict, _ = post(functions, body | {"quantity": 1})
    assert status == 409 and "different request" in conflict["error"]
    deliver(functions, message, message_id="m1", dequeue_count=2)  # a redelivery changes nothing
    assert simulator.control.calls()["PATCH /v1/customers/{id}/subscriptions/{id}"]["count"] == 1


    provider = runtime.providers.get_provider(PROVIDER_ID)
    secrets = [runtime.tokens.for_provider(provider).access_token(),
               runtime.secrets.get_secret(provider.refresh_token_secret_name), simulator.client_secret]
    stored = json.dumps(records(runtime), default=str)
    for secret in secrets:
        assert secret not in stored and secret not in caplog.text
    assert "Bearer" not in stored and not re.search(r"eyJ[\w-]+\.[\w-]+\.", stored)  # no JWT (etags are base64 too)


@pytest.mark.parametrize("body, problems", [
    ({"provider": PROVIDER_ID, "customer": "c1", "operation": "subscription.quantity", "subscription": "s1",
      "quantity": 0, "colour": "red"},
     {"idempotencyKey": "is required", "quantity": "must be between 1 and 100000", "colour": "unknown field"}),
    ({"idempotencyKey": "k 1", "provider": "Not A Slug", "customer": "c1", "operation": "subscription.explode"},
     {"idempotencyKey": "must be", "provider": "must be a provider id", "operation": "must be one of"}),
    ({"idempotencyKey": "k1", "provider": PROVIDER_ID, "customer": "c1", "operation": "agreement.confirm",
      "subscription": "s1", "contact": {"firstName": "A", "email": "nope"}},
     {"subscription": "is not used by agreement.confirm", "contact": "lastName is required"}),
])
def test_invalid_requests_get_a_message_per_field(functions, runtime, body, problems):
    status, answer, _ = post(functions, body)
    assert status == 400 and set(answer["problems"]) == set(problems)
    for name, start in problems.items():
        assert answer["problems"][name].startswith(start) or start in answer["problems"][name]
    assert records(runtime) == []


def test_bad_json_oversized_and_unknown_provider(functions, runtime):
    assert post(functions, b"{not json")[0] == 400
    assert post(functions, b"x" * (64 * 1024 + 1))[0] == 413
    status, answer, _ = post(functions, {"idempotencyKey": "k1", "provider": "nobody", "customer": "c1",
                                         "operation": "subscription.suspend", "subscription": "s1"})
    assert status == 404 and "nobody" in answer["error"]
    assert get(functions, "k1")[0] == 404
    assert get(functions, "k1", {"provider": "Bad Id"})[0] == 400


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b'["x"]', b"{" + b" " * (64 * 1024) + b"}",
                                  b'{"idempotencyKey": "q1", "provider": "p", "customer": "c", '
                                  b'"operation": "subscription.suspend", "subscription": "s", "extra": 1}'])
def test_bad_queue_messages_are_recorded_as_rejected_not_raised(functions, runtime, body, caplog):
    with caplog.at_level("WARNING"):
        deliver(functions, body, message_id="bad-1")
    (record,) = records(runtime)
    assert record["PartitionKey"] == "_invalid" and record["RowKey"] == "bad-1"
    assert record["state"] == "rejected" and record["reason"].startswith("invalid write-back message")
    assert "Traceback" not in caplog.text and "rejected" in caplog.text


def test_consent_needed_is_rejected_without_calling_partner_center(functions, runtime, simulator):
    runtime.providers.put_provider(PROVIDER_ID, {"name": "No consent", "countryCode": "US", "currencyCode": "USD",
                                                 "tenantId": simulator.tenant_id})
    simulator.control.reset_calls()
    body = {"idempotencyKey": "k-consent", "provider": PROVIDER_ID, "customer": "c1",
            "operation": "subscription.suspend", "subscription": "s1"}
    deliver(functions, json.dumps(body).encode())
    status, record = get(functions, "k-consent")
    assert status == 200 and record["state"] == "rejected" and record["reason"].startswith("consent needed")
    assert not [k for k in simulator.control.calls() if k.startswith(("GET /v1", "PATCH /v1"))]


# -- one queue message per key; the same body is the same request (issue 9) ---------------------


def subscription_body(simulator, key: str) -> dict:
    customer = simulator.control.customers()[0]["id"]
    sub = next(s for s in simulator.control.subscriptions(customer) if s["status"] == "active")
    return {"idempotencyKey": key, "provider": PROVIDER_ID, "customer": customer,
            "operation": "subscription.quantity", "subscription": sub["id"], "quantity": sub["quantity"] + 1}


def test_eight_clients_posting_one_key_at_once_queue_one_message(functions, consented, simulator):
    body = subscription_body(simulator, "same-key-8")
    start = threading.Barrier(8)

    def client(_):
        start.wait()
        return post(functions, body)[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(client, range(8)))
    assert statuses == [200] * 7 + [202]
    assert len(queued(consented)) == 1 and len(records(consented)) == 1
    (record,) = records(consented)
    assert (record["state"], record["enqueue"]) == ("accepted", "sent")


def test_a_record_never_queued_after_a_crash_is_queued_once_by_a_resubmission(functions, consented, simulator):
    from sync.writeback.record import EnqueueState
    from sync.writeback.request import parse_request

    body = subscription_body(simulator, "crashed-before-enqueue")
    service = consented.writeback
    record, created = service.accept(parse_request(body), source="http", enqueue=EnqueueState.SENDING)
    assert created  # ... and the process died before the queue send
    entity = record.to_entity()
    entity["enqueued_at"] = record.enqueued_at - ENQUEUE_GRACE - dt.timedelta(seconds=1)
    service.log_store.replace(entity)
    statuses = [post(functions, body)[0] for _ in range(3)]
    assert statuses == [202, 200, 200] and len(queued(consented)) == 1


def test_the_same_agreement_body_a_second_later_is_the_same_request(functions, consented):
    body = {"idempotencyKey": "agree-1", "provider": PROVIDER_ID, "customer": "c1", "operation": "agreement.confirm",
            "contact": {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}}
    first_status, first, _ = post(functions, body)
    time.sleep(1.1)  # the server's default dateAgreed differs now
    status, again, _ = post(functions, body)
    assert (first_status, status) == (202, 200) and again["params"]["dateAgreed"] == first["params"]["dateAgreed"]
    (message,) = queued(consented)
    assert "dateAgreed" not in json.loads(message)


def test_an_upper_case_customer_id_is_stored_and_queued_in_lower_case(functions, consented, simulator):
    body = subscription_body(simulator, "upper-case")
    status, record, _ = post(functions, {**body, "customer": body["customer"].upper(),
                                         "subscription": body["subscription"].upper()})
    assert status == 202 and record["customer"] == body["customer"].lower()
    assert record["subscription"] == body["subscription"].lower()
    (message,) = queued(consented)
    assert json.loads(message)["customer"] == body["customer"].lower()
    assert post(functions, body)[0] == 200  # the same request in the original case
