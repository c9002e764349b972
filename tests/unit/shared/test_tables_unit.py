import random
import string

import pytest

from shared.tables import MAX_BATCH_OPERATIONS, TableRepository, escape_key, unescape_key


class RecordingTableClient:
    """Stands in for azure.data.tables.TableClient: records every transaction it is sent."""

    table_name = "fake"

    def __init__(self):
        self.transactions = []

    def submit_transaction(self, operations):
        operations = list(operations)
        assert len({op[1]["PartitionKey"] for op in operations}) == 1
        self.transactions.append(operations)
        return [{} for _ in operations]


def entities(partition, count, start=0, payload=""):
    return [{"PartitionKey": partition, "RowKey": f"r{i:05d}", "payload": payload} for i in range(start, start + count)]


def test_batches_never_exceed_100_operations_per_partition():
    client = RecordingTableClient()
    written = TableRepository(client).upsert_entities(entities("a", 250) + entities("b", 101))
    sizes = sorted(len(t) for t in client.transactions)
    assert written == 351
    assert max(sizes) == MAX_BATCH_OPERATIONS
    assert sizes == [1, 50, 100, 100, 100]


def test_exactly_100_is_one_batch_and_101_is_two():
    client = RecordingTableClient()
    TableRepository(client).upsert_entities(entities("a", 100))
    assert [len(t) for t in client.transactions] == [100]
    client = RecordingTableClient()
    TableRepository(client).upsert_entities(entities("a", 101))
    assert sorted(len(t) for t in client.transactions) == [1, 100]


def test_large_entities_split_batches_below_the_4_mib_payload_limit():
    client = RecordingTableClient()
    TableRepository(client).upsert_entities(entities("a", 100, payload="x" * 60_000))
    assert len(client.transactions) > 1
    for batch in client.transactions:
        assert sum(len(op[1]["payload"]) for op in batch) < 4 * 1024 * 1024


def test_duplicate_row_in_one_call_is_sent_in_separate_batches_and_last_wins():
    client = RecordingTableClient()
    rows = [{"PartitionKey": "a", "RowKey": "1", "v": 1}, {"PartitionKey": "a", "RowKey": "1", "v": 2}]
    TableRepository(client).upsert_entities(rows)
    assert [[op[1]["v"] for op in t] for t in client.transactions] == [[1], [2]]


@pytest.mark.parametrize("raw", ["a/b", "a\\b", "x#y", "what?", "50%", "tab\there", "nl\n", "\x7f\x85", "plain-id_1.2"])
def test_escape_key_removes_forbidden_characters_and_reverses(raw):
    escaped = escape_key(raw)
    assert not set("/\\#?") & set(escaped)
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in escaped)
    assert unescape_key(escaped) == raw


def test_escape_key_round_trips_random_text():
    rng = random.Random(7)
    alphabet = string.printable + "/\\#?%\x00\x1f\x7f\x9féü"
    for _ in range(500):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert unescape_key(escape_key(raw)) == raw
