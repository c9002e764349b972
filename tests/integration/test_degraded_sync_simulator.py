"""A provider whose App+User token is unavailable degrades instead of stopping (issue 11): with
each cause (refresh token expired/revoked/MFA re-challenge/Conditional Access at sign-in, 900421
in both forms, 900309) customers and subscriptions sync in full over app-only tokens, the
agreements (App+User only) end ``degraded`` naming the cause and the fix and their stored rows
are left exactly as they were; after the knob is reset and a new consent, everything syncs again.
Through the in-process fan-out, the timers + sync-customer queue function, and `pcsync sync`."""
from __future__ import annotations

import json

import pytest
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import cli
from devservices import register_and_consent, simulator_app_settings
from sync.names import SYNC_CUSTOMER_QUEUE
from sync.runs import RunOutcome, list_runs
from tests.integration.test_sync_simulator import (
    assert_customers_and_subscriptions_equal_truth,
    assert_store_equals_truth,
    stored,
)
from tests.support import simulator_runtime

PROVIDER_ID = "sim-partner"  # the truth helpers read this provider's rows
SIM_RATE = 100_000

# cause -> (how the simulator is made to refuse, the token_health / run cause it must give)
CAUSES = {
    "refresh_expired": ({"refresh": "expired"}, "refresh_token_expired"),
    "refresh_revoked": ({"refresh": "revoked"}, "refresh_token_revoked"),
    "refresh_mfa": ({"refresh": "mfa"}, "mfa_challenge"),
    "refresh_conditional_access": ({"refresh": "conditional_access"}, "conditional_access_blocked"),
    "mfa_900421": ({"trusted_location_skips_mfa": True, "mfa_error_format": "2026"}, "mfa_required"),
    "mfa_2019": ({"trusted_location_skips_mfa": True, "mfa_error_format": "2019"}, "mfa_required"),
    "conditional_access_900309": ({"conditional_access_block": True}, "conditional_access_blocked"),
}
HEALTHY = {"trusted_location_skips_mfa": False, "mfa_error_format": "2026", "conditional_access_block": False}


@pytest.fixture(scope="module")
def sim():
    from simulator.testing import start_simulator

    with start_simulator(customers=6, subscriptions_per_customer=3, nce_fraction=0.5, invoices=1,
                         line_items_per_invoice=2, rate_limit_per_minute=SIM_RATE,
                         refresh_token_inactivity_days=400) as running:
        yield running


@pytest.fixture
def rt(storage, sim):
    for runtime in simulator_runtime(sim, storage):
        assert register_and_consent(runtime, sim, PROVIDER_ID).succeeded
        try:
            yield runtime
        finally:
            heal(sim)


def heal(sim) -> None:
    sim.control.fail_refresh_tokens("none")
    sim.control.set_settings(**HEALTHY)


def break_tokens(rt, sim, cause: str) -> str:
    knobs, health = CAUSES[cause]
    if "refresh" in knobs:
        sim.control.fail_refresh_tokens(knobs["refresh"])
    else:
        sim.control.set_settings(**knobs)
    # the cached App+User token goes: the next App+User call redeems the refresh token again
    rt.token_source_for(rt.providers.get_provider(PROVIDER_ID)).invalidate()
    return health


def change_truth(sim) -> None:
    """Upstream changes the degraded sync must still pick up: a new customer, a changed seat count."""
    sim.control.add_customer()
    sub = sim.control.subscriptions()[0]
    sim.control.update_subscription(sub["customerId"], sub["id"], quantity=sub["quantity"] + 7)


def agreement_rows(rt) -> dict[str, dict]:
    return {row["PartitionKey"] + "/" + row["RowKey"]: dict(row) for row in stored(rt, "agreements")}


def assert_degraded(rt, runs, health: str) -> None:
    by_stream: dict[str, set] = {}
    for run in runs:
        by_stream.setdefault(run.stream, set()).add(run.outcome)
    assert by_stream["subscriptions"] == {RunOutcome.SUCCEEDED}
    assert by_stream["agreements"] == {RunOutcome.DEGRADED}
    degraded = [r for r in runs if r.stream == "agreements"]
    assert {r.cause for r in degraded} == {health} and all("Fix:" in r.error for r in degraded)
    rows = [r for r in list_runs(rt.tables, PROVIDER_ID) if r["stream"] == "agreements" and r["outcome"] == "degraded"]
    assert rows and {r["cause"] for r in rows} == {health}
    consent = rt.providers.get_provider(PROVIDER_ID).to_json()["consent"]
    assert consent["tokenHealth"] == health and consent["cause"] and consent["fix"]


