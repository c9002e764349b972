"""Delta sync, the full sweep and its drift report against Azurite and the simulator: the first
run's fallback, one re-read per customer however many records name it, the cursor's overlap,
the 90-day window (pcsync's check and Partner Center's 400), webhook events through the same
targeted work, the queue path of both modes, drift from changes without any trace, and
`pcsync sync --mode delta|full`."""
from __future__ import annotations

import json
from datetime import timedelta

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import cli
from devservices import register_and_consent, simulator_app_settings
from shared.clock import utc_now
from shared.tables import escape_key
from sync.cursor import CURSOR_ROW, CURSOR_TABLE
from sync.delta import DeltaService
from sync.names import SYNC_CUSTOMER_QUEUE
from sync.runs import SYNC_RUNS_TABLE, RunOutcome
from sync.targeted import parse_targeted_message
from sync.webhooks import functions as webhook_functions
from tests.fakes.webhooks import capture_server, http_request
from tests.integration.test_sync_simulator import assert_store_equals_truth
from tests.support import simulator_runtime, started_simulator

PROVIDER_ID = "sim-partner"  # assert_store_equals_truth reads this provider's rows
CUSTOMERS = 30
SIM_RATE = 100_000


@pytest.fixture
def sim():
    yield from started_simulator(customers=CUSTOMERS, subscriptions_per_customer=3, nce_fraction=0.5,
                                 rate_limit_per_minute=SIM_RATE, refresh_token_inactivity_days=400)


@pytest.fixture
def rt(storage, sim):
    for runtime in simulator_runtime(sim, storage):
        outcome = register_and_consent(runtime, sim, PROVIDER_ID)
        assert outcome.succeeded, outcome.message
        yield runtime.derive(calls_per_minute=SIM_RATE)


def provider(rt):
    return rt.providers.get_provider(PROVIDER_ID)


def drain(rt) -> list:
    """Hand every sync-customer message to the queue function's service, as the host would."""
    client = QueueClient.from_connection_string(rt.settings.storage.connection_string, SYNC_CUSTOMER_QUEUE,
                                                message_decode_policy=TextBase64DecodePolicy())
    runs = []
    while True:
        batch = list(client.receive_messages(messages_per_page=32, max_messages=32))
        if not batch:
            return runs
        for message in batch:
            runs.extend(rt.delta.handle_message(parse_targeted_message(message.content)))
            client.delete_message(message)


def first_sweep(rt):
    outcome = rt.delta.run_delta(provider(rt))
    assert (outcome.mode, outcome.fallback, outcome.outcome) == ("full", "first run", RunOutcome.SUCCEEDED)
    return outcome


def test_first_delta_is_a_full_sweep_then_a_quiet_delta_costs_one_call(rt, sim):
    first = first_sweep(rt)
    assert_store_equals_truth(rt, sim)
    assert first.drift["findings"] == 0  # a first sweep has nothing to drift from
    quiet = rt.delta.run_delta(provider(rt))
    assert (quiet.mode, quiet.records, quiet.customers, quiet.calls) == ("delta", 0, 0, 1)
    assert quiet.calls_saved == first.calls - 1
    row = next(r for r in rt.tables.table(SYNC_RUNS_TABLE).list_entities(partition_key=PROVIDER_ID)
               if r["stream"] == "auditrecords")
    assert (row["mode"], row["outcome"], row["calls"]) == ("delta", "succeeded", 1)
    assert row["cursor"] and row["calls_saved"] == quiet.calls_saved


def test_each_named_customer_is_re_read_once_and_only_what_changed(rt, sim):
    first_sweep(rt)
    a, b, c = (x["id"] for x in sim.control.customers()[:3])
    for _ in range(3):
        sim.control.upstream_change("subscription_quantity", a)
    sim.control.upstream_change("customer_profile", b)
    sim.control.upstream_change("agreement", c)
    sim.control.reset_calls()
    delta = rt.delta.run_delta(provider(rt))
    assert (delta.mode, delta.records, delta.customers) == ("delta", 5, 3)
    calls = {k: v["count"] for k, v in sim.control.calls().items() if k.startswith("GET /v1/")}
    assert calls == {"GET /v1/auditrecords": 1, "GET /v1/customers/{id}/subscriptions": 1,
                     "GET /v1/customers/{id}": 1, "GET /v1/customers/{id}/agreements": 1}
    assert delta.calls == 4
    assert_store_equals_truth(rt, sim)
    # the same records again (inside the cursor's overlap) are not worked twice
    assert rt.delta.run_delta(provider(rt)).customers == 0
    # the sweep finds nothing left: the delta stored the rows exactly as the sweep reads them
    sweep = rt.delta.run_full(provider(rt))
    assert sweep.drift["findings"] == 0 and sweep.outcome == RunOutcome.SUCCEEDED


