"""Tables and queues against a real Azurite."""
import base64
import json

import pytest
from azure.storage.queue import QueueClient

from shared.errors import MessageTooLarge, NotFound
from shared.queues import QueuePublisher
from shared.tables import TableStore, escape_key, unescape_key
from tests.support import STORAGE_TEST_OPTIONS


def test_250_rows_in_one_partition_are_written_in_valid_batches(storage):
    table = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS).table("bulk")
    rows = [{"PartitionKey": "p", "RowKey": f"{i:04d}", "n": i} for i in range(250)]
    assert table.upsert_entities(rows) == 250
    stored = list(table.list_entities(partition_key="p"))
    assert sorted(r["n"] for r in stored) == list(range(250))


def test_keys_with_forbidden_characters_round_trip(storage):
    table = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS).table("keys")
    raw_keys = ["a/b", "c\\d", "e#f", "g?h", "tab\tx", "100%"]
    table.upsert_entities({"PartitionKey": escape_key("part/1"), "RowKey": escape_key(k), "v": k} for k in raw_keys)
    stored = list(table.list_entities(partition_key=escape_key("part/1")))
    assert sorted(unescape_key(r["RowKey"]) for r in stored) == sorted(raw_keys)
    assert table.get_entity(escape_key("part/1"), escape_key("g?h"))["v"] == "g?h"
    with pytest.raises(NotFound):
        table.get_entity("part", "missing")
    table.delete_entity("part", "missing")  # deleting a missing row succeeds


def test_upsert_replace_and_merge(storage):
    table = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS).table("modes")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "a": 1, "b": 2})
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "b": 3})
    assert {k: v for k, v in table.get_entity("p", "r").items() if k in "ab"} == {"a": 1, "b": 3}
    table.upsert_entities([{"PartitionKey": "p", "RowKey": "r", "b": 4}], replace=True)
    assert "a" not in table.get_entity("p", "r")


def test_queue_messages_are_base64_json_as_the_functions_host_expects(storage):
    publisher = QueuePublisher.from_connection_string(storage, **STORAGE_TEST_OPTIONS)
    publisher.send_json("sync-customer", {"provider": "p1", "customer": "c1"})
    raw = QueueClient.from_connection_string(storage, "sync-customer", **STORAGE_TEST_OPTIONS).receive_message()
    assert json.loads(base64.b64decode(raw.content)) == {"customer": "c1", "provider": "p1"}
    with pytest.raises(MessageTooLarge):
        publisher.send_json("sync-customer", {"blob": "x" * 70_000})


# -- issue 9 point 9: a column over 64 KiB never fails its batch; a refused row fails alone ---------

def test_a_40000_character_company_name_among_150_customers_is_truncated_and_all_stored(storage):
    from sync.engine import sync_stream
    from sync.runs import RunResult
    from sync.streams import CUSTOMERS
    from tests.fakes.partner_center import FakePartnerCenter, fake_customer_id, make_client

    pc = FakePartnerCenter(customers=150, page_size=100)
    long_name = "N" * 40_000
    pc.customers[fake_customer_id(77)]["companyProfile"]["companyName"] = long_name
    tables = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS)
    result = sync_stream(CUSTOMERS, client=make_client(pc), tables=tables, provider_id="p1",
                         result=RunResult("p1", "customers"))
    assert (result.rows_read, result.rows_written, result.rows_skipped) == (150, 150, 0)
    rows = {r["id"]: r for r in tables.table("customers").list_entities(partition_key="p1")}
    assert len(rows) == 150
    truncated = [r for r in rows.values() if r.get("companyName_truncated")]
    assert [r["id"] for r in truncated] == [fake_customer_id(77)]
    assert long_name.startswith(truncated[0]["companyName"]) and len(truncated[0]["companyName"]) >= 32_000
    # the stored hash is the upstream item's: a second run writes nothing
    again = sync_stream(CUSTOMERS, client=make_client(pc), tables=tables, provider_id="p1",
                        result=RunResult("p1", "customers"))
    assert (again.rows_written, again.rows_removed) == (0, 0)


def test_a_row_the_service_refuses_fails_alone_and_the_rest_of_its_batch_is_stored(storage):
    table = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS).table("refused")
    rows = [{"PartitionKey": "p", "RowKey": f"{i:04d}", "n": i} for i in range(150)]
    rows[42]["blob"] = b"x" * 70_000  # a binary property over 64 KiB: no truncation makes it fit
    refused = []
    written = table.upsert_entities(rows, on_rejected=lambda entity, why: refused.append((entity["RowKey"], why)))
    assert written == 149 and [key for key, _ in refused] == ["0042"]
    assert "PropertyValueTooLarge" in refused[0][1]
    assert sorted(r["n"] for r in table.list_entities(partition_key="p")) == [i for i in range(150) if i != 42]


def test_a_run_row_is_written_running_at_start_and_finished_in_place(storage):
    from sync.runs import RunOutcome, RunResult, list_runs, record_run

    tables = TableStore.from_connection_string(storage, **STORAGE_TEST_OPTIONS)
    result = RunResult("p1", "customers")
    record_run(tables, result)
    assert [r["outcome"] for r in list_runs(tables, "p1")] == ["running"]
    result.end(RunOutcome.SUCCEEDED)
    result.finished_at = result.started_at
    record_run(tables, result)
    (row,) = list_runs(tables, "p1")
    assert row["outcome"] == "succeeded" and "finished_at" in row
