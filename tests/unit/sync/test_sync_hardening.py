"""Issue 9 with fakes: broken answers never tombstone (6), canonical ids (7), ids checked before
they go into a path (8), one refused row fails alone (9), a run's row exists while it runs (14)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.clock import utc_now
from shared.tables import escape_key
from sync.engine import InvalidMessage, parse_customer_message
from sync.invoices.model import parse_import_message
from sync.resources import InvalidId, canonical_id, checked_id, IdKind
from sync.runs import FUNCTION_TIMEOUT, RunOutcome, RunResult, list_runs, record_run, run_outcome
from sync.streams import CUSTOMERS, SUBSCRIPTIONS
from tests.fakes.partner_center import FakePartnerCenter, FakeQueues, fake_customer_id, response
from tests.unit.sync.test_sync_engine import PROVIDER, RepositoryTables, service

C0, C1 = fake_customer_id(0), fake_customer_id(1)


def populated(customers=4):
    """A store holding every customer and its subscriptions and agreements."""
    pc, tables, queues = FakePartnerCenter(customers=customers), RepositoryTables(), FakeQueues()
    svc = service(pc, tables, queues=queues)
    runs = svc.sync_provider_now(PROVIDER, workers=1)
    assert all(r.outcome == RunOutcome.SUCCEEDED for r in runs)
    return pc, tables, svc


def live_rows(tables):
    return sum(1 for name in ("customers", "subscriptions", "agreements")
               for row in tables.table(name).rows.values() if not row.get("removed"))


def run_rows(tables):
    return list(tables.table("syncruns").rows.values())


# -- 6: a broken answer is never "nothing there" ---------------------------------------------------

BROKEN = {
    "error envelope": lambda: response(200, {"error": {"code": "InternalError", "message": "boom"}}),
    "html": lambda: response(200, raw=b"<html><body>Service Unavailable</body></html>"),
    "empty body": lambda: response(200, raw=b""),
    "missing items": lambda: response(200, {"totalCount": 0, "attributes": {"objectType": "Collection"}}),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_customer_pages_tombstone_nothing_and_fail_the_run(kind):
    pc, tables, svc = populated()
    before = live_rows(tables)
    pc.faults.append(lambda sent: BROKEN[kind]() if sent.method == "GET" else None)
    outcome = svc.sync_provider_customers(PROVIDER)
    assert outcome.outcome == RunOutcome.FAILED and outcome.customers_enqueued == 0
    assert live_rows(tables) == before  # 0 rows wrongly tombstoned
    (record,) = [r for r in run_rows(tables) if r["run_id"] == outcome.runs[0].run_id]
    assert record["outcome"] == "failed" and record["rows_removed"] == 0 and kind != "" and record["error"]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_subscription_page_tombstones_nothing_and_fails_the_run(kind):
    pc, tables, svc = populated()
    before = live_rows(tables)
    pc.faults.append(lambda sent: BROKEN[kind]() if sent.path.endswith("/subscriptions") else None)
    results = svc.sync_customer(PROVIDER, C1)
    assert [r.outcome for r in results] == [RunOutcome.FAILED, RunOutcome.SUCCEEDED]
    assert live_rows(tables) == before


def test_a_broken_second_page_fails_the_run_and_tombstones_nothing():
    pc, tables, svc = populated(customers=5)
    before = live_rows(tables)
    pc.faults.append(lambda sent: BROKEN["missing items"]() if sent.headers.get("MS-ContinuationToken") else None)
    outcome = svc.sync_provider_customers(PROVIDER)
    assert outcome.outcome == RunOutcome.FAILED and live_rows(tables) == before


# -- 7: one canonical (lower-case) form of a customer id at every entry point ---------------------

def test_an_upper_case_customer_message_is_canonical():
    message = parse_customer_message({"provider": "p1", "customer": f"  {C1.upper()} "})
    assert message.customer_id == C1
    assert canonical_id(" ABC ") == "abc"


def test_an_upper_case_customer_message_syncs_the_partition_the_full_sync_reconciles():
    pc, tables, svc = populated(customers=2)
    partitions = set(pk for pk, _ in tables.table("subscriptions").rows)
    svc.handle_customer_message(parse_customer_message({"provider": "p1", "customer": C1.upper()}))
    assert set(pk for pk, _ in tables.table("subscriptions").rows) == partitions  # no second partition
    svc.sync_customer(PROVIDER, C0.upper())  # the CLI/tests' way in: the same partition too
    assert set(pk for pk, _ in tables.table("subscriptions").rows) == partitions


def test_upper_case_ids_read_from_partner_center_become_canonical_keys():
    pc, tables, queues = FakePartnerCenter(customers=2), RepositoryTables(), FakeQueues()
    upper = {cid.upper(): {**c, "id": cid.upper()} for cid, c in pc.customers.items()}
    pc.customers, pc.subscriptions = upper, {k.upper(): v for k, v in pc.subscriptions.items()}
    pc.agreements = {k.upper(): v for k, v in pc.agreements.items()}
    svc = service(pc, tables, queues=queues)
    svc.sync_provider_customers(PROVIDER)
    assert set(tables.table("customers").partition("p1")) == {C0, C1}
    assert {m["customer"] for m in queues.sent["sync-customer"]} == {C0, C1}
    assert tables.table("customers").partition("p1")[C0]["id"] == C0
    row = SUBSCRIPTIONS.build_row({"id": "s"}, provider_id="p1", customer_id=C0.upper())
    assert row["PartitionKey"] == escape_key(f"p1|{C0}") and row["customer_id"] == C0


def test_an_old_upper_case_customer_row_is_tombstoned_without_touching_the_live_partition():
    pc, tables, svc = populated(customers=2)
    legacy = dict(tables.table("customers").partition("p1")[C1], RowKey=C1.upper(), id=C1.upper())
    tables.table("customers").rows[("p1", C1.upper())] = legacy
    svc.sync_provider_customers(PROVIDER)
    assert tables.table("customers").partition("p1")[C1.upper()]["removed"] is True
    live = tables.table("subscriptions").partition(escape_key(f"p1|{C1}"))
    assert live and not any(r["removed"] for r in live.values())


# -- 8: ids are checked before they go into a path, and path segments are encoded -----------------

TRAVERSAL = f"x/../{C1}"


def test_a_customer_id_with_a_path_is_skipped_recorded_and_never_requested():
    pc, tables, queues = FakePartnerCenter(customers=2), RepositoryTables(), FakeQueues()
    pc.customers[TRAVERSAL] = {"id": TRAVERSAL, "companyProfile": {"companyName": "Evil"}}
    svc = service(pc, tables, queues=queues)
    runs = svc.sync_provider_now(PROVIDER, workers=1)
    customers_run = runs[0]
    assert customers_run.outcome == RunOutcome.SUCCEEDED and customers_run.rows_skipped == 1
    assert "not a GUID" in customers_run.skipped[0]["reason"]
    record = next(r for r in run_rows(tables) if r["run_id"] == customers_run.run_id)
    assert record["rows_skipped"] == 1 and TRAVERSAL in json.loads(record["skipped"])[0]["key"]
    assert set(tables.table("customers").partition("p1")) == {C0, C1}
    assert not any(".." in p for p in pc.paths())
    # C1's subscriptions are stored once, under C1 only
    partitions = {pk for pk, _ in tables.table("subscriptions").rows}
    assert partitions == {escape_key(f"p1|{C0}"), escape_key(f"p1|{C1}")}


def test_a_run_for_an_ill_shaped_customer_id_fails_without_a_call():
    pc, tables, svc = populated(customers=1)
    sent = len(pc.sent)
    results = svc.sync_customer(PROVIDER, TRAVERSAL)
    assert [r.outcome for r in results] == [RunOutcome.FAILED, RunOutcome.FAILED]
    assert "not a GUID" in results[0].error and len(pc.sent) == sent
    with pytest.raises(InvalidId):
        SUBSCRIPTIONS.first_request(parent_id=TRAVERSAL)


@pytest.mark.parametrize("customer", [TRAVERSAL, "abc", "c0000", f"{C1}/x", f"{C1}%2F..", ""])
def test_sync_customer_messages_need_a_guid(customer):
    with pytest.raises(InvalidMessage):
        parse_customer_message({"provider": "p1", "customer": customer})


@pytest.mark.parametrize("invoice", ["../G1", "G1/lineitems", "G-1", "G.1", "G1%2F", ""])
def test_import_messages_need_a_documented_invoice_id(invoice):
    with pytest.raises(InvalidMessage):
        parse_import_message({"provider": "p1", "invoice": invoice})


def test_ids_are_checked_and_path_segments_encoded():
    assert checked_id(IdKind.CUSTOMER, C1.upper()) == C1
    assert checked_id(IdKind.INVOICE, "G000000001") == "G000000001"  # invoice ids keep their case
    for kind, bad in ((IdKind.CUSTOMER, TRAVERSAL), (IdKind.INVOICE, "G1/../D1"), (IdKind.SUBSCRIPTION, "s 1")):
        with pytest.raises(InvalidId):
            checked_id(kind, bad)
    request = SUBSCRIPTIONS.first_request(parent_id=C1.upper())
    assert request.path == f"/customers/{C1}/subscriptions"
    with pytest.raises(InvalidId):
        CUSTOMERS.build_row({"id": TRAVERSAL}, provider_id="p1")


# -- 9: one refused row fails alone ------------------------------------------------------------------

class RefusingTable:
    """Wraps a fake table: refuses (as the service would, HTTP 400) any batch holding a marked row."""

    def __init__(self, table):
        self.inner = table
        self.rejected = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert_entities(self, entities, *, replace=True, on_rejected=None):
        written = 0
        for entity in entities:
            if entity.get("companyName") == "REFUSED":
                on_rejected(entity, "HTTP 400 PropertyValueTooLarge")
                continue
            written += self.inner.upsert_entities([entity], replace=replace)
        return written


def test_a_refused_row_is_skipped_with_its_reason_and_the_rest_stored():
    pc, tables, queues = FakePartnerCenter(customers=5), RepositoryTables(), FakeQueues()
    pc.customers[C1]["companyProfile"]["companyName"] = "REFUSED"
    refusing = RefusingTable(tables.table("customers"))
    tables.tables["customers"] = refusing
    svc = service(pc, tables, queues=queues)
    outcome = svc.sync_provider_customers(PROVIDER)
    run = outcome.runs[0]
    assert run.outcome == RunOutcome.SUCCEEDED and (run.rows_written, run.rows_skipped) == (4, 1)
    assert run.skipped == [{"key": C1, "reason": "HTTP 400 PropertyValueTooLarge"}]
    assert len(refusing.inner.partition("p1")) == 4


# -- 14: the run's row exists from the start; a dead run reads as abandoned --------------------------

class CrashingPartnerCenter(FakePartnerCenter):
    def request(self, method, url, **kwargs):
        raise KeyboardInterrupt  # the process is killed mid-run: nothing after this line runs


def test_a_run_killed_mid_way_leaves_a_running_row():
    pc, tables = CrashingPartnerCenter(customers=2), RepositoryTables()
    svc = service(pc, tables)
    with pytest.raises(KeyboardInterrupt):
        svc.sync_provider_customers(PROVIDER)
    (record,) = run_rows(tables)
    assert record["outcome"] == "running" and "finished_at" not in record and record["stream"] == "customers"


def test_a_finished_run_replaces_its_running_row():
    pc, tables, svc = populated(customers=1)
    outcomes = {r["stream"]: r["outcome"] for r in run_rows(tables)}
    assert len(run_rows(tables)) == 3 and set(outcomes.values()) == {"succeeded"}


def test_running_rows_past_the_function_timeout_read_as_abandoned():
    tables = RepositoryTables()
    old = RunResult("p1", "customers", started_at=utc_now() - FUNCTION_TIMEOUT - timedelta(minutes=1))
    fresh = RunResult("p1", "subscriptions", C0)
    done = RunResult("p1", "agreements", C0, started_at=old.started_at)
    done.end(RunOutcome.SUCCEEDED)
    for result in (old, fresh, done):
        record_run(tables, result)
    outcomes = {r["stream"]: r["outcome"] for r in list_runs(tables, "p1")}
    assert outcomes == {"customers": "abandoned", "subscriptions": "running", "agreements": "succeeded"}
    assert run_outcome({"outcome": "running", "started_at": old.started_at.isoformat()}) == RunOutcome.ABANDONED


def test_the_run_timeout_is_the_function_timeout_of_host_json():
    from pathlib import Path

    host = json.loads((Path(__file__).resolve().parents[3] / "host.json").read_text())
    hours, minutes, seconds = (int(part) for part in host["functionTimeout"].split(":"))
    assert FUNCTION_TIMEOUT == timedelta(hours=hours, minutes=minutes, seconds=seconds)
