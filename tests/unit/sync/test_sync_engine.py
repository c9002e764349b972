"""Sync engine with fakes: content-hash no-op, tombstones, cascade, crash safety, run records."""
from __future__ import annotations

import json

import pytest
import requests

from shared.providers import ProviderConnection
from shared.tables import escape_key
from shared.transport import RetryPolicy
from sync.engine import InvalidMessage, SyncService, parse_customer_message, sync_stream
from sync.runs import RunOutcome, RunResult
from sync.streams import AGREEMENTS, CUSTOMERS, MAX_RAW_UTF16_UNITS, SUBSCRIPTIONS
from tests.fakes.clients import fake_clients
from tests.fakes.partner_center import (
    FakePartnerCenter,
    fake_customer_id,
    FakeQueues,
    FakeTable,
    FakeTables,
    FakeTokenSource,
    make_client,
    response,
)

C0, C1, C2, C3 = (fake_customer_id(i) for i in range(4))
PROVIDER = ProviderConnection(id="p1", name="P1", country_code="US", currency_code="USD",
                              tenant_id="00000000-0000-0000-0000-000000000001", consent_status="active")


class RepositoryTable(FakeTable):
    """The fake table behind the repository's batching (shared.tables.TableRepository): any
    number of entities per call, sent as transactions of at most 100 of one partition."""

    def upsert_entities(self, entities, *, replace=True, on_rejected=None):
        written, batch = 0, []
        for entity in entities:
            if batch and (len(batch) == 100 or batch[0]["PartitionKey"] != entity["PartitionKey"]):
                written += super().upsert_entities(batch, replace=replace)
                batch = []
            batch.append(entity)
        if batch:
            written += super().upsert_entities(batch, replace=replace)
        return written


class RepositoryTables(FakeTables):
    def table(self, name):
        return self.tables.setdefault(name, RepositoryTable(name))


class Providers:
    def __init__(self, *providers):
        self.providers = {p.id: p for p in providers}

    def list_providers(self, *, enabled_only=False):
        return [p for p in self.providers.values() if p.enabled or not enabled_only]

    def find_provider(self, provider_id):
        return self.providers.get(provider_id)


def service(pc, tables=None, *, providers=(PROVIDER,), tokens=None, queues=None, graph_options=None):
    tables = tables or RepositoryTables()
    token_factory = (lambda provider: tokens) if tokens else (lambda provider: FakeTokenSource())
    return SyncService(
        tables=tables, providers=Providers(*providers), queues=queues or FakeQueues(),
        clients=fake_clients(token_factory, graph_options=graph_options, session=pc, sleep=lambda s: None,
                             retry=RetryPolicy(max_attempts=4)),
    )


def run(stream, pc, tables, customer_id=None):
    result = RunResult("p1", stream.name, customer_id)
    return sync_stream(stream, client=make_client(pc), tables=tables, provider_id="p1",
                       customer_id=customer_id, result=result)


def data_rows(tables, name, pk):
    return tables.table(name).partition(pk)


def test_first_run_writes_everything_second_run_nothing():
    pc, tables = FakePartnerCenter(customers=5), RepositoryTables()
    first = run(CUSTOMERS, pc, tables)
    assert (first.rows_read, first.rows_written, first.rows_removed) == (5, 5, 0)
    rows = data_rows(tables, "customers", "p1")
    assert set(rows) == {fake_customer_id(i) for i in range(5)}
    row = rows[C0]
    assert row["companyName"] == "Customer 0" and row["domain"] == "c0000.example"
    assert row["relationshipToPartner"] == "reseller" and row["removed"] is False
    assert json.loads(row["raw"])["id"] == C0 and row["raw_truncated"] is False
    second = run(CUSTOMERS, pc, tables)
    assert (second.rows_read, second.rows_written, second.rows_removed) == (5, 0, 0)
    assert tables.table("customers").writes == 5


def test_changed_item_is_the_only_write():
    pc, tables = FakePartnerCenter(customers=2, subs_per_customer=3), RepositoryTables()
    run(SUBSCRIPTIONS, pc, tables, C1)
    pc.subscriptions[C1]["s0001-2"]["quantity"] = 42
    result = run(SUBSCRIPTIONS, pc, tables, C1)
    assert result.rows_written == 1
    row = data_rows(tables, "subscriptions", escape_key(f"p1|{C1}"))["s0001-2"]
    assert row["quantity"] == 42 and row["customer_id"] == C1