def recover(rt, sim) -> None:
    heal(sim)
    assert register_and_consent(rt, sim, PROVIDER_ID).succeeded  # a new consent
    provider = rt.providers.get_provider(PROVIDER_ID)
    assert provider.consent_active and provider.token_health is None
    rt.token_source_for(provider).invalidate()


@pytest.mark.parametrize("cause", list(CAUSES))
def test_unavailable_app_user_token_degrades_then_recovers(rt, sim, cause):
    first = rt.sync.sync_provider_now(rt.providers.get_provider(PROVIDER_ID), workers=2)
    assert {r.outcome for r in first} == {RunOutcome.SUCCEEDED}
    before = agreement_rows(rt)
    assert before

    health = break_tokens(rt, sim, cause)
    change_truth(sim)
    runs = rt.sync.sync_provider_now(rt.providers.get_provider(PROVIDER_ID), workers=2)
    assert [r.outcome for r in runs if r.stream == "customers"] == [RunOutcome.SUCCEEDED]
    assert_degraded(rt, runs, health)
    assert_customers_and_subscriptions_equal_truth(rt, sim)
    assert agreement_rows(rt) == before  # not read is not "nothing there": nothing tombstoned
    # a provider whose consent was lost still syncs app-only (it is not skipped)
    again = rt.sync.sync_provider_now(rt.providers.get_provider(PROVIDER_ID), workers=2)
    assert_degraded(rt, again, health)

    recover(rt, sim)
    healed = rt.sync.sync_provider_now(rt.providers.get_provider(PROVIDER_ID), workers=2)
    assert {r.outcome for r in healed} == {RunOutcome.SUCCEEDED}
    assert_store_equals_truth(rt, sim)


def drain_through_function(rt, registered_functions) -> int:
    """Every sync-customer message through the registered queue function, as the host calls it;
    a raise would be a redelivery (and in the end a poison message)."""
    queue_fn = registered_functions["sync_customer_queue"].get_user_function()
    client = QueueClient.from_connection_string(rt.settings.storage.connection_string, SYNC_CUSTOMER_QUEUE,
                                                message_decode_policy=TextBase64DecodePolicy())
    handled = 0
    while batch := list(client.receive_messages(messages_per_page=32, max_messages=32)):
        for message in batch:
            queue_fn(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=1))
            client.delete_message(message)
            handled += 1
    return handled


@pytest.mark.parametrize("cause", ["refresh_expired", "mfa_900421", "conditional_access_900309"])
def test_timer_and_queue_path_degrade_without_poisoning(rt, sim, registered_functions, cause):
    rt.delta.sweep_all_providers()
    assert drain_through_function(rt, registered_functions) > 0
    before = agreement_rows(rt)
    assert before

    health = break_tokens(rt, sim, cause)
    change_truth(sim)
    for _ in range(2):  # the second sweep: a provider whose consent is now lost is not skipped
        (outcome,) = rt.delta.sweep_all_providers()
        assert outcome.outcome != RunOutcome.SKIPPED and outcome.enqueued == len(sim.control.customers())
        assert drain_through_function(rt, registered_functions) == outcome.enqueued  # none raised
    runs = [r for r in list_runs(rt.tables, PROVIDER_ID) if r["stream"] == "agreements"]
    assert {r["cause"] for r in runs if r["outcome"] == "degraded"} == {health}
    consent = rt.providers.get_provider(PROVIDER_ID).to_json()["consent"]
    assert consent["tokenHealth"] == health and consent["fix"]
    assert_customers_and_subscriptions_equal_truth(rt, sim)
    assert agreement_rows(rt) == before

    recover(rt, sim)
    rt.delta.sweep_all_providers()
    drain_through_function(rt, registered_functions)
    assert_store_equals_truth(rt, sim)


def test_cli_sync_prints_degraded_streams_with_the_fix(rt, sim, storage, tmp_path, capsys, monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("AZURE_", "PCSYNC_", "AzureWebJobs")):
            monkeypatch.delenv(name)
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": simulator_app_settings(sim, storage)}))
    sim.control.fail_refresh_tokens("revoked")
    rt.token_source_for(rt.providers.get_provider(PROVIDER_ID)).invalidate()
    assert cli.main(["--settings", str(path), "sync", "--provider", PROVIDER_ID]) == 4  # degraded only
    err = " ".join(capsys.readouterr().err.split())
    assert "degraded agreements" in err and "refresh_token_revoked" in err and "new consent link" in err
