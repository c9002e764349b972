"""Issue 10 with fakes: the usage checksum and its explained causes, import states, reference
checks and CSV reports, acceptance, late usage files, exact money, pricing and unit costs."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from decimal import Decimal

import pytest

from shared.blobs import MemoryBlobs
from shared.errors import Conflict, ValidationFailed
from shared.providers import CostManagement, ProviderConnection, parse_provider_fields
from sync.invoices.accept import InvoiceActions
from sync.invoices.checksum import ChecksumStatus, UsageChecksum
from sync.invoices.lines import RECON_COLUMNS, USAGE_COLUMNS, build_row
from sync.invoices.money import dumps_exact, loads_exact, usage_subtotal
from sync.invoices.pricing import Pricing, billing_period
from sync.invoices.service import InvoiceService
from sync.runs import RunOutcome
from tests.unit.sync.test_invoices_reconciliation import NOW, PROVIDER, FakeBilling, invoice_lines, invoice_service

from datetime import date

C1, C2, C9 = "00000000-0000-0000-0000-0000000000c1", "00000000-0000-0000-0000-0000000000c2", \
    "00000000-0000-0000-0000-0000000000c9"


def seed_store(tables, *subscriptions):
    """Customers and subscriptions as the subscription sync stores them."""
    for customer, subscription in subscriptions:
        tables.table("customers").upsert_entity({"PartitionKey": "p1", "RowKey": customer, "id": customer})
        tables.table("subscriptions").upsert_entity({"PartitionKey": f"p1|{customer}", "RowKey": subscription,
                                                     "id": subscription})


def recon(customer, subscription, subtotal, *, price="1", quantity=None, rate="1", meter="m1", **extra):
    return {"customerId": customer, "subscriptionId": subscription, "productId": "DZH318Z0BQ3P", "skuId": meter,
            "chargeType": "usage", "subtotal": subtotal, "taxTotal": "0", "total": subtotal,
            "effectiveUnitPrice": price, "billableQuantity": quantity or subtotal, "pCToBCExchangeRate": rate,
            "invoiceNumber": "G1", **extra}


def usage(customer, subscription, amount, *, meter="m1", price="1", quantity=None, rate="1", **extra):
    return {"customerId": customer, "subscriptionId": subscription, "meterId": meter, "productId": "DZH318Z0BQ3P",
            "skuId": meter, "billingPreTaxTotal": amount,
            "effectiveUnitPrice": price, "quantity": quantity or amount, "unitPrice": price, "pCToBCExchangeRate": rate,
            "invoiceNumber": "G1", **extra}


def importer(lines, usage_rows, *, tolerance="0", provider=PROVIDER, **billing_options):
    billing = FakeBilling()
    billing.add("G1", lines, total=sum(Decimal(str(l["total"])) for l in lines))
    billing.usage["G1"] = usage_rows
    for key, value in billing_options.items():
        setattr(billing, key, value)
    provider = replace(provider, usage_mismatch_tolerance=tolerance)
    svc, tables = invoice_service(billing, provider=provider)
    blobs = MemoryBlobs()
    svc = InvoiceService(svc.sync, blobs=blobs, v1_page_size=7, now=lambda: NOW)
    seed_store(tables, (C1, "s1"), (C1, "s2"), (C2, "s3"))
    svc.sync_provider_invoices(provider, enqueue=False)
    return svc, tables, blobs, billing, provider


def report(blobs, kind):
    return list(csv.DictReader(io.StringIO(blobs.get("invoice-reports", f"p1/G1/{kind}.csv").decode())))


def invoice_row(tables):
    return tables.table("invoices").find_entity("p1", "G1")


# -- money -------------------------------------------------------------------------------------


def test_unit_prices_keep_every_digit_in_columns_and_raw():
    price = "0.1835431430074643112595"
    text = '{"EffectiveUnitPrice": %s, "Total": 12.5, "Quantity": "3"}' % price
    line = build_row(loads_exact(text), RECON_COLUMNS, provider_id="p1", invoice_id="G1", source="recon", index=0,
                     generation="g")
    assert line.entity["effectiveUnitPrice"] == price and line.entity["total"] == "12.5"
    assert price in line.entity["raw"] and dumps_exact(loads_exact(text)) == line.entity["raw"]


def test_microsoft_rounddown_formulas():
    assert usage_subtotal(Decimal("0.1835431430074643112595"), Decimal("10.5"), Decimal("0.92")) == Decimal("1.76")
    assert usage_subtotal(Decimal("-1.005"), Decimal("1"), Decimal("1")) == Decimal("-1.00")  # towards zero


# -- checksum ----------------------------------------------------------------------------------


def test_checksum_passes_and_the_import_is_active_with_usage_rows():
    svc, tables, blobs, _, provider = importer([recon(C1, "s1", "10.00"), recon(C2, "s3", "5.00")],
                                               [usage(C1, "s1", "6.00"), usage(C1, "s1", "4.00"), usage(C2, "s3", "5")])
    result = svc.import_invoice(provider, "G1")
    assert result.outcome == RunOutcome.SUCCEEDED and result.state == "active"
    assert result.figures.checksum.status is ChecksumStatus.PASSED and result.figures.usage_count == 3
    row = invoice_row(tables)
    assert (row["import_state"], row["checksum_status"], row["checksum_difference"]) == ("active", "passed", "0")
    usage_rows = invoice_lines(tables, "G1", table="invoiceusage")
    assert len(usage_rows) == 3 and {r["PartitionKey"].split("|")[-1] for r in usage_rows.values()} == {C1, C2}
    assert report(blobs, "mismatches") == [] and report(blobs, "errors") == []


@pytest.mark.parametrize("tolerance, status, state", [
    ("0", "mismatch", "error"), ("2", "within_tolerance", "active"), ("1.5", "within_tolerance", "active"),
    ("10%", "within_tolerance", "active"), ("1%", "mismatch", "error"),
])
def test_tolerance_as_amount_or_percentage(tolerance, status, state):
    svc, tables, blobs, _, provider = importer([recon(C1, "s1", "100.00", price="100", quantity="1")],
                                               [usage(C1, "s1", "98.50", price="98.5", quantity="1")],
                                               tolerance=tolerance)
    result = svc.import_invoice(provider, "G1")
    assert (result.figures.checksum.status.value, result.state) == (status, state)
    if state == "error":
        row = invoice_row(tables)
        assert row["import_reason"] == "usage_mismatch" and "mismatches.csv" in row["import_message"]
        rows = report(blobs, "mismatches")
        assert rows[0]["subscription"] == "s1" and rows[0]["difference"] == "1.5" and rows[0]["customer"] == C1


def test_mismatch_csv_sorted_by_absolute_difference_with_meters():
    lines = [recon(C1, "s1", "10"), recon(C1, "s2", "20"), recon(C2, "s3", "5", meter="m2")]
    svc, _, blobs, _, provider = importer(lines, [usage(C1, "s1", "9"), usage(C1, "s2", "25"), usage(C2, "s3", "5",
                                                                                                   meter="m2")])
    svc.import_invoice(provider, "G1")
    rows = report(blobs, "mismatches")
    assert [(r["subscription"], r["meter"], r["difference"]) for r in rows] == [
        ("s2", "", "-5"), ("s2", "dzh318z0bq3p|m1", "-5"), ("s1", "", "1"), ("s1", "dzh318z0bq3p|m1", "1")]


def test_rounding_is_recognised_to_the_cent_and_not_held_against_the_tolerance():
    # 3 x 0.3333333 = 0.9999999: Microsoft's ROUNDDOWN makes it 0.99; the usage file sums 0.9999999
    lines = [recon(C1, "s1", "0.99", price="0.3333333", quantity="3")]
    rows = [usage(C1, "s1", "0.3333333", price="0.3333333", quantity="1") for _ in range(3)]
    svc, tables, _, _, provider = importer(lines, rows)
    result = svc.import_invoice(provider, "G1")
    checksum = result.figures.checksum
    assert checksum.status is ChecksumStatus.PASSED and result.state == "active"
    assert checksum.overall.causes == {"rounding": Decimal("-0.0099999")}
    assert checksum.overall.counted == 0
    assert invoice_row(tables)["checksum_explained_by"] == "rounding -0.0099999"


def test_22_digit_prices_at_a_foreign_rate_differing_only_by_rounding_pass_exactly():
    # the simulator's shape: a 22-digit unit price x 6-decimal quantities x a 9-decimal rate; in
    # Decimal's default 28 digits the residues would be about 1e-27 and read as unexplained
    price, rate = Decimal("0.1001896414475218662639"), Decimal("0.846202666")
    quantities = [Decimal("7.123457"), Decimal("3.000001"), Decimal("11.987654")]
    total = sum(quantities, Decimal(0))
    lines = [recon(C1, "s1", str(usage_subtotal(price, total, rate)), price=str(price), quantity=str(total),
                   rate=str(rate))]
    rows = [usage(C1, "s1", str((price * q * rate).quantize(Decimal(1).scaleb(-22))), price=str(price),
                  quantity=str(q), rate=str(rate)) for q in quantities]
    checksum = importer(lines, rows)[0].import_invoice(PROVIDER, "G1").figures.checksum
    assert checksum.status is ChecksumStatus.PASSED and checksum.overall.difference != 0
    assert checksum.overall.counted == 0 and checksum.overall.causes["rounding"] == checksum.overall.difference


def test_an_unexplained_cent_within_the_tolerance_is_within_tolerance():
    lines = [recon(C1, "s1", "10.01", price="10", quantity="1")]
    svc, _, _, _, provider = importer(lines, [usage(C1, "s1", "10", price="10", quantity="1")], tolerance="0.05")
    checksum = svc.import_invoice(provider, "G1").figures.checksum
    assert checksum.status is ChecksumStatus.WITHIN_TOLERANCE and checksum.overall.counted == Decimal("0.01")


def test_one_file_lines_credits_and_taxes_are_explained():
    lines = [recon(C1, "s1", "10"), recon(C1, "s1", "300", productName="Reserved VM Instance", chargeType="purchase"),
             recon(C1, "s1", "-2", creditReasonCode="Azure Consumption Credit"),
             {**recon(C1, "s1", "0"), "subtotal": None, "total": "1.10", "taxTotal": "0.10"}]
    svc, tables, blobs, _, provider = importer(lines, [usage(C1, "s1", "10")])
    result = svc.import_invoice(provider, "G1")
    causes = result.figures.checksum.overall.causes
    assert causes == {"one_file": Decimal("300"), "credits": Decimal("-2"), "taxes": Decimal("0.10")}
    cause = report(blobs, "mismatches")[0]["cause"]
    assert cause == "one_file 300; credits -2; taxes 0.1"


@pytest.mark.parametrize("marks", [{"productCategory": "SaaS"}, {"publisherName": "Contoso ISV Ltd"}])
def test_marketplace_lines_are_one_file(marks):
    lines = [recon(C1, "s1", "10"), recon(C1, "s1", "25", meter="0002", productName="Contoso Backup", **marks),
             recon(C1, "s1", "0", meter="m3", publisherName="Microsoft Corporation")]
    svc, _, _, _, provider = importer(lines, [usage(C1, "s1", "10")])
    assert svc.import_invoice(provider, "G1").figures.checksum.overall.causes == {"one_file": Decimal("25")}


def test_usage_without_a_reconciliation_line_is_one_file():
    svc, _, _, _, provider = importer([recon(C1, "s1", "10")], [usage(C1, "s1", "10"), usage(C1, "s1", "4", meter="m9")])
    checksum = svc.import_invoice(provider, "G1").figures.checksum
    assert checksum.overall.difference == Decimal("-4") and checksum.overall.causes == {"one_file": Decimal("-4")}


def test_currency_conversion_is_explained():
    lines = [recon(C1, "s1", "92.00", price="100", quantity="1", rate="0.92")]
    svc, _, _, _, provider = importer(lines, [usage(C1, "s1", "90.00", price="100", quantity="1", rate="0.90")])
    checksum = svc.import_invoice(provider, "G1").figures.checksum
    assert checksum.overall.difference == Decimal("2.00") and checksum.overall.causes["currency"] == Decimal("2.00")


def test_checksum_streams_per_subscription_not_per_line():
    check = UsageChecksum()
    for i in range(1000):
        check.add_usage(build_row(usage(C1, "s1", "0.01"), USAGE_COLUMNS, provider_id="p", invoice_id="G",
                                  source="usage", index=i, generation="g"))
    assert len(check.subscriptions) == 1 and check.subscriptions["s1"].usage == Decimal("10.00")


# -- acceptance and retries --------------------------------------------------------------------


def mismatched():
    return importer([recon(C1, "s1", "100.00")], [usage(C1, "s1", "97.00")])


def test_accept_with_override_tolerance_is_logged_and_stops_retries():
    svc, tables, blobs, billing, provider = mismatched()
    assert svc.import_invoice(provider, "G1").state == "error"
    assert svc.sync_provider_invoices(provider, enqueue=False).invoice_ids == ["G1"]  # retried while in error
    actions = InvoiceActions(tables, blobs, now=lambda: NOW)
    with pytest.raises(Conflict):
        actions.accept("p1", "G1", {"tolerance": "2", "reason": "late credit"}, who="ops")
    with pytest.raises(ValidationFailed):
        actions.accept("p1", "G1", {"tolerance": "lots"}, who="ops")
    record = actions.accept("p1", "G1", {"tolerance": "3%", "reason": "credit note follows"}, who="ops")
    assert (record["state"], record["acceptedBy"], record["tolerance"]) == ("active", "ops", "3%")
    assert actions.accept("p1", "G1", {"tolerance": "3%", "reason": "credit note follows"}, who="x") == record
    log = list(tables.table("invoiceacceptances").list_entities())
    assert len(log) == 1 and log[0]["checksum_difference"] == "3" and log[0]["accepted_reason"] == "credit note follows"
    assert svc.sync_provider_invoices(provider, enqueue=False).invoice_ids == []


def test_usage_file_arriving_a_day_late():
    svc, tables, _, billing, provider = importer([recon(C1, "s1", "10")], [usage(C1, "s1", "10")], usage_code="5000")
    first = svc.import_invoice(provider, "G1")
    assert (first.state, first.figures.reason) == ("error", "usage_pending")
    assert svc.sync_provider_invoices(provider, enqueue=False).invoice_ids == ["G1"]
    billing.usage_code = None  # the next day
    second = svc.import_invoice(provider, "G1")
    assert second.state == "active" and second.figures.checksum.status is ChecksumStatus.PASSED
    assert svc.sync_provider_invoices(provider, enqueue=False).invoice_ids == []


def test_reports_are_served_and_unknown_kinds_refused():
    svc, tables, blobs, _, provider = mismatched()
    svc.import_invoice(provider, "G1")
    actions = InvoiceActions(tables, blobs)
    assert actions.report("p1", "G1", "mismatches").startswith(b"subscription,customer,meter")
    with pytest.raises(ValidationFailed):
        actions.report("p1", "G1", "secrets")


# -- references --------------------------------------------------------------------------------


def test_unknown_references_block_after_one_resync_and_anomalies_warn():
    lines = [recon(C1, "s1", "10"), recon(C9, "s9", "1"), recon(C1, "s404", "1"),
             recon(C2, "s3", "0", quantity="0", invoiceNumber="G2", chargeStartDate="2020-01-01T00:00:00Z")]
    svc, tables, blobs, billing, provider = importer(lines, [usage(C1, "s1", "10"), usage(C2, "s3", "0", meter="")])
    resynced = []
    svc.sync.sync_customer = lambda provider, customer, **kw: resynced.append(customer) or []
    result = svc.import_invoice(provider, "G1")
    assert (result.state, result.figures.reason) == ("error", "unknown_reference")
    errors = report(blobs, "errors")
    assert [(e["customer"], e["subscription"], e["problem"]) for e in errors] == [
        (C9, "s9", "unknown customer"), (C1, "s404", "unknown subscription")]
    assert sorted(resynced) == [C1, C9]  # once per customer
    problems = {w["problem"] for w in report(blobs, "warnings")}
    assert {"zero quantity", "unknown meter", "charge dates outside the billing period",
            "line of another invoice (G2)"} <= problems


def legacy_billing(subscription, meter, quantity, charges, *, source="azure"):
    item = {"customerId": C1, "subscriptionId": subscription, "resourceGuid": meter, "consumedQuantity": quantity,
            "includedQuantity": 0, "overageQuantity": quantity, "pretaxCharges": charges,
            "chargeType": "Assess usage fee for current cycle", "billingProvider": source}
    return build_row(item, RECON_COLUMNS, provider_id="p1", invoice_id="D1", source=source, index=0, generation="g")


def legacy_usage(subscription, meter, quantity):
    item = {"customerId": C1, "subscriptionId": subscription, "resourceGuid": meter, "consumedQuantity": quantity,
            "usageDate": "2026-10-03T00:00:00Z", "billingProvider": "azure"}
    return build_row(item, USAGE_COLUMNS, provider_id="p1", invoice_id="D1", source="azureusage", index=0,
                     generation="g")


def legacy_result(billing, usage_rows, tolerance="0"):
    from shared.providers import Tolerance
    from sync.invoices.legacy_checksum import LegacyUsageChecksum

    checksum = LegacyUsageChecksum()
    for line in billing:
        checksum.add_recon(line)
    for line in usage_rows:
        checksum.add_usage(line)
    return checksum.result(Tolerance.parse(tolerance))


def test_legacy_checksum_passes_when_the_daily_quantities_add_up_to_each_billing_line():
    billing = [legacy_billing("s1", "m1", "3", "7.77"), legacy_billing("s1", "m2", "10", "1.00"),
               legacy_billing("", "", "5", "99.00", source="office")]  # license lines are not compared
    days = [legacy_usage("s1", "m1", "1.25"), legacy_usage("s1", "m1", "1.75"), legacy_usage("s1", "M2", "10")]
    result = legacy_result(billing, days)
    assert result.status is ChecksumStatus.PASSED
    assert (result.overall.recon, result.overall.usage) == (Decimal("8.77"), Decimal("8.77"))


def test_legacy_checksum_prices_a_quantity_difference_at_the_billing_lines_rate():
    billing = [legacy_billing("s1", "m1", "4", "10.00"), legacy_billing("s2", "m9", "2", "3.00")]
    days = [legacy_usage("s1", "m1", "3"), legacy_usage("s2", "m9", "2")]  # one unit of m1 has no daily usage
    mismatch = legacy_result(billing, days)
    assert mismatch.status is ChecksumStatus.MISMATCH and mismatch.overall.difference == Decimal("2.5")
    worst = mismatch.rows[0]
    assert (worst.subscription, worst.recon, worst.usage, worst.difference) == ("s1", Decimal("10.00"),
                                                                                Decimal("7.5"), Decimal("2.5"))
    assert legacy_result(billing, days, tolerance="2.5").status is ChecksumStatus.WITHIN_TOLERANCE
    assert legacy_result(billing, days, tolerance="20%").status is ChecksumStatus.MISMATCH  # 25 % on s1


# -- never half-lands --------------------------------------------------------------------------


def kill_at_the_usage_export(billing):
    """The import dies when it asks for the usage export (after its lines are written); returns
    the fake's own request function, to put back."""
    original = billing.request

    def broken(method, url, **kwargs):
        if "usage/billed/export" in url:
            raise RuntimeError("killed")
        return original(method, url, **kwargs)

    billing.request = broken
    return original


