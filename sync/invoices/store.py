"""Writing an invoice's rows so that an import never half-lands, at flat memory, in parallel.

* Every import writes its rows into its own partitions (``<provider>|<invoice>|<generation>|
  <customer>``, a fresh generation per import). The invoice row says ``import_state=populating``
  while rows are written and names the generation that is complete (``import_generation``)
  only once the import has finished; readers go through :func:`live_rows`, a range over that
  generation's partitions, so they see the previous import whole until the new one is. Then
  :func:`sweep` deletes every row of the invoice from another generation (a crashed import's
  leftovers, the replaced import). A crashed import is redone from the start.
* :class:`PartitionedWriter` keeps at most one open batch per partition (<= 100 rows), sends a
  full batch at once and the fullest open batches when ``max_buffered`` rows are waiting, on a small
  thread pool with a bounded number of batches in flight: memory stays flat whatever the
  invoice size, and rows for different customers go to different partitions at the same time.
  A batch that fails transiently (a connection reset, a timeout, a 5xx/429) is sent again, a
  few times with a short backoff: its upserts replace, so a repeat stores the same rows.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator

from shared.logging import get_logger
from shared.tables import transient_failure

from .lines import generation_prefix, invoice_prefix

log = get_logger(__name__)

BATCH_ROWS = 100  # Table Storage's limit per transaction
DEFAULT_MAX_BUFFERED = 5000  # rows waiting in open batches (about 50 partitions' worth)
BATCH_ATTEMPTS = 4  # a batch's tries when the store fails transiently
RETRY_DELAY_S = 0.5  # doubled per retry


class PartitionedWriter:
    """Upserts (replace) rows in per-partition batches on ``workers`` threads."""

    def __init__(self, table: Any, *, workers: int = 4, max_buffered: int = DEFAULT_MAX_BUFFERED,
                 on_rejected: Callable[[dict[str, Any], str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.table = table
        self.sleep = sleep
        self.retries = 0
        self.workers = max(1, workers)
        self.max_buffered = max(BATCH_ROWS, max_buffered)
        self.on_rejected = on_rejected
        self.written = 0
        self._open: dict[str, list[dict[str, Any]]] = {}
        self._buffered = 0
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pcsync-rows") if self.workers > 1 else None
        self._in_flight: set[Future] = set()
        self._lock = threading.Lock()

    def add(self, entity: dict[str, Any]) -> None:
        batch = self._open.setdefault(entity["PartitionKey"], [])
        batch.append(entity)
        self._buffered += 1
        if len(batch) >= BATCH_ROWS:
            self._send(self._open.pop(entity["PartitionKey"]))
        if self._buffered >= self.max_buffered:
            self._send_fullest()

    def _send_fullest(self) -> None:
        """Send the fullest open batches until a quarter of the buffer is free: rows spread over
        many partitions still go out in batches near 100 (fewer round trips), not all at once."""
        for partition in sorted(self._open, key=lambda p: len(self._open[p]), reverse=True):
            if self._buffered <= self.max_buffered * 3 // 4:
                break
            self._send(self._open.pop(partition))

    def flush_open(self) -> None:
        for partition in list(self._open):
            self._send(self._open.pop(partition))

    def close(self) -> int:
        """Send what is open and wait for every batch; raises the first failure."""
        try:
            self.flush_open()
            self._drain(0)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        return self.written

    def _send(self, batch: list[dict[str, Any]]) -> None:
        self._buffered -= len(batch)
        if self._pool is None:
            self._write(batch)
            return
        self._drain(self.workers * 2)
        self._in_flight.add(self._pool.submit(self._write, batch))

    def _drain(self, limit: int) -> None:
        while len(self._in_flight) > limit:
            done, self._in_flight = wait(self._in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a failed batch fails the import

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                count = self.table.upsert_entities(batch, replace=True, on_rejected=self.on_rejected)
                break
            except Exception as exc:
                if attempt == BATCH_ATTEMPTS or not transient_failure(exc):
                    raise
                delay = RETRY_DELAY_S * 2 ** (attempt - 1)
                log.warning("batch of %d rows for %s failed (%s); retry %d/%d in %.1fs", len(batch),
                            batch[0]["PartitionKey"], type(exc).__name__, attempt, BATCH_ATTEMPTS - 1, delay)
                with self._lock:
                    self.retries += 1
                self.sleep(delay)
        with self._lock:
            self.written += count


def prefix_rows(table: Any, prefix: str, *, select: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every row whose PartitionKey starts with ``prefix`` (which ends in "|")."""
    yield from _key_range(table, prefix, _after(prefix), select=select)


