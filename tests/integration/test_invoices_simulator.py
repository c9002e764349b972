"""Invoices and reconciliation against Azurite and the simulator.

Real adapters only: TableStore/QueuePublisher over Azurite, PartnerCenterClient and
GraphBillingClient over HTTPS to the simulator, tokens from auth's TokenProvider after a real
consent. D (legacy, v1 size/offset) and G (new commerce, Graph v2 export) invoices.
"""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from devservices import register_and_consent
from shared.tables import escape_key
from shared.transport import RetryPolicy
from sync.invoices.service import IMPORT_INVOICE_QUEUE
from sync.runs import RunOutcome
from sync.invoices.store import live_rows
from tests.support import simulator_runtime, started_simulator

PROVIDER_ID = "inv-partner"
LINES = 450  # per stream: D = 300 office + 150 azure billing lines, G = 450 onetime lines
FAST_RETRY = RetryPolicy(max_attempts=8, backoff_base=0.05, backoff_max=0.5, retry_after_cap=1.0)
SIM_RATE = 100_000


@pytest.fixture(scope="module")
def sim():
    yield from started_simulator(customers=20, invoices=4, line_items_per_invoice=LINES, rate_limit_per_minute=SIM_RATE,
                                 export_running_polls=2, export_retry_after_seconds=0, export_items_per_blob=200)


@pytest.fixture
def rt(storage, sim):
    yield from simulator_runtime(sim, storage)