def test_subscription_columns_and_nce_flag():
    pc, tables = FakePartnerCenter(customers=1, subs_per_customer=2), RepositoryTables()
    pc.subscriptions[C0]["s0000-1"].update({"quantity": "7", "autoRenewEnabled": "false", "status": "Brand_New_Status"})
    run(SUBSCRIPTIONS, pc, tables, C0)
    rows = data_rows(tables, "subscriptions", escape_key(f"p1|{C0}"))
    assert rows["s0000-1"]["isNce"] is True and rows["s0000-0"]["isNce"] is False
    assert rows["s0000-1"]["quantity"] == 7 and rows["s0000-1"]["autoRenewEnabled"] is False
    assert rows["s0000-1"]["status"] == "brand_new_status"  # unknown enum values are kept
    assert rows["s0000-0"]["etag"] == "e1" and rows["s0000-0"]["billingCycle"] == "monthly"


def test_pascal_case_items_are_flattened():
    pc, tables = FakePartnerCenter(customers=1, subs_per_customer=0), RepositoryTables()
    pc.subscriptions[C0]["S1"] = {"Id": "S1", "OfferId": "A:B:C", "Quantity": 3, "Status": "Active",
                                       "Attributes": {"Etag": "x"}}
    run(SUBSCRIPTIONS, pc, tables, C0)
    row = data_rows(tables, "subscriptions", escape_key(f"p1|{C0}"))["S1"]
    assert row["offerId"] == "A:B:C" and row["quantity"] == 3 and row["status"] == "active" and row["isNce"] is True


def test_disappeared_rows_are_tombstoned_and_reappearing_rows_cleared():
    pc, tables = FakePartnerCenter(customers=1, subs_per_customer=3), RepositoryTables()
    pk = escape_key(f"p1|{C0}")
    run(SUBSCRIPTIONS, pc, tables, C0)
    gone = pc.subscriptions[C0].pop("s0000-1")
    result = run(SUBSCRIPTIONS, pc, tables, C0)
    assert (result.rows_written, result.rows_removed) == (0, 1)
    row = data_rows(tables, "subscriptions", pk)["s0000-1"]
    assert row["removed"] is True and row["removed_at"] and row["offerId"]  # content kept
    assert run(SUBSCRIPTIONS, pc, tables, C0).rows_removed == 0  # not tombstoned twice
    pc.subscriptions[C0]["s0000-1"] = gone
    back = run(SUBSCRIPTIONS, pc, tables, C0)
    assert back.rows_written == 1
    row = data_rows(tables, "subscriptions", pk)["s0000-1"]
    assert row["removed"] is False and "removed_at" not in row


def test_removed_customer_tombstones_its_children():
    pc, tables = FakePartnerCenter(customers=3, subs_per_customer=2), RepositoryTables()
    run(CUSTOMERS, pc, tables)
    for cid in pc.customers:
        run(SUBSCRIPTIONS, pc, tables, cid)
        run(AGREEMENTS, pc, tables, cid)
    del pc.customers[C1]
    result = run(CUSTOMERS, pc, tables)
    assert (result.rows_written, result.rows_removed, result.children_removed) == (0, 1, 3)
    subs = data_rows(tables, "subscriptions", escape_key(f"p1|{C1}"))
    assert all(r["removed"] for r in subs.values()) and len(subs) == 2
    assert all(r["removed"] for r in data_rows(tables, "agreements", escape_key(f"p1|{C1}")).values())
    assert not any(r["removed"] for r in data_rows(tables, "subscriptions", escape_key(f"p1|{C0}")).values())


def test_failed_read_tombstones_nothing_and_rerun_converges():
    pc, tables = FakePartnerCenter(customers=5, page_size=2), RepositoryTables()
    run(CUSTOMERS, pc, tables)
    pc.customers[C0]["companyProfile"]["companyName"] = "Renamed"
    # the second page fails for good: the run dies half way
    pc.faults.append(lambda sent: response(400, {"code": 2000, "description": "bad"})
                     if sent.headers.get("MS-ContinuationToken") == "2" else None)
    with pytest.raises(Exception):
        run(CUSTOMERS, pc, tables)
    rows = data_rows(tables, "customers", "p1")
    assert not any(r["removed"] for r in rows.values())
    assert rows[C0]["companyName"] == "Renamed"  # the first page's change was written
    pc.faults.clear()
    again = run(CUSTOMERS, pc, tables)
    assert (again.rows_written, again.rows_removed) == (0, 0)


