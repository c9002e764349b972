"""Fakes for the invoice side: a table that answers the range queries an invoice's partitions
are read with (and deletes), thread-safe like the service, over the repository's batching."""
from __future__ import annotations

import threading

from tests.fakes.partner_center import FakeTable, FakeTables


class RangeTable(FakeTable):
    """Rows come back in (PartitionKey, RowKey) order, as Table Storage returns them; the one
    query form the invoice store uses (``PartitionKey ge @lo and PartitionKey lt @hi``) works."""

    def __init__(self, name: str):
        super().__init__(name)
        self.lock = threading.RLock()

    def upsert_entities(self, entities, *, replace=True, on_rejected=None):
        with self.lock:
            return super().upsert_entities(entities, replace=replace, on_rejected=on_rejected)

    def upsert_entity(self, entity, *, replace=False):
        with self.lock:
            super().upsert_entity(entity, replace=replace)

    def list_entities(self, *, partition_key=None, query=None, parameters=None, select=None):
        with self.lock:
            rows = sorted(self.rows.items())
        if query is not None:
            assert query == "PartitionKey ge @lo and PartitionKey lt @hi", query
            lo, hi = parameters["lo"], parameters["hi"]
            rows = [(k, r) for k, r in rows if lo <= k[0] < hi]
        for (pk, _), row in rows:
            if partition_key is None or pk == partition_key:
                yield {k: v for k, v in row.items() if not select or k in select or k in ("PartitionKey", "RowKey")}

    def delete_entity(self, pk, rk):
        with self.lock:
            self.rows.pop((pk, rk), None)

    def invoice_rows(self, prefix: str) -> dict[tuple[str, str], dict]:
        return {k: r for k, r in self.rows.items() if k[0].startswith(prefix)}


class RangeTables(FakeTables):
    def table(self, name: str) -> RangeTable:
        return self.tables.setdefault(name, RangeTable(name))


class ResettingTable(RangeTable):
    """Its first ``resets`` batch writes store the first half of the batch, then the connection
    resets (what a caller sees when Azurite drops it mid-transaction: landed or not, unknown)."""

    def __init__(self, name: str, *, resets: int = 1):
        super().__init__(name)
        self.resets = resets

    def upsert_entities(self, entities, *, replace=True, on_rejected=None):
        entities = list(entities)
        with self.lock:
            if self.resets > 0:
                self.resets -= 1
                super().upsert_entities(entities[:len(entities) // 2], replace=replace, on_rejected=on_rejected)
                raise ConnectionResetError(104, "Connection reset by peer")
        return super().upsert_entities(entities, replace=replace, on_rejected=on_rejected)
