"""Invoice line items with fakes: row mapping per sample, reconciliation math, routing,
the merge-join writer, messages and the invoice service flows."""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from shared.providers import ProviderConnection, Tolerance
from shared.transport import RetryPolicy
from sync.engine import InvalidMessage
from sync.invoices.service import IMPORT_INVOICE_QUEUE, InvoiceService, parse_import_message, plan_import
from sync.invoices.lines import RECON_COLUMNS, build_row, recon_total
from sync.invoices.reconciliation import (
    V1_AZURE,
    V1_OFFICE,
    V1_ONETIME,
    V2_RECON,
    ReconciliationStatus,
    reconcile,
    to_decimal,
)
from sync.rows import RowWriter, StoredInKeyOrder, StoredOrderError
from sync.runs import RunOutcome
from sync.streams import INVOICES
from tests.fakes.billing import RangeTables
from tests.fakes.partner_center import FakeQueues, FakeTable, FakeTokenSource, NoSleep, response
from test_sync_engine import RepositoryTable, RepositoryTables, service

from tests.support import SAMPLES_DIR as SAMPLES
NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


def sample(name):
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def row_for(item, source=V1_ONETIME, index=0, invoice_id="G1"):
    return build_row(item, RECON_COLUMNS, provider_id="p1", invoice_id=invoice_id, source=source.name, index=index,
                     generation="g1")


def same(stored, expected):
    """A stored column against a sample value: amounts are exact decimal text now."""
    if isinstance(expected, float):
        return to_decimal(stored) == to_decimal(expected)
    return stored == expected


# ---------------------------------------------------------------------------------------------
# Row mapping, per sample file
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, source, expected", [
    ("invoice-lineitems-office-billing-legacy.json", V1_OFFICE,
     {"customerId": "74221236-D09C-4870-AC1D-33E155E9AEBE", "customerName": "TSTAGIN1CUST190",
      "subscriptionId": "4KIKawEAAAAAAAEA", "productId": "AAA5B3F0-0EE2-431B-A42F-3F18F3C6D540",
      "productName": "EXCHANGE ONLINE (PLAN 2)", "chargeType": "new", "quantity": 3.0, "unitPrice": 0.0,
      "subtotal": 0.0, "tax": 0.0, "total": 0.0, "currency": "USD", "chargeStart": "2017-05-12T00:00:00",
      "chargeEnd": "2017-06-09T00:00:00", "billingProvider": "office", "lineItemType": "billing_line_items"}),
    ("invoice-lineitems-azure-billing-legacy.json", V1_AZURE,
     {"customerId": "65726577-c208-40fd-9735-8c85ac000000", "customerName": "601 tests",
      "customerDomain": "600test.onmicrosoft.com", "skuId": "7UD-00001", "productName": "Azure App Service",
      "skuName": "S1", "quantity": 745.0, "unitPrice": 0.085, "subtotal": 63.33, "tax": 6.34, "total": 69.67,
      "chargeType": "assess usage fee for current cycle", "invoiceNumber": "1234000000"}),
    ("invoice-lineitems-onetime-billing.json", V1_ONETIME,
     {"customerId": "org:9060d13d-c5ed-482e-b059-a15a38000000", "productId": "productid", "skuId": "skuid",
      "productName": "TEST PRODUCT", "skuName": "TEST SKU TITLE", "quantity": 1.0, "unitPrice": 431.8,
      "effectiveUnitPrice": 496.07, "subtotal": 431.8, "tax": 38.87, "total": 470.67, "currency": "USD",
      "billingProvider": "one_time"}),
    ("invoice-lineitems-onetime-billing-seek-next.json", V1_ONETIME,
     {"productId": "DZH318Z0BQ3P", "quantity": 1.0, "unitPrice": 1447.0, "total": 1577.24, "tax": 130.24}),
    ("invoice-lineitems-unbilled-recon.json", V1_ONETIME,
     {"customerCountry": None, "productName": "Test WAF-as-a-Service", "total": 0.0, "subtotal": 820.0,
      "chargeStart": "2019-02-04T09:22:40.1767993-08:00"}),
    ("invoice-lineitems-daily-rated-usage-billed.json", V2_RECON,
     {"skuName": "Test Test on Windows 2012 R2 (WebHost)", "quantity": 23.200004, "chargeType": "new",
      "currency": "USD"}),
])
def test_sample_line_items_map_to_rows(name, source, expected):
    items = sample(name)["items"]
    rows = [row_for(item, source, i, invoice_id="D1") for i, item in enumerate(items)]
    entity = rows[0].entity
    for column, value in expected.items():
        assert same(entity.get(column), value), column
    customer = str(items[0].get("customerId") or "-").lower()
    assert entity["PartitionKey"] == f"p1|D1|g1|{customer}" and entity["RowKey"] == f"{source.name}-000000000"
    assert rows[1].entity["RowKey"] == f"{source.name}-000000001" if len(rows) > 1 else True
    assert json.loads(entity["raw"]) == items[0] and entity["raw_truncated"] is False
    assert recon_total(rows[0]) == (to_decimal(expected["total"]) if "total" in expected else recon_total(rows[0]))


