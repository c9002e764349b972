"""The one change-only writer and tombstoner of synced rows.

A row is written (replaced) only when it is new, its ``content_hash`` differs from the stored
row's, or the stored row is a tombstone; rows missing upstream get ``removed=True`` and
``removed_at`` merged in (content kept, never deleted). Batching is the repository's job
(:meth:`shared.tables.TableRepository.upsert_entities` sends per-partition transactions of at
most 100), so rows are handed to it as one lazy stream and memory stays flat.

How the stored partition is compared depends on the order rows arrive in:

* :class:`StoredByKey`: any order (Partner Center collections). The partition's keys and hashes
  are read first (small per row, no payloads); duplicates upstream are counted and skipped.
* :class:`StoredInKeyOrder`: rows arrive in strictly increasing RowKey order (invoice lines, by
  position). A merge-join with the stored rows read alongside (Table Storage returns a
  partition in RowKey order), so an invoice of a million lines needs no key set in memory.
  Stored keys passed over are gone upstream and are tombstoned as soon as they are passed.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

STATE_COLUMNS = ["RowKey", "content_hash", "removed"]


class Verdict(enum.Enum):
    WRITE = "write"  # new, changed or coming back after removal
    UNCHANGED = "unchanged"
    DUPLICATE = "duplicate"  # the key was already seen in this read


class StoredOrderError(RuntimeError):
    """The table returned a partition out of RowKey order (the merge-join relies on it)."""


class StoredRows(Protocol):
    def verdict(self, row_key: str, content_hash: str) -> Verdict: ...

    def passed_over(self, row_key: str) -> Iterator[str] | None:
        """Live stored keys known to be gone once ``row_key`` arrives (None: none)."""

    def gone(self) -> Iterator[str]:
        """After a complete read: the live stored keys upstream did not return."""


class StoredByKey:
    """The partition's (hash, removed) by RowKey, read up front."""

    def __init__(self, table: Any, partition_key: str):
        self._stored = {
            row["RowKey"]: (row.get("content_hash"), bool(row.get("removed")))
            for row in table.list_entities(partition_key=partition_key, select=STATE_COLUMNS)
        }
        self._seen: set[str] = set()

    def verdict(self, row_key: str, content_hash: str) -> Verdict:
        if row_key in self._seen:
            return Verdict.DUPLICATE
        self._seen.add(row_key)
        return Verdict.UNCHANGED if self._stored.get(row_key) == (content_hash, False) else Verdict.WRITE

    def passed_over(self, row_key: str) -> Iterator[str] | None:
        return None  # any order: nothing is known to be gone before the read is complete

    def gone(self) -> Iterator[str]:
        return (key for key, (_, removed) in self._stored.items() if key not in self._seen and not removed)


class StoredInKeyOrder:
    """A merge-join cursor over the stored partition, read lazily a page at a time."""

    def __init__(self, table: Any, partition_key: str):
        self._stored = iter(table.list_entities(partition_key=partition_key, select=STATE_COLUMNS))
        self._head: Mapping[str, Any] | None = None
        self._head_key: str | None = None
        self._last_key: str | None = None
        self._advance()

    def _advance(self) -> None:
        previous = self._head_key
        self._head = next(self._stored, None)
        self._head_key = None if self._head is None else self._head["RowKey"]
        if previous is not None and self._head_key is not None and self._head_key <= previous:
            raise StoredOrderError(f"stored rows out of order: {self._head_key!r} after {previous!r}")

    def _pop_live_until(self, row_key: str | None) -> Iterator[str]:
        while self._head_key is not None and (row_key is None or self._head_key < row_key):
            key, removed = self._head_key, bool(self._head and self._head.get("removed"))
            self._advance()
            if not removed:
                yield key

    def passed_over(self, row_key: str) -> Iterator[str] | None:
        if self._last_key is not None and row_key <= self._last_key:
            raise ValueError(f"rows must arrive in increasing RowKey order ({row_key!r} after {self._last_key!r})")
        self._last_key = row_key
        if self._head_key is None or self._head_key >= row_key:
            return None
        return self._pop_live_until(row_key)

    def verdict(self, row_key: str, content_hash: str) -> Verdict:
        if self._head_key != row_key:
            return Verdict.WRITE
        head = self._head or {}
        unchanged = head.get("content_hash") == content_hash and not head.get("removed")
        self._advance()
        return Verdict.UNCHANGED if unchanged else Verdict.WRITE

    def gone(self) -> Iterator[str]:
        return self._pop_live_until(None)


