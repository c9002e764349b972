"""The registered sync functions, called the way the host calls them (Azurite + simulator)."""
from __future__ import annotations

import json

import pytest

from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from devservices import register_and_consent
from shared.tables import escape_key

PROVIDER_ID = "fn-partner"


@pytest.fixture
def consented(sim_runtime, simulator):
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID, name="Functions partner")
    assert outcome.succeeded, outcome.message
    simulator.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0)
    return sim_runtime


def queued_messages(runtime, queue="sync-customer") -> list[dict]:
    client = QueueClient.from_connection_string(runtime.settings.storage.connection_string, queue,
                                                message_decode_policy=TextBase64DecodePolicy())
    return [json.loads(m.content) for m in client.receive_messages(max_messages=32, visibility_timeout=60)]


def test_bindings(registered_functions):
    timer = json.loads(registered_functions["sync_customers_timer"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%PCSYNC_SCHEDULE_CUSTOMERS%"
    assert timer["runOnStartup"] is False
    queue = json.loads(registered_functions["sync_customer_queue"].get_function_json())["bindings"][0]
    assert (queue["type"], queue["queueName"], queue["connection"]) == ("queueTrigger", "sync-customer", "PCSYNC_STORAGE")
    delta = json.loads(registered_functions["sync_delta_timer"].get_function_json())["bindings"][0]
    assert delta["type"] == "timerTrigger" and delta["schedule"] == "%PCSYNC_SCHEDULE_DELTA%"


def test_delta_timer_sweeps_first_then_queues_only_what_the_activity_log_names(registered_functions, consented,
                                                                               simulator):
    runtime = consented
    delta_timer = registered_functions["sync_delta_timer"].get_user_function()
    delta_timer(TimerRequest(past_due=False))  # no cursor yet: a full sweep
    assert {(m["mode"], m["source"]) for m in queued_messages(runtime)} == {("full", "sweep")}
    customer = simulator.control.customers()[1]["id"]
    simulator.control.upstream_change("customer_profile", customer)
    delta_timer(TimerRequest(past_due=False))
    runs = [r for r in runtime.tables.table("syncruns").list_entities(partition_key=PROVIDER_ID)
            if r["stream"] == "auditrecords"]
    assert [(r["mode"], r["outcome"]) for r in runs] == [("delta", "succeeded")]
    targeted = [m for m in queued_messages(runtime) if m.get("mode") == "delta"]
    assert [(m["customer"], m["resources"], m["source"]) for m in targeted] == [(customer, ["customer"], "audit")]
    queue_fn = registered_functions["sync_customer_queue"].get_user_function()
    queue_fn(QueueMessage(id="d1", body=json.dumps(targeted[0]).encode(), dequeue_count=1))
    row = runtime.tables.table("customers").get_entity(escape_key(PROVIDER_ID), escape_key(customer))
    assert row["companyName"].endswith("Renamed")


def test_timer_syncs_customers_and_fans_out_then_queue_syncs_a_customer(registered_functions, consented, simulator, caplog):
    runtime = consented
    timer = registered_functions["sync_customers_timer"].get_user_function()
    with caplog.at_level("WARNING"):
        timer(TimerRequest(past_due=True))
    assert "past_due" in caplog.text

    truth = {c["id"] for c in simulator.control.customers()}
    rows = list(runtime.tables.table("customers").list_entities(partition_key=escape_key(PROVIDER_ID)))
    assert {r["id"] for r in rows} == truth
    messages = queued_messages(runtime)
    assert {m["customer"] for m in messages} == truth if len(truth) <= 32 else len(messages) == 32
    assert all(m["provider"] == PROVIDER_ID and m["correlationId"] for m in messages)

    queue_fn = registered_functions["sync_customer_queue"].get_user_function()
    message = messages[0]
    queue_fn(QueueMessage(id="m1", body=json.dumps(message).encode(), dequeue_count=1))
    subs = list(runtime.tables.table("subscriptions").list_entities(
        partition_key=escape_key(f"{PROVIDER_ID}|{message['customer']}")))
    assert {s["id"] for s in subs} == {s["id"] for s in simulator.control.subscriptions(message["customer"])}
    runs = list(runtime.tables.table("syncruns").list_entities(partition_key=PROVIDER_ID))
    assert sorted(r["stream"] for r in runs) == ["agreements", "customers", "subscriptions"]
    assert {r["outcome"] for r in runs} == {"succeeded"}


@pytest.mark.parametrize("body", [b"not json", b'{"provider": "fn-partner"}', b'["x"]', b'{"provider": 1, "customer": 2}'])
def test_bad_queue_messages_are_logged_and_dropped(registered_functions, runtime, body, caplog):
    queue_fn = registered_functions["sync_customer_queue"].get_user_function()
    with caplog.at_level("ERROR"):
        queue_fn(QueueMessage(id="bad", body=body, dequeue_count=1))  # no exception: retrying cannot help
    assert "rejected" in caplog.text
    assert list(runtime.tables.table("syncruns").list_entities()) == []


def test_queue_message_for_an_unknown_provider_is_dropped(registered_functions, runtime):
    queue_fn = registered_functions["sync_customer_queue"].get_user_function()
    queue_fn(QueueMessage(id="m", body=b'{"provider": "nobody", "customer": "0000000c-0000-4000-8000-000000000001"}',
                          dequeue_count=1))
    assert list(runtime.tables.table("syncruns").list_entities()) == []


def test_an_upper_case_customer_message_syncs_the_partition_the_timer_keeps(registered_functions, consented, simulator):
    """Issue 9 point 7: the sync-customer entry point canonicalises the id (one partition per customer)."""
    runtime = consented
    registered_functions["sync_customers_timer"].get_user_function()(TimerRequest(past_due=False))
    customer = sorted(c["id"] for c in simulator.control.customers())[0]
    body = json.dumps({"provider": PROVIDER_ID, "customer": customer.upper(), "correlationId": "c"}).encode()
    registered_functions["sync_customer_queue"].get_user_function()(QueueMessage(id="m", body=body, dequeue_count=1))
    canonical = list(runtime.tables.table("subscriptions").list_entities(
        partition_key=escape_key(f"{PROVIDER_ID}|{customer.lower()}")))
    assert {s["id"] for s in canonical} == {s["id"] for s in simulator.control.subscriptions(customer)}
    assert not list(runtime.tables.table("subscriptions").list_entities(
        partition_key=escape_key(f"{PROVIDER_ID}|{customer.upper()}")))
    runs = [r for r in runtime.tables.table("syncruns").list_entities(partition_key=PROVIDER_ID) if r["customer_id"]]
    assert {r["customer_id"] for r in runs} == {customer.lower()}


def test_a_customer_message_with_a_path_in_its_id_is_dropped(registered_functions, consented, simulator, caplog):
    """Issue 9 point 8: an id such as x/../<other id> never reaches a path or a partition."""
    other = simulator.control.customers()[0]["id"]
    body = json.dumps({"provider": PROVIDER_ID, "customer": f"x/../{other}"}).encode()
    with caplog.at_level("ERROR"):
        registered_functions["sync_customer_queue"].get_user_function()(QueueMessage(id="m", body=body, dequeue_count=1))
    assert "rejected" in caplog.text
    assert list(consented.tables.table("subscriptions").list_entities()) == []