def test_reimport_replaces_and_a_crash_leaves_the_previous_import_live():
    svc, tables, _, billing, provider = importer([recon(C1, "s1", "1"), recon(C1, "s1", "2")], [usage(C1, "s1", "3")])
    svc.import_invoice(provider, "G1")
    first_generation = invoice_row(tables)["import_generation"]
    billing.lines["G1"] = [recon(C1, "s1", "3")]
    original = kill_at_the_usage_export(billing)
    with pytest.raises(RuntimeError):
        svc.import_invoice(provider, "G1")
    row = invoice_row(tables)
    assert row["import_generation"] == first_generation and len(invoice_lines(tables, "G1")) == 2
    billing.request = original
    assert svc.import_invoice(provider, "G1").state == "active"
    assert len(invoice_lines(tables, "G1")) == 1
    assert len(list(tables.table("invoicelineitems").list_entities())) == 1  # leftovers swept


def test_a_first_import_reads_nothing_back_and_a_crashed_first_import_is_swept_by_the_next():
    svc, tables, _, billing, provider = importer([recon(C1, "s1", "1"), recon(C2, "s3", "2")],
                                                 [usage(C1, "s1", "1"), usage(C2, "s3", "2")])
    reads = []
    for name in ("invoicelineitems", "invoiceusage"):
        table, listing = tables.table(name), tables.table(name).list_entities

        def counted(*args, _listing=listing, _name=name, **kwargs):
            rows = list(_listing(*args, **kwargs))
            reads.append((_name, len(rows)))
            return iter(rows)
        table.list_entities = counted
    original = kill_at_the_usage_export(billing)
    with pytest.raises(RuntimeError):
        svc.import_invoice(provider, "G1")  # the first import dies after writing its lines
    assert reads and all(count == 0 for _, count in reads)  # it only asked whether rows existed
    left = len(list(tables.table("invoicelineitems").list_entities()))
    assert left == 2 and invoice_lines(tables, "G1") == {}
    billing.request = original
    reads.clear()
    assert svc.import_invoice(provider, "G1").state == "active"
    assert len(invoice_lines(tables, "G1")) == 2
    assert len(list(tables.table("invoicelineitems").list_entities())) == 2  # the crashed import's rows are gone
    assert ("invoicelineitems", 2) in reads  # its sweep read the leftovers (not the new rows)