def test_pascal_case_and_string_numbers_and_unknown_enums():
    item = {"CustomerId": "c1", "CustomerName": "Contoso", "SubscriptionId": "s1", "ProductId": "P1", "SkuId": "0001",
            "ProductName": "Thing", "ChargeType": "SomethingNew", "Quantity": "3", "UnitPrice": "1,000.10",
            "Subtotal": "3000.30", "TaxTotal": " 300.03 ", "TotalForCustomer": "3300.33", "Currency": "EUR",
            "ChargeStartDate": "2026-10-01T00:00:00Z", "ChargeEndDate": "2026-10-31T23:59:59Z"}
    row = row_for(item)
    entity = row.entity
    assert (entity["customerId"], entity["customerName"], entity["productId"], entity["skuId"]) == ("c1", "Contoso", "P1", "0001")
    assert entity["chargeType"] == "somethingnew" and entity["chargeTypeOriginal"] == "SomethingNew"
    assert (entity["quantity"], entity["unitPrice"], entity["subtotal"], entity["tax"], entity["total"]) == \
        ("3", "1000.1", "3000.3", "300.03", "3300.33")
    assert recon_total(row) == Decimal("3300.33") and entity["currency"] == "EUR"


def test_junk_values_do_not_break_a_row():
    row = row_for({"quantity": "n/a", "totalForCustomer": None, "unitPrice": True, "subtotal": "NaN",
                   "chargeType": "", "customerId": ""})
    assert {"quantity", "total", "unitPrice", "subtotal", "chargeType", "customerId"}.isdisjoint(row.entity)
    assert recon_total(row) == 0


def test_huge_raw_is_dropped_but_columns_kept():
    row = row_for({"customerId": "c1", "tags": "x" * 40_000, "totalForCustomer": 1})
    assert "raw" not in row.entity and row.entity["raw_truncated"] is True and row.entity["customerId"] == "c1"


# ---------------------------------------------------------------------------------------------
# Reconciliation math
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance, lines, invoice, status, allowed", [
    ("0", "100.00", "100.00", ReconciliationStatus.RECONCILED, "0"),
    ("0", "100.01", "100.00", ReconciliationStatus.MISMATCH, "0"),
    ("5", "104.99", "100.00", ReconciliationStatus.RECONCILED, "5"),
    ("5", "94.99", "100.00", ReconciliationStatus.MISMATCH, "5"),
    ("2.50", "102.50", "100.00", ReconciliationStatus.RECONCILED, "2.5"),
    ("0.5%", "10050.00", "10000.00", ReconciliationStatus.RECONCILED, "50"),
    ("0.5%", "9949.99", "10000.00", ReconciliationStatus.MISMATCH, "50"),
    ("1%", "-101", "-100", ReconciliationStatus.RECONCILED, "1"),  # a credit note: the percentage is of |total|
])
def test_reconcile_absolute_and_percentage(tolerance, lines, invoice, status, allowed):
    summary = reconcile(invoice_total=Decimal(invoice), lines_total=Decimal(lines), line_count=3,
                        tolerance=Tolerance.parse(tolerance))
    assert summary.status == status
    assert summary.difference == Decimal(lines) - Decimal(invoice)
    fields = summary.to_fields()
    assert fields["recon_allowed_difference"] == allowed and fields["recon_line_count"] == 3
    assert fields["recon_tolerance"] == tolerance