@dataclass
class RowCounts:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    duplicates: int = 0


class RowWriter:
    """Brings one partition in line with what upstream returns; counts go to ``counts``."""

    def __init__(self, table: Any, partition_key: str, stored: StoredRows, *, stamp: datetime,
                 on_rejected: Callable[[dict[str, Any], str], None] | None = None):
        self.table = table
        self.partition_key = partition_key
        self.stored = stored
        self.stamp = stamp
        self.counts = RowCounts()
        # a row the table refuses is skipped alone (the rest of its batch is stored) and reported here
        self.on_rejected = on_rejected

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write the changed rows among ``rows``. When reading ``rows`` fails, the rows read
        before the failure are still written (they are correct, and a re-run skips them), then
        the failure is raised."""
        failure: list[BaseException] = []

        def changed() -> Iterator[dict[str, Any]]:
            try:
                for row in rows:
                    if self._needs_write(row):
                        row["removed"] = False  # a reappearing row clears its tombstone (replace drops removed_at)
                        row["updated_at"] = self.stamp
                        yield row
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the flush
                failure.append(exc)

        handler = {"on_rejected": self.on_rejected} if self.on_rejected is not None else {}
        self.counts.written += self.table.upsert_entities(changed(), replace=True, **handler)
        if failure:
            raise failure[0]

    def _needs_write(self, row: Mapping[str, Any]) -> bool:
        key = row["RowKey"]
        gone = self.stored.passed_over(key)
        if gone is not None:
            self.tombstone(gone)
        verdict = self.stored.verdict(key, row["content_hash"])
        if verdict is Verdict.DUPLICATE:
            self.counts.duplicates += 1
        elif verdict is Verdict.UNCHANGED:
            self.counts.unchanged += 1
        return verdict is Verdict.WRITE

    def remove_gone(self) -> int:
        """Only after a complete read: tombstone the stored rows upstream no longer has."""
        return self.tombstone(self.stored.gone())

    def tombstone(self, row_keys: Iterable[str]) -> int:
        removed = tombstone_rows(self.table, self.partition_key, row_keys, when=self.stamp)
        self.counts.removed += removed
        return removed


def tombstone_rows(table: Any, partition_key: str, row_keys: Iterable[str], *, when: datetime) -> int:
    """Merge ``removed=True`` + ``removed_at`` into rows (their content columns stay)."""
    keys = iter(row_keys)
    first = next(keys, None)
    if first is None:
        return 0  # no empty transaction

    def marks() -> Iterator[dict[str, Any]]:
        for row_key in itertools.chain((first,), keys):
            yield {"PartitionKey": partition_key, "RowKey": row_key, "removed": True, "removed_at": when}

    return table.upsert_entities(marks(), replace=False)


def live_row_keys(table: Any, partition_key: str) -> Iterator[str]:
    """RowKeys of the partition's rows that are not tombstones."""
    for row in table.list_entities(partition_key=partition_key, select=["RowKey", "removed"]):
        if not row.get("removed"):
            yield row["RowKey"]


def write_row_if_changed(table: Any, row: dict[str, Any] | None, *, stamp: datetime) -> bool:
    """One row, outside a full read (e.g. after a write-back): replaced only when new, changed
    or a tombstone. True when it was written."""
    if row is None:
        return False
    stored = table.find_entity(row["PartitionKey"], row["RowKey"])
    if stored and stored.get("content_hash") == row["content_hash"] and not stored.get("removed"):
        return False
    row["removed"] = False
    row["updated_at"] = stamp
    table.upsert_entity(row, replace=True)
    return True


__all__ = ["RowCounts", "RowWriter", "StoredByKey", "StoredInKeyOrder", "StoredOrderError", "live_row_keys",
           "tombstone_rows", "write_row_if_changed"]