@pytest.fixture
def provider(rt, sim):
    outcome = register_and_consent(rt, sim, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    return rt.providers.get_provider(PROVIDER_ID)


@pytest.fixture
def svc(rt):
    return rt.derive(calls_per_minute=SIM_RATE, client_options={"retry": FAST_RETRY},
                     graph_options={"retry": FAST_RETRY}).invoices


def queued(runtime) -> list[dict]:
    client = QueueClient.from_connection_string(runtime.settings.storage.connection_string, IMPORT_INVOICE_QUEUE,
                                                message_decode_policy=TextBase64DecodePolicy())
    return [json.loads(m.content) for m in client.receive_messages(max_messages=32, visibility_timeout=60)]


def billed_count(truth_invoice) -> int:
    counts = truth_invoice["lineItemCounts"]
    return sum(counts.get(k, 0) for k in ("office_billing", "azure_billing", "onetime_billing"))


def stored_lines(runtime, invoice_id, table="invoicelineitems"):
    """The rows of the invoice's complete import (its generation's partitions)."""
    row = runtime.tables.table("invoices").find_entity(escape_key(PROVIDER_ID), invoice_id) or {}
    return list(live_rows(runtime.tables.table(table), PROVIDER_ID, invoice_id, row.get("import_generation")))


def assert_lines_match_truth(runtime, truth_invoice):
    lines = stored_lines(runtime, truth_invoice["id"])
    assert len(lines) == billed_count(truth_invoice)
    total = sum((Decimal(r["total"]) for r in lines), Decimal(0))  # exact decimal text
    assert total == Decimal(str(truth_invoice["totalCharges"]))


def test_timer_stores_invoices_equal_to_truth_and_enqueues_each_once(rt, sim, provider, svc):
    outcome = svc.sync_provider_invoices(provider)
    truth = {i["id"]: i for i in sim.control.invoices()}
    assert outcome.outcome == "succeeded" and outcome.invoices_enqueued == len(truth)
    rows = {r["id"]: r for r in rt.tables.table("invoices").list_entities(partition_key=escape_key(PROVIDER_ID))}
    assert set(rows) == set(truth)
    for invoice_id, item in truth.items():
        row = rows[invoice_id]
        assert Decimal(row["totalCharges"]) == Decimal(str(item["totalCharges"])) and row["invoiceType"] == item["invoiceType"]
        assert row["kind"] == invoice_id[0] and row["billingPeriodStart"] == item["billingPeriodStartDate"]
        assert row["currencyCode"] == item["currencyCode"] and row["import_hash"] == row["content_hash"]
    messages = queued(rt)
    assert sorted(m["invoice"] for m in messages) == sorted(truth)
    assert all(m["provider"] == PROVIDER_ID and m["correlationId"] for m in messages)

    again = svc.sync_provider_invoices(provider)
    assert again.invoices_enqueued == 0 and again.runs[0].rows_written == 0
    assert queued(rt) == []  # (the first batch is invisible for a minute; nothing new arrived)

    added = sim.control.add_invoice(kind="G", line_items=5)
    third = svc.sync_provider_invoices(provider)
    assert third.invoice_ids == [added["id"]] and third.invoices_enqueued == 1


def test_import_d_and_g_invoices_reconcile_and_reimport_replaces(rt, sim, provider, svc):
    svc.sync_provider_invoices(provider, enqueue=False)
    truth = {i["id"]: i for i in sim.control.invoices()}
    legacy = next(i for i in truth.values() if i["id"].startswith("D"))
    modern = next(i for i in truth.values() if i["id"].startswith("G"))
    for item, source in ((legacy, "v1"), (modern, "v2")):
        result = svc.import_invoice(provider, item["id"])
        assert (result.outcome, result.source) == ("succeeded", source), result.error
        usage = result.figures.usage_count
        assert result.rows_written == billed_count(item) + usage and billed_count(item) == result.summary.line_count
        assert result.summary.status == "reconciled" and result.summary.difference == 0
        assert_lines_match_truth(rt, item)
        assert len(stored_lines(rt, item["id"], "invoiceusage")) == usage > 0
        row = rt.tables.table("invoices").find_entity(escape_key(PROVIDER_ID), item["id"])
        assert row["recon_status"] == "reconciled" and row["recon_line_count"] == billed_count(item)
        assert Decimal(row["recon_invoice_total"]) == Decimal(str(item["totalCharges"]))
        again = svc.import_invoice(provider, item["id"])  # replaces: a new generation, the old one swept
        assert (again.outcome, again.rows_written, again.rows_removed) == \
            ("succeeded", billed_count(item) + usage, billed_count(item) + usage)
        assert_lines_match_truth(rt, item)
    runs = [r for r in rt.tables.table("syncruns").list_entities(partition_key=escape_key(PROVIDER_ID))
            if r["stream"] == "invoicelineitems"]
    assert len(runs) == 4 and {r["outcome"] for r in runs} == {"succeeded"}
    assert {r["source"] for r in runs} == {"v1", "v2"} and all(r["recon_status"] == "reconciled" for r in runs)
    # v1 (forced) for the G invoice reads the same lines through onetime seek paging
    forced = svc.import_invoice(provider, modern["id"], source="v1")
    assert forced.summary.status == "reconciled" and forced.summary.line_count == billed_count(modern)
    assert forced.rows_removed >= billed_count(modern)  # the v2 import's rows it replaces are swept
    assert_lines_match_truth(rt, modern)


def test_imports_stay_correct_under_5xx_resets_and_truncated_bodies(rt, sim, provider, svc):
    svc.sync_provider_invoices(provider, enqueue=False)
    truth = sim.control.invoices()
    sim.control.set_faults(fault_5xx=0.15, fault_reset=0.03, fault_truncate=0.03)
    try:
        results = [svc.import_invoice(provider, item["id"]) for item in truth]
    finally:
        sim.control.set_faults(fault_5xx=0, fault_reset=0, fault_truncate=0)
    assert [r.outcome for r in results] == ["succeeded"] * len(truth), [r.error for r in results]
    assert sum(r.retries for r in results) > 0
    for item, result in zip(truth, results):
        assert result.summary.status == "reconciled"
        assert_lines_match_truth(rt, item)


def test_unknown_invoice_is_a_recorded_rejection(rt, sim, provider, svc):
    result = svc.import_invoice(provider, "G999999999")
    assert result.outcome == RunOutcome.INVOICE_NOT_FOUND and not result.retryable
    runs = list(rt.tables.table("syncruns").list_entities(partition_key=escape_key(PROVIDER_ID)))
    assert any(r["outcome"] == RunOutcome.INVOICE_NOT_FOUND and r["invoice_id"] == "G999999999" for r in runs)
    assert rt.tables.table("invoices").find_entity(escape_key(PROVIDER_ID), "G999999999") is None