def test_sums_are_exact_decimals():
    rows = [row_for({"totalForCustomer": 0.1}, index=i) for i in range(10)]
    assert sum((recon_total(r) for r in rows), Decimal(0)) == Decimal("1.0")


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------


def test_routing_by_kind_and_billing_period():
    listed = sample("invoices-list.json")["items"]
    legacy = next(i for i in listed if i["id"].startswith("D"))
    plan = plan_import(legacy)
    assert plan.api == "v1" and plan.legacy and {s.name for s in plan.sources} <= {"azure", "office"}
    new = {"id": "G000000001", "invoiceType": "OneTime", "billingPeriodStartDate": "2026-10-01T00:00:00Z"}
    assert (plan_import(new).api, plan_import(new).sources, plan_import(new).fallback) == ("v2", (V2_RECON,), ())
    overlap = {**new, "billingPeriodStartDate": "2024-11-01T00:00:00Z"}
    assert plan_import(overlap).api == "v2" and plan_import(overlap).fallback == (V1_ONETIME,)
    old = {**new, "billingPeriodStartDate": "2023-06-01T00:00:00"}
    assert (plan_import(old).api, plan_import(old).sources) == ("v1", (V1_ONETIME,))
    assert plan_import(new, source="v1").sources == (V1_ONETIME,)
    assert plan_import(legacy, source="v2").sources == (V2_RECON,)
    only_office = {"id": "D1", "invoiceDetails": [
        {"invoiceLineItemType": "billing_line_items", "billingProvider": "office"},
        {"invoiceLineItemType": "usage_line_items", "billingProvider": "azure"}]}
    assert plan_import(only_office).sources == (V1_OFFICE,)


def test_invoice_stream_rows_from_the_list_sample():
    for item in sample("invoices-list.json")["items"]:
        row = INVOICES.build_row(item, provider_id="p1")
        assert row["kind"] == item["id"][0] and row["RowKey"] == item["id"]
        assert to_decimal(row["totalCharges"]) == to_decimal(item["totalCharges"]) and isinstance(row["totalCharges"], str)
        assert row["currencyCode"] == item["currencyCode"]
        assert row["invoiceDate"] == item["invoiceDate"] and row["documentType"] == item["documentType"]
        assert "billingPeriodStart" not in row  # the list sample has no billing period
    g = sample("invoices-list.json")["items"][1]
    assert plan_import(g).sources == (V1_ONETIME,)  # dated 2018: before the v2 data starts


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"provider": "p1"}', b'{"provider": "P 1", "invoice": "G1"}',
                                  b'{"provider": "p1", "invoice": "G/1"}', b'{"provider": "p1", "invoice": "G1", '
                                                                            b'"correlationId": 5}'])
def test_bad_messages(body):
    with pytest.raises(InvalidMessage):
        parse_import_message(body)


def test_good_message():
    message = parse_import_message(b'{"provider": "p1", "invoice": "G000024130", "correlationId": "c"}')
    assert message.to_json() == {"provider": "p1", "invoice": "G000024130", "correlationId": "c"}


# ---------------------------------------------------------------------------------------------
# The writer: merge-join with the stored partition
# ---------------------------------------------------------------------------------------------


class OrderedTable(RepositoryTable):
    """Like Table Storage: a partition comes back in RowKey order."""

    def list_entities(self, *, partition_key=None, query=None, parameters=None, select=None):
        rows = sorted(super().list_entities(partition_key=partition_key, select=select), key=lambda r: r["RowKey"])
        yield from rows


class OrderedTables(RepositoryTables):
    def table(self, name):
        return self.tables.setdefault(name, OrderedTable(name))


def line_writer(table, partition="p1|G1"):
    return RowWriter(table, partition, StoredInKeyOrder(table, partition), stamp=NOW)


def keyed(item, source=V1_ONETIME, index=0):
    """An entity in key order with a content hash, as the merge-join writer expects."""
    return {"PartitionKey": "p1|G1", "RowKey": f"{source.name}-{index:09d}", **item,
            "content_hash": json.dumps(item, sort_keys=True)}


def write(table, items, source=V1_ONETIME):
    writer = line_writer(table, "p1|G1")
    writer.write(keyed(item, source, i) for i, item in enumerate(items))
    writer.remove_gone()
    return writer.counts