# -- pricing, unit costs, billing periods, provider fields -------------------------------------


@pytest.mark.parametrize("mode, basis", [("none", "80"), ("pass-through", "80"), ("retain", "100")])
def test_specialization_modes(mode, basis):
    line = build_row(usage(C1, "s1", "80", price="1", quantity="100", unitPrice="1", effectiveUnitPrice="0.8",
                           benefitType="Specialization discount"), USAGE_COLUMNS, provider_id="p", invoice_id="G",
                     source="usage", index=0, generation="g")
    Pricing(mode).apply(line)
    assert (line.entity["partnerCost"], line.entity["customerPriceBasis"]) == ("80", basis)


def test_cost_management_from_the_invoice_skips_add_quantity_and_credits():
    provider = replace(PROVIDER, cost_management=CostManagement.INVOICE)
    lines = [recon(C1, "s1", "10", price="1.2345678901234567890123", pricingCurrency="EUR"),
             recon(C1, "s1", "5", price="0.5", chargeType="addQuantity"),
             recon(C1, "s2", "-1", price="9", chargeType="customerCredit")]
    svc, tables, _, _, provider = importer(lines, [usage(C1, "s1", "15")], provider=provider, tolerance="100%")
    assert svc.import_invoice(provider, "G1").state == "active"
    s1 = tables.table("subscriptions").find_entity(f"p1|{C1}", "s1")
    assert (s1["unitCost"], s1["costCurrency"], s1["unitCostInvoice"]) == ("1.2345678901234567890123", "EUR", "G1")
    assert "unitCost" not in tables.table("subscriptions").find_entity(f"p1|{C1}", "s2")