def _after(prefix: str) -> str:
    """The first key past every key that starts with ``prefix`` (ending in "|"): "}" follows "|"
    in ASCII."""
    return prefix[:-1] + "}"


def _key_range(table: Any, lo: str, hi: str, *, select: list[str] | None) -> Iterator[dict[str, Any]]:
    yield from table.list_entities(query="PartitionKey ge @lo and PartitionKey lt @hi",
                                   parameters={"lo": lo, "hi": hi}, select=select)


def invoice_rows(table: Any, provider_id: str, invoice_id: str, *, select: list[str] | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Every row of an invoice in ``table``, whatever its generation."""
    yield from prefix_rows(table, invoice_prefix(provider_id, invoice_id), select=select)


def live_rows(table: Any, provider_id: str, invoice_id: str, generation: str | None, *,
              select: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of the invoice's complete import (none while it has none)."""
    if generation:
        yield from prefix_rows(table, generation_prefix(provider_id, invoice_id, generation), select=select)


def sweep(table: Any, provider_id: str, invoice_id: str, generation: str, *,
          legacy_partition: str | None = None, workers: int = 4) -> int:
    """Delete the invoice's rows of any other generation (and, once, the rows of the layout
    before partitions per generation: one partition per invoice), in per-partition batches."""
    # two key ranges around the live generation's partitions: its rows are not read back
    everything, live = invoice_prefix(provider_id, invoice_id), generation_prefix(provider_id, invoice_id, generation)
    columns = ["PartitionKey", "RowKey", "generation"]
    doomed = (row for lo, hi in ((everything, live), (_after(live), _after(everything)))
              for row in _key_range(table, lo, hi, select=columns) if row.get("generation") != generation)
    removed = _delete_all(table, doomed, workers=workers)
    if legacy_partition:
        removed += _delete_all(table, table.list_entities(partition_key=legacy_partition,
                                                          select=["PartitionKey", "RowKey"]), workers=1)
    return removed


def _delete_all(table: Any, rows: Iterator[dict[str, Any]], *, workers: int) -> int:
    """Delete rows in transactions of up to 100 per partition (rows arrive partition by
    partition), a few at a time; one by one where the table offers no transactions."""
    client = getattr(table, "client", None)
    if client is None:
        count = 0
        for row in rows:
            table.delete_entity(row["PartitionKey"], row["RowKey"])
            count += 1
        return count

    def submit(batch: list[dict[str, Any]]) -> int:
        client.submit_transaction([("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                                   for r in batch])
        return len(batch)

    count = 0
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="pcsync-sweep") as pool:
        pending: set[Future] = set()
        batch: list[dict[str, Any]] = []
        for row in rows:
            if batch and (len(batch) == BATCH_ROWS or batch[0]["PartitionKey"] != row["PartitionKey"]):
                pending.add(pool.submit(submit, batch))
                batch = []
                if len(pending) > 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    count += sum(f.result() for f in done)
            batch.append(row)
        if batch:
            pending.add(pool.submit(submit, batch))
        count += sum(f.result() for f in pending)
    return count


__all__ = ["BATCH_ROWS", "PartitionedWriter", "invoice_rows", "live_rows", "prefix_rows", "sweep"]