def test_writer_writes_changes_only_and_marks_lines_gone_upstream():
    table = OrderedTable("invoicelineitems")
    items = [{"customerId": f"c{i}", "totalForCustomer": i} for i in range(250)]
    first = write(table, items)
    assert (first.written, first.unchanged, first.removed) == (250, 0, 0)
    assert table.batches == [100, 100, 50]
    again = write(table, items)
    assert (again.written, again.unchanged, again.removed) == (0, 250, 0)
    changed = [dict(i) for i in items[:200]]
    changed[7]["totalForCustomer"] = 99
    third = write(table, changed)
    assert (third.written, third.unchanged, third.removed) == (1, 199, 50)
    rows = table.partition("p1|G1")
    assert rows["onetime-000000007"]["totalForCustomer"] == 99
    assert rows["onetime-000000249"]["removed"] is True and rows["onetime-000000249"]["customerId"] == "c249"
    back = write(table, items)  # lines that come back lose their tombstone
    assert (back.written, back.removed) == (51, 0)
    assert table.partition("p1|G1")["onetime-000000249"]["removed"] is False


def test_writer_switching_source_replaces_the_old_rows():
    table = OrderedTable("invoicelineitems")
    write(table, [{"a": i} for i in range(5)], source=V1_ONETIME)
    counts = write(table, [{"a": i} for i in range(5)], source=V2_RECON)
    assert (counts.written, counts.removed) == (5, 5)


def test_writer_refuses_out_of_order_input_and_detects_unsorted_storage():
    table = OrderedTable("t")
    with pytest.raises(ValueError):
        line_writer(table).write([keyed({"a": 1}, index=2), keyed({"a": 1}, index=1)])
    assert list(table.partition("p1|G1")) == ["onetime-000000002"]  # what was read before the error is written
    unsorted = FakeTable("u")  # the plain fake keeps insertion order
    for rk in ("b", "a"):
        unsorted.upsert_entity({"PartitionKey": "p1|G1", "RowKey": rk})
    with pytest.raises(StoredOrderError):
        line_writer(unsorted).write([keyed({"a": 1})])


# ---------------------------------------------------------------------------------------------
# The service with fakes: Partner Center (v1) and Graph (v2) behind one scripted router
# ---------------------------------------------------------------------------------------------

PROVIDER = ProviderConnection(id="p1", name="P1", country_code="US", currency_code="USD",
                              tenant_id="00000000-0000-0000-0000-000000000001", consent_status="active",
                              usage_mismatch_tolerance="0.01")


class Tokens(FakeTokenSource):
    def graph_token(self, *, force_refresh=False):
        return "graph-token"