@pytest.mark.parametrize("day, start_day, period", [
    (date(2026, 3, 10), 5, (date(2026, 3, 5), date(2026, 4, 4))),
    (date(2026, 3, 2), 5, (date(2026, 2, 5), date(2026, 3, 4))),
    (date(2026, 2, 28), 31, (date(2026, 2, 28), date(2026, 3, 30))),
    (date(2026, 1, 1), 1, (date(2026, 1, 1), date(2026, 1, 31))),
])
def test_billing_start_day_periods(day, start_day, period):
    assert billing_period(day, start_day) == period


def test_provider_fields_three_values_and_migration():
    base = {"name": "P", "countryCode": "US", "currencyCode": "USD", "tenantId": "00000000-0000-0000-0000-000000000001"}
    values = parse_provider_fields({**base, "costManagement": "from the provider invoice", "azureSpecialization": "retain"})
    assert values["cost_management"] is CostManagement.INVOICE and values["azure_specialization"] == "retain"
    assert parse_provider_fields({**base, "costManagement": True})["cost_management"] is CostManagement.INVOICE
    with pytest.raises(ValidationFailed) as refused:
        parse_provider_fields({**base, "costManagement": "from the product price list"})
    assert "not supported yet" in refused.value.problems["costManagement"]
    stored = ProviderConnection.from_entity({**PROVIDER.to_entity(), "cost_management": True})
    assert stored.cost_management is CostManagement.INVOICE
    assert json.loads(json.dumps(stored.to_json()))["costManagement"] == "from the provider invoice"


def test_sync_invoices_reports_pending_and_exits_zero():
    from rich.console import Console

    from sync.invoices.cli import report_imports
    from sync.invoices.model import ImportResult

    billing = FakeBilling()
    billing.add("G1", [recon(C1, "s1", "1")], total=1)
    billing.export_code = "5000"
    svc, _ = invoice_service(billing)
    outcome = svc.sync_provider_invoices(PROVIDER, enqueue=False)
    pending = svc.import_invoice(PROVIDER, "G1")
    assert pending.outcome == RunOutcome.UNAVAILABLE
    out = io.StringIO()
    assert report_imports(Console(file=out, width=200), outcome.runs, [pending]) == 0
    assert "G1: pending (no reconciliation data yet" in out.getvalue()
    failed = ImportResult("p1", "invoicelineitems", None, "c", invoice_id="G2")
    failed.end(RunOutcome.FAILED, error="boom")
    assert report_imports(Console(file=io.StringIO(), width=200), outcome.runs, [pending, failed]) == 1