def test_duplicate_items_across_pages_are_written_once():
    pc, tables = FakePartnerCenter(customers=3, page_size=2), RepositoryTables()
    original = pc.request

    def with_duplicate(method, url, **kwargs):
        r = original(method, url, **kwargs)
        body = r.json()
        if body["items"] and body["items"][0]["id"] == C2:
            body["items"].insert(0, pc.customers[C1])
            body["totalCount"] += 1
            r._content = json.dumps(body).encode()
        return r

    pc.request = with_duplicate
    result = run(CUSTOMERS, pc, tables)
    assert (result.rows_read, result.duplicates, result.rows_written) == (4, 1, 3)


def test_agreements_have_stable_derived_keys():
    pc, tables = FakePartnerCenter(customers=1), RepositoryTables()
    run(AGREEMENTS, pc, tables, C0)
    rows = data_rows(tables, "agreements", escape_key(f"p1|{C0}"))
    assert len(rows) == 1
    (row,) = rows.values()
    assert row["type"] == "MicrosoftCustomerAgreement" and row["contactEmail"] == "t@c0000.example"
    assert run(AGREEMENTS, pc, tables, C0).rows_written == 0
    assert pc.sent[0].query == {"agreementType": "MicrosoftCustomerAgreement"}


def test_oversized_raw_is_flagged_not_stored():
    item = {"id": "big", "offerId": "x", "notes": "é" * (MAX_RAW_UTF16_UNITS + 10)}
    row = SUBSCRIPTIONS.build_row(item, provider_id="p1", customer_id=C0)
    assert row["raw_truncated"] is True and "raw" not in row and row["offerId"] == "x"


def test_keys_are_escaped():
    row = SUBSCRIPTIONS.build_row({"id": "a/b#c"}, provider_id="p1", customer_id=C0)
    assert row["RowKey"] == "a%2Fb%23c" and row["id"] == "a/b#c"
    assert SUBSCRIPTIONS.partition_key("p1", "c/1") == "p1|c%2F1"


def test_batches_stay_within_100_per_partition():
    pc, tables = FakePartnerCenter(customers=250, page_size=100), RepositoryTables()
    run(CUSTOMERS, pc, tables)
    assert tables.table("customers").batches == [100, 100, 50]


# -- the service ----------------------------------------------------------------------------------


def test_service_records_runs_and_enqueues_live_customers():
    pc, tables, queues = FakePartnerCenter(customers=4), RepositoryTables(), FakeQueues()
    svc = service(pc, tables, queues=queues)
    outcome = svc.sync_provider_customers(PROVIDER, correlation_id="corr")
    assert outcome.outcome == RunOutcome.SUCCEEDED and outcome.customers_enqueued == 4
    assert queues.sent["sync-customer"][0] == {"provider": "p1", "customer": C0, "correlationId": "corr"}
    runs = list(tables.table("syncruns").rows.values())
    assert len(runs) == 1
    (record,) = runs
    assert record["outcome"] == "succeeded" and record["rows_written"] == 4 and record["calls"] == 2
    assert record["stream"] == "customers" and record["finished_at"] >= record["started_at"]
    assert record["PartitionKey"] == "p1"


def test_removed_customers_are_not_enqueued():
    pc, tables, queues = FakePartnerCenter(customers=3), RepositoryTables(), FakeQueues()
    svc = service(pc, tables, queues=queues)
    svc.sync_provider_customers(PROVIDER)
    del pc.customers[C2]
    queues.sent.clear()
    svc.sync_provider_customers(PROVIDER)
    assert [m["customer"] for m in queues.sent["sync-customer"]] == [C0, C1]


def test_consent_required_stops_the_provider_cleanly():
    pc, tables, queues = FakePartnerCenter(customers=3), RepositoryTables(), FakeQueues()
    other = ProviderConnection(id="p2", name="P2", country_code="US", currency_code="USD",
                               tenant_id="00000000-0000-0000-0000-000000000002", consent_status="active")
    tokens = {"p1": FakeTokenSource(consent_error=True), "p2": FakeTokenSource()}
    svc = SyncService(tables=tables, providers=Providers(PROVIDER, other), queues=queues,
                      clients=fake_clients(lambda p: tokens[p.id], session=pc, sleep=lambda s: None))
    outcomes = {o.provider_id: o for o in svc.sync_all_providers()}
    assert outcomes["p1"].outcome == RunOutcome.CONSENT_REQUIRED and outcomes["p1"].customers_enqueued == 0
    assert outcomes["p2"].outcome == RunOutcome.SUCCEEDED and outcomes["p2"].customers_enqueued == 3
    assert len(pc.sent) == 2  # only p2's two pages: p1 made no Partner Center call
    records = {r["provider_id"]: r for r in tables.table("syncruns").rows.values()}
    assert records["p1"]["outcome"] == "consent_required" and "expired" in records["p1"]["error"]
    assert "token" not in records["p1"]["error"].lower().replace("refresh token expired", "")


