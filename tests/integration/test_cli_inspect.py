"""The operator's CLI (`customers|subscriptions|invoices|runs list|show`, `writeback-list`, the purge
confirmation) through cli.main and `--settings`, against Azurite and the simulator after a real sync."""
from __future__ import annotations

import io
import json
import os
from datetime import timedelta

import pytest

import cli
from devservices import register_and_consent, simulator_app_settings
from shared.clock import utc_now
from shared.tables import escape_key
from sync.rows import tombstone_rows
from sync.runs import SYNC_RUNS_TABLE, RunResult, record_run
from sync.streams import INVOICES

PROVIDER_ID = "cli-inspect"
CUSTOMER_KEYS = {"id", "companyName", "domain", "tenantId", "commerceId", "relationshipToPartner",
                 "associatedPartnerId", "removed", "removedAt", "updatedAt"}
SUBSCRIPTION_KEYS = {"id", "customer", "offerId", "offerName", "friendlyName", "quantity", "unitType", "status",
                     "isNce", "autoRenewEnabled", "billingCycle", "termDuration", "commitmentEndDate",
                     "cancellationAllowedUntilDate", "removed", "removedAt", "updatedAt"}
INVOICE_KEYS = {"id", "invoiceDate", "kind", "documentType", "billingPeriodStart", "billingPeriodEnd", "totalCharges",
                "paidAmount", "currencyCode", "reconStatus", "reconSource", "reconAt", "removed", "removedAt",
                "updatedAt", "importState", "importReason", "reconLinesTotal", "checksum", "checksumDifference",
                "checksumExplained"}
INVOICE_DETAIL_KEYS = {"reconError", "reconRunId", "raw", "importMessage", "checksumExplainedBy", "checksumReconTotal",
                       "checksumUsageTotal", "importErrors", "importWarnings", "acceptedAt", "acceptedBy",
                       "acceptedReason", "acceptedTolerance"}
RUN_KEYS = {"startedAt", "provider", "stream", "customer", "outcome", "rowsRead", "rowsWritten", "rowsRemoved",
            "rowsSkipped", "calls", "throttled429", "retries", "durationS", "finishedAt", "runId", "correlationId",
            "error"}