def test_changes_without_a_trace_are_the_drift_report(rt, sim):
    first_sweep(rt)
    a, b, c = (x["id"] for x in sim.control.customers()[3:6])
    sim.control.upstream_change("renewal", a)
    sim.control.upstream_change("est_conversion", b)
    sim.control.upstream_change("subscription_quantity", c)  # with an audit record: not drift
    assert rt.delta.run_delta(provider(rt)).customers == 1
    sweep = rt.delta.run_full(provider(rt), enqueue=True)  # the timer's path: the queue fans out
    drain(rt)
    report = rt.delta.reports.latest(PROVIDER_ID)
    assert report["sweep_id"] == sweep.sweep_id
    assert (report["findings"], report["by_type"]) == (2, {"subscriptions": {"est_conversion": 1, "renewal": 1}})
    assert_store_equals_truth(rt, sim)


def test_a_cursor_older_than_the_window_and_a_refused_start_date_fall_back(rt, sim):
    first_sweep(rt)
    table = rt.tables.table(CURSOR_TABLE)
    row = table.get_entity(escape_key(PROVIDER_ID), CURSOR_ROW)
    table.upsert_entity({**row, "position": (utc_now() - timedelta(days=100)).isoformat()}, replace=True)
    old = rt.delta.run_delta(provider(rt))
    assert old.mode == "full" and "older than the 90-day" in old.fallback
    assert rt.delta.run_delta(provider(rt)).mode == "delta"  # the sweep moved the cursor
    sim.control.advance_clock(days=92)  # Partner Center's own day is past the window
    refused = rt.delta.run_delta(provider(rt))
    assert refused.mode == "full" and "refused" in refused.fallback and refused.outcome == RunOutcome.SUCCEEDED
    assert refused.runs[0].outcome == RunOutcome.SKIPPED


def test_webhook_events_feed_the_same_targeted_work(rt, sim):
    first_sweep(rt)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(webhook_functions.bp)
    handler = {f.get_function_name(): f for f in app.get_functions()}["partner_center_webhook"].get_user_function()

    def forward(delivery):
        response = handler(http_request(delivery))
        return response.status_code, response.get_body()

    with capture_server(forward) as (base, _):
        rt.webhook_registrations.register(PROVIDER_ID, f"{base}/api/webhooks/partner-center/{PROVIDER_ID}?code=k",
                                          ["subscription-updated"])
        customer = sim.control.customers()[6]["id"]
        change = sim.control.upstream_change("subscription_quantity", customer, trace="webhook", quantity=77)
    assert change["delivery"] == 200 and sim.control.audit_records() == []
    assert rt.delta.run_delta(provider(rt)).customers == 0  # no record: only the event knows
    runs = drain(rt)
    assert [(r.stream, r.mode, r.customer_id) for r in runs] == [("subscriptions", "delta", customer)]
    assert_store_equals_truth(rt, sim)


def test_cli_modes_print_mode_cursor_and_calls_saved(rt, sim, storage, tmp_path, capsys, monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("AZURE_", "PCSYNC_", "AzureWebJobs")):
            monkeypatch.delenv(name)
    settings = simulator_app_settings(sim, storage) | {"PCSYNC_CALLS_PER_MINUTE": str(SIM_RATE)}
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": settings}))
    assert cli.main(["--settings", str(path), "sync", "--provider", PROVIDER_ID, "--mode", "full"]) == 0
    assert "mode full (instead of a delta" not in capsys.readouterr().err
    sim.control.upstream_change("subscription_quantity", sim.control.customers()[0]["id"])
    assert cli.main(["--settings", str(path), "sync", "--provider", PROVIDER_ID, "--mode", "delta"]) == 0
    err = capsys.readouterr().err
    assert "mode delta, cursor 20" in err and "1 activity record(s), 1 customer(s), 2 call(s)" in err
    assert "saved vs a full sweep" in err
    assert cli.main(["--settings", str(path), "sync", "--provider", PROVIDER_ID, "--mode", "delta",
                     "--stream", "customers"]) == 2
    assert isinstance(rt.delta, DeltaService)