class FakeBilling:
    """A tiny Partner Center + Graph: invoices list/get, v1 line items, billed recon export."""

    def __init__(self):
        self.invoices = {}
        self.lines = {}
        self.export_code = None  # e.g. "5000"
        self.usage = {}  # invoice id -> billed daily-rated usage rows
        self.usage_code = None  # the usage export's failure code, e.g. "5000"
        self.export_kind = "recon"
        self.sent = []

    def add(self, invoice_id, lines, *, period="2026-10-01T00:00:00Z", total=None):
        self.invoices[invoice_id] = {
            "id": invoice_id, "invoiceDate": "2026-11-01T08:00:00Z", "billingPeriodStartDate": period,
            "billingPeriodEndDate": period, "totalCharges": float(total if total is not None else
                                                                 sum(Decimal(str(l["totalForCustomer"])) for l in lines)),
            "currencyCode": "USD", "invoiceType": "Recurring" if invoice_id.startswith("D") else "OneTime",
            "documentType": "invoice"}
        self.lines[invoice_id] = lines

    def request(self, method, url, *, params=None, headers=None, data=None, json=None, **_):
        from urllib.parse import parse_qsl, urlsplit

        # the shared transport sends a body as JSON bytes (``data=``); read it as a server would
        payload = json_loads(data) if data is not None else json

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query)) | dict(params or [])
        path = parts.path
        self.sent.append((method, path, query))
        if path == "/v1/invoices":
            return response(200, {"items": list(self.invoices.values())})
        if path.startswith("/v1/invoices/") and path.endswith("/lineitems"):
            invoice_id = path.split("/")[3]
            if query.get("invoicelineitemtype") == "usagelineitems":
                lines = self.usage.get(invoice_id, [])
            else:
                lines = [l for l in self.lines[invoice_id] if l.get("billingProvider", "one_time").replace("_", "") ==
                         query["provider"].replace("_", "")]
            size, offset = int(query["size"]), int(query.get("offset") or headers.get("MS-ContinuationToken") or 0)
            page = {"items": lines[offset:offset + size]}
            if offset + size < len(lines):
                if query["provider"] == "onetime":
                    page["links"] = {"next": {"uri": f"/invoices/{invoice_id}/lineitems?provider=onetime&"
                                                     f"invoicelineitemtype=billinglineitems&size={size}&seekOperation=Next",
                                              "headers": [{"key": "MS-ContinuationToken", "value": str(offset + size)}]}}
                else:
                    page["links"] = {"next": {"uri": f"/invoices/{invoice_id}/lineitems?provider={query['provider']}&"
                                                     f"invoicelineitemtype=billinglineitems&size={size}&offset={offset + size}"}}
            return response(200, page)
        if path.startswith("/v1/invoices/"):
            invoice = self.invoices.get(path.split("/")[3])
            return response(200, invoice) if invoice else response(404, {"code": 1000, "description": "Not found"})
        if path.endswith("/billed/export"):
            self.export_invoice = payload["invoiceId"]
            self.export_kind = "usage" if "/usage/" in path else "recon"
            return response(202, headers={"Location": "https://graph.test/v1.0/reports/partners/billing/operations/1"})
        if path.endswith("/operations/1"):
            code = self.usage_code if self.export_kind == "usage" else self.export_code
            if code:
                return response(200, {"status": "failed", "error": {"code": code, "message": "No data"}})
            return response(200, {"status": "succeeded", "resourceLocation@odata.navigationLink":
                                  "https://graph.test/v1.0/reports/partners/billing/manifests/1"})
        if path.endswith("/manifests/1"):
            return response(200, {"rootDirectory": "https://blob.test/r", "sasToken": "sig=1",
                                  "blobs": [{"name": "part-0.json.gz"}]})
        if path == "/r/part-0.json.gz":
            rows = self.usage.get(self.export_invoice, []) if self.export_kind == "usage" else \
                self.lines[self.export_invoice]
            body = "\n".join(json_dumps({k[0].upper() + k[1:]: str(v) for k, v in l.items()})  # PascalCase, strings
                             for l in rows)
            r = response(200, raw=gzip.compress(body.encode()))
            r._content_consumed = True
            return r
        raise AssertionError(f"unexpected {method} {url}")

    def close(self):
        pass


def json_dumps(value):
    return json.dumps(value)


def json_loads(data):
    return json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)


def invoice_service(billing, tables=None, queues=None, provider=PROVIDER):
    tables = tables or RangeTables()
    sync = service(billing, tables, providers=(provider,), tokens=Tokens(), queues=queues or FakeQueues(),
                   graph_options={"session": billing, "sleep": NoSleep(), "retry": RetryPolicy(max_attempts=2)})
    return InvoiceService(sync, v1_page_size=7, now=lambda: NOW), tables


def invoice_lines(tables, invoice_id, table="invoicelineitems"):
    """The invoice's live rows by RowKey, over the per-customer partitions of its complete import."""
    from sync.invoices.store import live_rows

    row = tables.table("invoices").find_entity("p1", invoice_id) or {}
    return {r["RowKey"]: r for r in live_rows(tables.table(table), "p1", invoice_id, row.get("import_generation"))}


def onetime_lines(n, base=1):
    return [{"customerId": f"c{i}", "quantity": 1, "totalForCustomer": round(base + i / 100, 2),
             "billingProvider": "one_time"} for i in range(n)]