@pytest.fixture
def synced(sim_runtime, simulator, storage, monkeypatch, tmp_path):
    """A consented provider with customers, subscriptions, agreements and invoices synced, and
    a settings file naming the simulator; the environment names none of the settings."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "PCSYNC_", "AzureWebJobs")):
            monkeypatch.delenv(name)
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    provider = sim_runtime.providers.get_provider(PROVIDER_ID)
    results = sim_runtime.sync.sync_provider_now(provider, workers=4)
    results.append(sim_runtime.sync.run_stream(INVOICES, provider))
    assert all(r.outcome == "succeeded" for r in results), [r.error for r in results if r.error]
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": simulator_app_settings(simulator, storage)}))
    return sim_runtime, path


@pytest.fixture
def pcsync(synced, capsys):
    _, path = synced

    def run(*argv):
        code = cli.main(["--settings", str(path), *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def stored(runtime, table, partition=None):
    rows = runtime.tables.table(table).list_entities(partition_key=partition)
    return [row for row in rows if not row.get("removed")]


def all_pages(pcsync, *argv, limit):
    """Every item of a --json list, following the page tokens printed on stderr."""
    items, token, pages = [], None, 0
    while True:
        code, out, err = pcsync(*argv, "--json", "--limit", str(limit), *(["--page-token", token] if token else []))
        assert code == 0, err
        page = json.loads(out)
        assert len(page) <= limit
        items += page
        pages += 1
        token = err.split("--page-token ")[1].split()[0] if "--page-token " in err else None
        if token is None:
            return items, pages


def test_customers_list_and_show(pcsync, synced):
    runtime, _ = synced
    truth = {row["id"] for row in stored(runtime, "customers", escape_key(PROVIDER_ID))}
    code, out, err = pcsync("customers", "list", "--provider", PROVIDER_ID, "--json")
    items = json.loads(out)
    assert code == 0 and len(items) == min(50, len(truth))
    assert all(set(item) == CUSTOMER_KEYS for item in items) and items[0]["removed"] is False

    paged, pages = all_pages(pcsync, "customers", "list", "--provider", PROVIDER_ID, limit=7)
    assert sorted(c["id"] for c in paged) == sorted(truth) and pages == -(-len(truth) // 7)

    first = sorted(truth)[0]
    code, out, err = pcsync("customers", "list", "--provider", PROVIDER_ID, "--limit", "3")
    assert code == 0 and "customers of cli-inspect" in out and first in out and "more customers: --page-token" in err
    code, out, _ = pcsync("customers", "show", first.upper(), "--provider", PROVIDER_ID, "--json")
    shown = json.loads(out)
    assert code == 0 and set(shown) == CUSTOMER_KEYS | {"raw"} and shown["id"] == first
    assert shown["raw"]["id"].lower() == first
    code, out, _ = pcsync("customers", "show", first, "--provider", PROVIDER_ID)
    assert code == 0 and shown["companyName"] in out and "relationshipToPartner" in out
    code, out, err = pcsync("customers", "show", "x/../y", "--provider", PROVIDER_ID)
    assert code == 2 and out == "" and err.startswith("error: customer id") and len(err.splitlines()) == 1
    code, out, err = pcsync("customers", "list", "--provider", PROVIDER_ID, "--limit", "0")
    assert code == 2 and out == "" and "--limit must be 1..1000" in err


def test_removed_rows_are_hidden_unless_asked(pcsync, synced):
    runtime, _ = synced
    gone = sorted(row["RowKey"] for row in stored(runtime, "customers", escape_key(PROVIDER_ID)))[0]
    tombstone_rows(runtime.tables.table("customers"), escape_key(PROVIDER_ID), [gone], when=utc_now())
    listed, _ = all_pages(pcsync, "customers", "list", "--provider", PROVIDER_ID, limit=1000)
    assert gone not in {c["id"] for c in listed}
    listed, _ = all_pages(pcsync, "customers", "list", "--provider", PROVIDER_ID, "--include-removed", limit=1000)
    assert [c["removed"] for c in listed if c["id"] == gone] == [True]
    code, out, err = pcsync("customers", "show", gone, "--provider", PROVIDER_ID)
    assert code == 2 and out == "" and err.startswith("error: ") and "--include-removed" in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = pcsync("customers", "show", gone, "--provider", PROVIDER_ID, "--include-removed", "--json")
    assert code == 0 and json.loads(out)["removedAt"]


def test_subscriptions_filters_and_show(pcsync, synced):
    runtime, _ = synced
    subs = [row for row in stored(runtime, "subscriptions") if row["provider_id"] == PROVIDER_ID]
    everything, pages = all_pages(pcsync, "subscriptions", "list", "--provider", PROVIDER_ID, limit=30)
    assert sorted(s["id"] for s in everything) == sorted(s["id"] for s in subs) and pages > 1
    assert all(set(s) == SUBSCRIPTION_KEYS for s in everything)

    customer = subs[0]["customer_id"]
    mine, _ = all_pages(pcsync, "subscriptions", "list", "--provider", PROVIDER_ID, "--customer", customer, limit=2)
    assert sorted(s["id"] for s in mine) == sorted(s["id"] for s in subs if s["customer_id"] == customer)
    nce, _ = all_pages(pcsync, "subscriptions", "list", "--provider", PROVIDER_ID, "--nce", limit=1000)
    legacy, _ = all_pages(pcsync, "subscriptions", "list", "--provider", PROVIDER_ID, "--legacy", limit=1000)
    assert nce and legacy and all(s["isNce"] for s in nce) and not any(s["isNce"] for s in legacy)
    assert len(nce) + len(legacy) == len(subs)
    status = subs[0]["status"]
    by_status, _ = all_pages(pcsync, "subscriptions", "list", "--provider", PROVIDER_ID, "--status", status.upper(),
                             limit=1000)
    assert len(by_status) == sum(s["status"] == status for s in subs) and {s["status"] for s in by_status} == {status}

    ends = sorted(s["commitmentEndDate"][:10] for s in subs if s.get("commitmentEndDate"))
    cutoff = ends[len(ends) // 2]
    before, _ = all_pages(pcsync, "subscriptions", "list", "--provider", PROVIDER_ID, "--term-end-before", cutoff,
                          limit=1000)
    assert len(before) == sum(day < cutoff for day in ends) and all(s["commitmentEndDate"] < cutoff for s in before)
    code, _, err = pcsync("subscriptions", "list", "--provider", PROVIDER_ID, "--term-end-before", "next week")
    assert code == 2 and "YYYY-MM-DD" in err

    target = subs[-1]
    for extra in ([], ["--customer", target["customer_id"]]):
        code, out, _ = pcsync("subscriptions", "show", target["id"], "--provider", PROVIDER_ID, "--json", *extra)
        shown = json.loads(out)
        assert code == 0 and shown["id"] == target["id"] and shown["raw"]["id"] == target["id"]
    code, out, _ = pcsync("subscriptions", "list", "--provider", PROVIDER_ID, "--customer", customer)
    assert code == 0 and "term end" in out and mine[0]["id"] in out
    code, out, err = pcsync("subscriptions", "show", "00000000-0000-0000-0000-000000000000", "--provider", PROVIDER_ID)
    assert code == 2 and out == "" and "error: subscription 00000000-0000-0000-0000-000000000000" in err


def test_invoices_list_and_show(pcsync, synced):
    runtime, _ = synced
    truth = sorted(row["id"] for row in stored(runtime, "invoices", escape_key(PROVIDER_ID)))
    code, out, _ = pcsync("invoices", "list", "--provider", PROVIDER_ID, "--json")
    items = json.loads(out)
    assert code == 0 and [i["id"] for i in items] == truth and all(set(i) == INVOICE_KEYS for i in items)
    paged, pages = all_pages(pcsync, "invoices", "list", "--provider", PROVIDER_ID, limit=4)
    assert [i["id"] for i in paged] == truth and pages == 2
    code, out, _ = pcsync("invoices", "list", "--provider", PROVIDER_ID)
    assert code == 0 and all(invoice_id in out for invoice_id in truth) and "reconciliation" in out
    code, out, _ = pcsync("invoices", "show", truth[0], "--provider", PROVIDER_ID, "--json")
    shown = json.loads(out)
    assert code == 0 and set(shown) == INVOICE_KEYS | INVOICE_DETAIL_KEYS and shown["id"] == truth[0]
    code, out, err = pcsync("invoices", "show", "G999999999", "--provider", PROVIDER_ID)
    assert code == 2 and out == "" and err == f"error: invoice G999999999 of provider {PROVIDER_ID} not found\n"


def test_runs_list_filters_and_show(pcsync, synced):
    runtime, _ = synced
    runs = list(runtime.tables.table(SYNC_RUNS_TABLE).list_entities(partition_key=escape_key(PROVIDER_ID)))
    # a run whose process died: its row still says running, two hours after it started
    dead = RunResult(PROVIDER_ID, "customers", started_at=utc_now() - timedelta(hours=2))
    record_run(runtime.tables, dead)
    other = RunResult("another-provider", "customers")
    other.end("failed", error="boom")
    record_run(runtime.tables, other)

    everything, pages = all_pages(pcsync, "runs", "list", "--provider", PROVIDER_ID, limit=10)
    assert len(everything) == len(runs) + 1 and pages > 1 and all(set(r) == RUN_KEYS for r in everything)
    assert [r["startedAt"] for r in everything] == sorted((r["startedAt"] for r in everything), reverse=True)
    every_provider, _ = all_pages(pcsync, "runs", "list", limit=1000)
    assert {r["provider"] for r in every_provider} == {PROVIDER_ID, "another-provider"}
    failed, _ = all_pages(pcsync, "runs", "list", "--outcome", "failed", limit=1000)
    assert [(r["provider"], r["error"]) for r in failed] == [("another-provider", "boom")]
    abandoned, _ = all_pages(pcsync, "runs", "list", "--provider", PROVIDER_ID, "--outcome", "abandoned", limit=1000)
    assert [r["runId"] for r in abandoned] == [dead.run_id]
    recent, _ = all_pages(pcsync, "runs", "list", "--provider", PROVIDER_ID, "--since", "1h", limit=1000)
    assert len(recent) == len(runs) and dead.run_id not in {r["runId"] for r in recent}
    subs = [r for r in runs if r["stream"] == "subscriptions"]
    by_stream, _ = all_pages(pcsync, "runs", "list", "--provider", PROVIDER_ID, "--stream", "subscriptions",
                             limit=1000)
    assert len(by_stream) == len(subs) and {r["stream"] for r in by_stream} == {"subscriptions"}

    code, out, _ = pcsync("runs", "show", dead.run_id, "--provider", PROVIDER_ID, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["outcome"] == "abandoned" and set(shown) == RUN_KEYS | {"childrenRemoved", "duplicates",
                                                                                      "skipped"}
    code, out, _ = pcsync("runs", "list", "--provider", PROVIDER_ID, "--outcome", "abandoned")
    assert code == 0 and "abandoned" in out and dead.run_id in out
    code, out, err = pcsync("runs", "show", "no-such-run", "--provider", PROVIDER_ID)
    assert code == 2 and out == "" and "error: run no-such-run" in err
    code, _, err = pcsync("runs", "list", "--page-token", "garbage!")
    assert code == 2 and "--page-token" in err and len(err.strip().splitlines()) == 1


def test_writeback_list(pcsync, synced, capsys):
    runtime, _ = synced
    subs = [r for r in stored(runtime, "subscriptions") if r["provider_id"] == PROVIDER_ID and r["status"] == "active"]
    legacy = next(s for s in subs if not s["isNce"])
    keys = []
    for number, (operation, extra) in enumerate([("subscription.quantity", {"quantity": legacy["quantity"] + 1}),
                                                 ("subscription.cancel", {}), ("subscription.autoRenew", {"autoRenewEnabled": False, "action": "cancel"})]):
        key = f"inspect-{number}"
        body = {"idempotencyKey": key, "provider": PROVIDER_ID, "customer": legacy["customer_id"],
                "subscription": legacy["id"], "operation": operation, **extra}
        runtime.writeback.run_now(body)
        keys.append(key)
    states = {key: runtime.writeback.get_record(key, PROVIDER_ID).state for key in keys}
    code, out, _ = pcsync("writeback-list", "--provider", PROVIDER_ID, "--json")
    items = json.loads(out)
    assert code == 0 and [i["idempotencyKey"] for i in items] == keys
    assert items[0] == runtime.writeback.get_record(keys[0], PROVIDER_ID).to_json()  # as writeback-show prints it
    paged, pages = all_pages(pcsync, "writeback-list", "--provider", PROVIDER_ID, limit=2)
    assert [i["idempotencyKey"] for i in paged] == keys and pages == 2
    rejected = [key for key, state in states.items() if state == "rejected"]
    assert rejected  # a legacy subscription cannot be cancelled
    code, out, _ = pcsync("writeback-list", "--provider", PROVIDER_ID, "--state", "rejected", "--json")
    assert [i["idempotencyKey"] for i in json.loads(out)] == rejected
    for option, value in (("--customer", legacy["customer_id"].upper()), ("--subscription", legacy["id"])):
        code, out, _ = pcsync("writeback-list", "--provider", PROVIDER_ID, option, value, "--json")
        assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = pcsync("writeback-list", "--provider", PROVIDER_ID, "--customer", "someone-else", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = pcsync("writeback-list", "--provider", PROVIDER_ID)
    assert code == 0 and all(key in out for key in keys) and "rejected" in out
    # `writeback list` (the name the issues use) is the same listing
    code, out, _ = pcsync("writeback", "list", "--provider", PROVIDER_ID, "--state", "rejected", "--json")
    assert code == 0 and [i["idempotencyKey"] for i in json.loads(out)] == rejected
    with pytest.raises(SystemExit) as refused:  # a usage error, as argparse gives for any bad option
        pcsync("writeback", "list", "--provider", PROVIDER_ID, "--quantity", "3")
    assert refused.value.code == 2 and "takes filters, not a change" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_purge_asks_for_confirmation(pcsync, synced, monkeypatch):
    runtime, _ = synced
    code, out, err = pcsync("provider", "disable", PROVIDER_ID, "--purge")  # stdin is not a terminal here
    assert code == 2 and out == "" and err.strip().count("\n") == 0 and "--yes" in err
    assert runtime.providers.find_provider(PROVIDER_ID) is not None

    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    code, out, err = pcsync("provider", "disable", PROVIDER_ID, "--purge")
    assert code == 2 and out == "" and "Type the provider id" in err and "nothing was deleted" in err
    assert runtime.providers.find_provider(PROVIDER_ID) is not None

    monkeypatch.setattr("sys.stdin", Terminal(f"{PROVIDER_ID}\n"))
    code, out, err = pcsync("provider", "disable", PROVIDER_ID, "--purge")
    assert code == 0 and json.loads(out)["purged"] is True
    assert runtime.providers.find_provider(PROVIDER_ID) is None
    code, out, _ = pcsync("customers", "list", "--provider", PROVIDER_ID, "--json", "--include-removed")
    assert code == 0 and json.loads(out) == []

    code, _, err = pcsync("provider", "disable", "nobody", "--purge", "--yes")
    assert code == 2 and "nobody" in err
