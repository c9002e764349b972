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
