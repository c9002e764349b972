import random
import string

import pytest
from azure.core.exceptions import HttpResponseError

from shared.tables import (
    MAX_BATCH_OPERATIONS,
    MAX_ENTITY_BYTES,
    MAX_STRING_UTF16_UNITS,
    RowsRejected,
    TableRepository,
    entity_bytes,
    escape_key,
    fit_entity,
    unescape_key,
    utf16_units,
)


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
    rows = [{**row, "more": "y" * 30_000} for row in entities("a", 100, payload="x" * 30_000)]  # each under the cap
    TableRepository(client).upsert_entities(rows)
    assert len(client.transactions) > 1
    for batch in client.transactions:
        assert sum(len(op[1]["payload"]) + len(op[1]["more"]) for op in batch) < 4 * 1024 * 1024


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


# -- issue 9 point 9: every string column capped, the entity within 1 MiB, one bad row fails alone --

def test_a_string_column_over_64_kib_is_truncated_and_marked():
    row = {"PartitionKey": "p", "RowKey": "r", "companyName": "n" * 40_000, "domain": "d"}
    fitted = fit_entity(row)
    assert len(fitted["companyName"]) == MAX_STRING_UTF16_UNITS and fitted["companyName_truncated"] is True
    assert fitted["domain"] == "d" and "domain_truncated" not in fitted
    assert fit_entity({"PartitionKey": "p", "RowKey": "r", "a": "x"}) == {"PartitionKey": "p", "RowKey": "r", "a": "x"}


def test_truncation_counts_utf16_units_and_never_splits_a_surrogate_pair():
    fitted = fit_entity({"PartitionKey": "p", "RowKey": "r", "s": "😀" * 20_000})  # 40,000 UTF-16 units
    assert utf16_units(fitted["s"]) <= MAX_STRING_UTF16_UNITS and set(fitted["s"]) == {"😀"}


def test_an_entity_over_1_mib_has_its_longest_strings_shortened():
    row = {"PartitionKey": "p", "RowKey": "r", **{f"c{i:02d}": "x" * 30_000 for i in range(20)}}
    assert entity_bytes(row) > MAX_ENTITY_BYTES
    fitted = fit_entity(row)
    assert entity_bytes(fitted) <= MAX_ENTITY_BYTES
    assert any(fitted.get(f"c{i:02d}_truncated") for i in range(20))


class RefusingTableClient(RecordingTableClient):
    """Refuses (HTTP 400, as the service does) every transaction holding a row with ``bad``."""

    def __init__(self, status=400):
        super().__init__()
        self.status = status

    def submit_transaction(self, operations):
        operations = list(operations)
        if any(op[1].get("bad") for op in operations):
            error = HttpResponseError(message="1:The property value exceeds the maximum allowed size (64KB).")
            error.status_code = self.status
            raise error
        return super().submit_transaction(operations)


def test_one_refused_row_fails_alone_and_the_rest_of_its_batch_is_stored():
    client = RefusingTableClient()
    rows = entities("a", 150)
    rows[42]["bad"] = True
    refused = []
    written = TableRepository(client).upsert_entities(rows, on_rejected=lambda e, why: refused.append((e["RowKey"], why)))
    assert written == 149
    assert [key for key, _ in refused] == ["r00042"] and "HTTP 400" in refused[0][1]
    stored = [op[1]["RowKey"] for batch in client.transactions for op in batch]
    assert sorted(stored) == sorted(r["RowKey"] for r in rows if not r.get("bad"))


def test_without_a_handler_the_rest_is_stored_then_the_refusal_raised():
    client = RefusingTableClient()
    rows = entities("a", 10)
    rows[3]["bad"] = True
    with pytest.raises(RowsRejected) as info:
        TableRepository(client).upsert_entities(rows)
    assert len(info.value.rejected) == 1 and sum(len(t) for t in client.transactions) == 9


def test_a_service_failure_is_not_split_but_raised():
    client = RefusingTableClient(status=503)
    rows = entities("a", 10)
    rows[3]["bad"] = True
    with pytest.raises(HttpResponseError):
        TableRepository(client).upsert_entities(rows, on_rejected=lambda e, why: None)
    assert client.transactions == []
