"""The registered invoice functions, called the way the host calls them (Azurite + simulator)."""
from __future__ import annotations

import json

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from devservices import register_and_consent
from sync.invoices.store import live_rows

PROVIDER_ID = "fn-invoices"


@pytest.fixture
def consented(sim_runtime, simulator):
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID, name="Invoices partner")
    assert outcome.succeeded, outcome.message
    simulator.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0,
                                 export_retry_after_seconds=0)
    yield sim_runtime
    simulator.control.set_faults(export_retry_after_seconds=1)


def queued(runtime) -> list[dict]:
    client = QueueClient.from_connection_string(runtime.settings.storage.connection_string, "import-invoice",
                                                message_decode_policy=TextBase64DecodePolicy())
    return [json.loads(m.content) for m in client.receive_messages(max_messages=32, visibility_timeout=60)]


def test_bindings(registered_functions):
    timer = json.loads(registered_functions["sync_invoices_timer"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%PCSYNC_SCHEDULE_INVOICES%"
    assert timer["runOnStartup"] is False
    queue = json.loads(registered_functions["import_invoice_queue"].get_function_json())["bindings"][0]
    assert (queue["type"], queue["queueName"], queue["connection"]) == ("queueTrigger", "import-invoice", "PCSYNC_STORAGE")


def test_timer_lists_invoices_and_fans_out_then_queue_imports_one(registered_functions, consented, simulator, caplog):
    runtime = consented
    timer = registered_functions["sync_invoices_timer"].get_user_function()
    with caplog.at_level("WARNING"):
        timer(TimerRequest(past_due=True))
    assert "past_due" in caplog.text
    truth = {i["id"]: i for i in simulator.control.invoices()}
    rows = list(runtime.tables.table("invoices").list_entities(partition_key=PROVIDER_ID))
    assert {r["id"] for r in rows} == set(truth)
    messages = queued(runtime)
    assert sorted(m["invoice"] for m in messages) == sorted(truth)

    timer(TimerRequest(past_due=False))
    assert queued(runtime) == []  # unchanged invoices are not enqueued again

    queue_fn = registered_functions["import_invoice_queue"].get_user_function()
    message = next(m for m in messages if m["invoice"].startswith("G"))
    queue_fn(QueueMessage(id="m1", body=json.dumps(message).encode(), dequeue_count=1))
    row = runtime.tables.table("invoices").find_entity(PROVIDER_ID, message["invoice"])
    lines = list(live_rows(runtime.tables.table("invoicelineitems"), PROVIDER_ID, message["invoice"],
                           row["import_generation"]))
    assert len(lines) == truth[message["invoice"]]["lineItemCounts"]["onetime_billing"]
    assert row["recon_status"] == "reconciled" and row["recon_source"] == "v2" and row["import_state"] == "active"
    runs = list(runtime.tables.table("syncruns").list_entities(partition_key=PROVIDER_ID))
    # the customers were never synced here: the import re-synced each one's subscriptions once
    assert sorted(r["stream"] for r in runs if r["stream"] != "subscriptions") == \
        ["invoicelineitems", "invoices", "invoices"]


@pytest.mark.parametrize("body", [b"not json", b'{"provider": "fn-invoices"}', b'{"provider": "x", "invoice": "a/b"}'])
def test_bad_import_messages_are_logged_and_dropped(registered_functions, runtime, body, caplog):
    queue_fn = registered_functions["import_invoice_queue"].get_user_function()
    with caplog.at_level("ERROR"):
        queue_fn(QueueMessage(id="bad", body=body, dequeue_count=1))
    assert "rejected" in caplog.text
    assert list(runtime.tables.table("syncruns").list_entities()) == []


def test_import_for_an_unknown_provider_is_dropped(registered_functions, runtime):
    queue_fn = registered_functions["import_invoice_queue"].get_user_function()
    queue_fn(QueueMessage(id="m", body=b'{"provider": "nobody", "invoice": "G1"}', dequeue_count=1))
    assert list(runtime.tables.table("syncruns").list_entities()) == []


def test_accept_and_report_routes_answer_json_errors_and_csv(runtime, registered_functions):
    """Before any import: a 404 for a report and for an acceptance; a bad body is a 400."""
    import azure.functions as func

    report = registered_functions["invoices_report"].get_user_function()
    missing = report(func.HttpRequest("GET", "/api/invoices/p1/G1/mismatches.csv", body=b"",
                                      route_params={"provider": "p1", "invoice": "G1", "report": "mismatches.csv"}))
    assert missing.status_code == 404 and b"not synced" in missing.get_body()
    bad = report(func.HttpRequest("GET", "/api/invoices/p1/G1/secrets.csv", body=b"",
                                  route_params={"provider": "p1", "invoice": "G1", "report": "secrets.csv"}))
    assert bad.status_code == 400
    accept = registered_functions["invoices_accept"].get_user_function()
    refused = accept(func.HttpRequest("POST", "/api/invoices/p1/G1/accept", body=b'{"tolerance": "x"}',
                                      route_params={"provider": "p1", "invoice": "G1"}))
    assert refused.status_code == 400 and b"tolerance" in refused.get_body()