def test_v1_amounts_with_more_digits_than_a_float_stay_exact():
    # 0.1 + 0.2 style: 24 significant digits, a float keeps 17; the v1 bodies are read as Decimal
    long_total = Decimal("12.3456789012345678901234")
    billing = FakeBilling()
    billing.add("D1", [{"customerId": "c1", "totalForCustomer": long_total, "unitPrice": Decimal("0.1001896414475218662639"),
                        "billingProvider": "office"}], total=long_total)
    billing.invoices["D1"]["totalCharges"] = long_total
    svc, tables = invoice_service(billing)
    svc.sync_provider_invoices(PROVIDER, enqueue=False)
    d = svc.import_invoice(PROVIDER, "D1")
    assert d.summary.status is ReconciliationStatus.RECONCILED and d.summary.lines_total == long_total
    line = invoice_lines(tables, "D1")["office-000000000"]
    assert line["total"] == "12.3456789012345678901234" and line["unitPrice"] == "0.1001896414475218662639"
    assert '"totalForCustomer":12.3456789012345678901234' in line["raw"]
    invoice_row = tables.table("invoices").find_entity("p1", "D1")
    assert invoice_row["totalCharges"] == "12.3456789012345678901234" and '12.3456789012345678901234' in invoice_row["raw"]


def test_timer_enqueues_new_and_changed_invoices_only():
    billing, queues = FakeBilling(), FakeQueues()
    billing.add("G1", onetime_lines(3))
    billing.add("D1", [{"totalForCustomer": 5, "billingProvider": "office"}])
    svc, tables = invoice_service(billing, queues=queues)
    first = svc.sync_provider_invoices(PROVIDER)
    assert first.invoices_enqueued == 2
    assert sorted(m["invoice"] for m in queues.sent[IMPORT_INVOICE_QUEUE]) == ["D1", "G1"]
    assert svc.sync_provider_invoices(PROVIDER).invoices_enqueued == 0
    billing.invoices["G1"]["paidAmount"] = 12.0
    third = svc.sync_provider_invoices(PROVIDER)
    assert third.invoices_enqueued == 1 and queues.sent[IMPORT_INVOICE_QUEUE][-1]["invoice"] == "G1"
    assert svc.sync_provider_invoices(PROVIDER).invoices_enqueued == 0


def test_import_v2_and_v1_reconcile_and_reimport_writes_nothing():
    billing = FakeBilling()
    billing.add("G1", onetime_lines(20))
    billing.add("D1", [{"totalForCustomer": 5.5, "billingProvider": "office"},
                       {"totalForCustomer": 4.5, "billingProvider": "azure"},
                       *[{"totalForCustomer": 1, "billingProvider": "office"} for _ in range(9)]])
    svc, tables = invoice_service(billing)
    svc.sync_provider_invoices(PROVIDER, enqueue=False)
    g = svc.import_invoice(PROVIDER, "G1")
    assert (g.outcome, g.source, g.rows_written, g.summary.status, g.summary.line_count) == \
        ("succeeded", "v2", 20, ReconciliationStatus.RECONCILED, 20)
    d = svc.import_invoice(PROVIDER, "D1")
    assert (d.outcome, d.source, d.rows_written, d.summary.status) == ("succeeded", "v1", 11, ReconciliationStatus.RECONCILED)
    assert d.summary.lines_total == Decimal("19.0")
    lines = invoice_lines(tables, "D1")
    assert sorted(lines)[:2] == ["azure-000000000", "office-000000000"] and len(lines) == 11
    g_lines = invoice_lines(tables, "G1")
    assert g_lines["recon-000000003"]["customerId"] == "c3" and g_lines["recon-000000003"]["total"] == "1.03"
    assert g_lines["recon-000000003"]["PartitionKey"].startswith("p1|G1|")
    assert g_lines["recon-000000003"]["PartitionKey"].endswith("|c3")
    invoice_row = tables.table("invoices").find_entity("p1", "G1")
    assert invoice_row["recon_status"] == "reconciled" and invoice_row["import_hash"] == invoice_row["content_hash"]
    assert invoice_row["recon_line_count"] == 20 and invoice_row["recon_source"] == "v2"
    again = svc.import_invoice(PROVIDER, "G1")  # a re-import replaces: same rows, a new generation
    assert (again.rows_written, again.rows_removed, again.summary.status) == (20, 20, ReconciliationStatus.RECONCILED)
    assert len(invoice_lines(tables, "G1")) == 20
    runs = tables.table("syncruns").partition("p1")
    imports = [r for r in runs.values() if r["stream"] == "invoicelineitems"]
    assert len(imports) == 3 and {r["invoice_id"] for r in imports} == {"G1", "D1"}
    assert all(r["recon_status"] == "reconciled" for r in imports)