def test_one_provider_crashing_does_not_stop_others():
    pc, tables = FakePartnerCenter(customers=2), RepositoryTables()
    other = ProviderConnection(id="p2", name="P2", country_code="US", currency_code="USD",
                               tenant_id="00000000-0000-0000-0000-000000000002", consent_status="active")

    def factory(provider):
        if provider.id == "p1":
            raise RuntimeError("key vault down")
        return FakeTokenSource()

    svc = SyncService(tables=tables, providers=Providers(PROVIDER, other), queues=FakeQueues(),
                      clients=fake_clients(factory, session=pc, sleep=lambda s: None))
    outcomes = {o.provider_id: o.outcome for o in svc.sync_all_providers()}
    assert outcomes == {"p1": RunOutcome.FAILED, "p2": RunOutcome.SUCCEEDED}


def test_providers_without_active_consent_are_skipped():
    pc = FakePartnerCenter(customers=2)
    pending = ProviderConnection(id="p3", name="P3", country_code="US", currency_code="USD",
                                 tenant_id="00000000-0000-0000-0000-000000000003", consent_status="pending")
    svc = service(pc, providers=(pending,))
    assert [o.outcome for o in svc.sync_all_providers()] == ["skipped"]
    assert pc.sent == []


def test_customer_message_syncs_both_streams():
    pc, tables = FakePartnerCenter(customers=2, subs_per_customer=3), RepositoryTables()
    svc = service(pc, tables)
    results = svc.handle_customer_message(parse_customer_message({"provider": "p1", "customer": C1}))
    assert [(r.stream, r.outcome, r.rows_written) for r in results] == [
        ("subscriptions", "succeeded", 3), ("agreements", "succeeded", 1)]


def test_customer_message_final_errors_are_recorded_not_raised():
    pc, tables = FakePartnerCenter(customers=1), RepositoryTables()
    svc = service(pc, tables)
    results = svc.handle_customer_message(parse_customer_message({"provider": "p1", "customer": fake_customer_id(99)}))
    assert [r.outcome for r in results] == [RunOutcome.FAILED, RunOutcome.FAILED]
    assert "60003" in results[0].error


def test_customer_message_transient_errors_are_raised_for_redelivery():
    pc = FakePartnerCenter(customers=1)
    pc.faults.append(lambda sent: requests.ConnectionError("reset"))
    svc = service(pc)
    with pytest.raises(Exception) as info:
        svc.handle_customer_message(parse_customer_message({"provider": "p1", "customer": C0}))
    assert type(info.value).__name__ == "TransportError"


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"customer":"c"}', b'{"provider":"p1"}',
                                  b'{"provider":"P 1","customer":"c"}', b'{"provider":"p1","customer":"../x"}',
                                  b"\xff\xfe"])
def test_bad_messages_are_rejected(body):
    with pytest.raises(InvalidMessage):
        parse_customer_message(body)


def test_budget_is_one_per_partner_tenant_shared_across_streams():
    pc = FakePartnerCenter(customers=2)
    svc = service(pc)
    other = ProviderConnection(id="p9", name="P9", country_code="US", currency_code="USD",
                               tenant_id="00000000-0000-0000-0000-000000000009", consent_status="active")
    clients = svc.clients
    assert clients.partner_center(PROVIDER).budget is clients.budget_for(PROVIDER.tenant_id)
    assert clients.partner_center(PROVIDER) is clients.partner_center(PROVIDER)
    assert clients.partner_center(other).budget is not clients.partner_center(PROVIDER).budget
    svc.sync_customer(PROVIDER, C0)
    assert clients.budget_for(PROVIDER.tenant_id).in_window() == 2
    assert clients.budget_for(PROVIDER.tenant_id).in_window(C0) == 2


def test_single_row_write_only_when_changed_or_removed():
    from sync.rows import write_row_if_changed

    table = RepositoryTables().table("subscriptions")
    item = {"id": "s1", "offerId": "o", "quantity": 1}
    row = lambda: SUBSCRIPTIONS.build_row(item, provider_id="p1", customer_id="c1")  # noqa: E731
    assert write_row_if_changed(table, row(), stamp="t1") is True
    assert write_row_if_changed(table, row(), stamp="t2") is False
    table.upsert_entity({"PartitionKey": row()["PartitionKey"], "RowKey": "s1", "removed": True})
    assert write_row_if_changed(table, row(), stamp="t3") is True
    assert table.partition(escape_key("p1|c1"))["s1"]["removed"] is False
