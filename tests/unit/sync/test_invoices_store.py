"""The invoice store's parallel writer: a transient store failure (a connection reset inside a
batch) is retried, not the end of the import."""
from __future__ import annotations

import pytest

from sync.invoices.store import BATCH_ATTEMPTS, PartitionedWriter
from sync.runs import RunOutcome
from tests.fakes.billing import RangeTables, ResettingTable
from tests.unit.sync.test_invoices_reconciliation import PROVIDER, FakeBilling, invoice_lines, invoice_service, \
    onetime_lines


def rows(n, partitions=("p|a", "p|b")):
    return [{"PartitionKey": partitions[i % len(partitions)], "RowKey": f"r{i:04d}", "n": i} for i in range(n)]


def test_a_connection_reset_in_one_batch_is_retried_and_every_row_lands():
    table, slept = ResettingTable("invoicelineitems"), []
    writer = PartitionedWriter(table, workers=2, sleep=slept.append)
    for row in rows(250):
        writer.add(row)
    assert writer.close() == 250
    assert len(table.rows) == 250 and writer.retries == 1 and slept == [0.5]


def test_a_store_that_keeps_failing_fails_the_write_after_bounded_tries():
    table = ResettingTable("invoicelineitems", resets=BATCH_ATTEMPTS)
    writer = PartitionedWriter(table, workers=1, sleep=lambda _: None)
    with pytest.raises(ConnectionResetError):
        for row in rows(100, partitions=("p|a",)):
            writer.add(row)
        writer.close()
    assert writer.retries == BATCH_ATTEMPTS - 1


def test_a_row_fault_is_not_retried():
    class Refusing(ResettingTable):
        def upsert_entities(self, entities, **kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            raise ValueError("not a transient failure")

    table = Refusing("t")
    writer = PartitionedWriter(table, workers=1, sleep=lambda _: None)
    with pytest.raises(ValueError):
        for row in rows(100, partitions=("p|a",)):
            writer.add(row)
        writer.close()
    assert table.calls == 1


def test_an_import_survives_a_connection_reset_inside_its_writer():
    billing = FakeBilling()
    billing.add("G1", onetime_lines(230))
    tables = RangeTables()
    tables.tables["invoicelineitems"] = ResettingTable("invoicelineitems")
    svc, tables = invoice_service(billing, tables=tables)
    svc.sync_provider_invoices(PROVIDER, enqueue=False)
    result = svc.import_invoice(PROVIDER, "G1")
    assert result.outcome == RunOutcome.SUCCEEDED and result.rows_written == 230
    assert len(invoice_lines(tables, "G1")) == 230 and tables.tables["invoicelineitems"].resets == 0