def test_mismatch_beyond_tolerance():
    billing = FakeBilling()
    billing.add("G1", onetime_lines(4), total=100)
    svc, tables = invoice_service(billing)
    result = svc.import_invoice(PROVIDER, "G1")
    assert result.summary.status == ReconciliationStatus.MISMATCH and result.summary.difference < 0


def test_unknown_invoice_is_rejected_and_recorded():
    svc, tables = invoice_service(FakeBilling())
    result = svc.import_invoice(PROVIDER, "G404")
    assert result.outcome == RunOutcome.INVOICE_NOT_FOUND and not result.retryable
    run = next(iter(tables.table("syncruns").partition("p1").values()))
    assert run["outcome"] == RunOutcome.INVOICE_NOT_FOUND and "404" in run["error"]


def test_no_v2_data_recent_period_is_unavailable_and_retried_by_the_next_timer():
    billing, queues = FakeBilling(), FakeQueues()
    billing.add("G1", onetime_lines(3))
    billing.export_code = "5000"
    svc, tables = invoice_service(billing, queues=queues)
    assert svc.sync_provider_invoices(PROVIDER).invoices_enqueued == 1
    result = svc.import_invoice(PROVIDER, "G1")
    assert result.outcome == RunOutcome.UNAVAILABLE and not result.retryable and result.rows_written == 0
    row = tables.table("invoices").find_entity("p1", "G1")
    assert row["recon_status"] == "pending" and row["import_hash"] == ""
    assert svc.sync_provider_invoices(PROVIDER).invoices_enqueued == 1  # asked again next run


def test_no_v2_data_in_the_overlap_window_falls_back_to_v1_onetime():
    billing = FakeBilling()
    billing.add("G1", onetime_lines(15), period="2024-12-01T00:00:00Z")
    billing.export_code = "5000"
    svc, tables = invoice_service(billing)
    result = svc.import_invoice(PROVIDER, "G1")
    assert (result.outcome, result.source, result.rows_written, result.summary.status) == \
        ("succeeded", "v1-fallback", 15, ReconciliationStatus.RECONCILED)
    seek_pages = [q for m, p, q in billing.sent if p.endswith("/lineitems")]
    assert len(seek_pages) == 3 and seek_pages[1]["seekOperation"] == "Next"


def test_lost_consent_degrades_the_import():
    # the invoice by id is App+User only: the import is not made, says why, and is enqueued again
    billing = FakeBilling()
    billing.add("G1", onetime_lines(1))
    svc, tables = invoice_service(billing)
    assert svc.sync_provider_invoices(PROVIDER).invoices_enqueued == 1
    healthy = svc.sync.clients._token_sources
    svc.sync.clients._token_sources = lambda p: FakeTokenSource(consent_error=True)
    svc.sync.clients.forget("p1")
    result = svc.import_invoice(PROVIDER, "G1")
    assert result.outcome == "degraded" and not result.retryable
    assert result.cause == "consent_refused" and "Fix:" in result.error
    row = tables.table("invoices").find_entity("p1", "G1")
    assert (row["recon_status"], row["import_state"], row["import_hash"]) == ("degraded", "error", "")
    svc.sync.clients._token_sources = healthy
    svc.sync.clients.forget("p1")
    assert svc.sync_provider_invoices(PROVIDER).invoices_enqueued == 1  # asked again next run


def test_transient_failure_is_raised_for_the_queue():
    billing = FakeBilling()
    billing.add("G1", onetime_lines(1))
    svc, tables = invoice_service(billing)
    original = billing.request

    def flaky(method, url, **kwargs):
        if "/operations/" in url:
            return response(503)
        return original(method, url, **kwargs)

    billing.request = flaky
    from sync.invoices.service import ImportMessage

    with pytest.raises(Exception) as info:
        svc.handle_import_message(ImportMessage("p1", "G1", "c"))
    assert getattr(info.value, "retryable", False)


def test_message_for_unknown_or_disabled_provider_is_dropped():
    from sync.invoices.service import ImportMessage

    svc, tables = invoice_service(FakeBilling())
    assert svc.handle_import_message(ImportMessage("nobody", "G1", "c")) is None
    assert tables.table("syncruns").partition("nobody") == {}
