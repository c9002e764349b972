"""The new-commerce billing files: documented v2 columns, Microsoft's rounding, the usage file
agreeing with the reconciliation file, the storage host, and the knobs that plant differences."""
from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from decimal import ROUND_DOWN, Decimal

import pytest

from simulator.testing import ControlError, start_simulator

from conftest import PartnerCenterClient, app_only_token

EXPORT = "/v1.0/reports/partners/billing"
CENT = Decimal("0.01")
RECON_COLUMNS = [
    "PartnerId", "CustomerId", "CustomerName", "CustomerDomainName", "CustomerCountry", "InvoiceNumber", "MpnId",
    "ResellerMpnId", "OrderId", "OrderDate", "ProductId", "SkuId", "AvailabilityId", "SkuName", "ProductName",
    "ChargeType", "UnitPrice", "Quantity", "Subtotal", "TaxTotal", "Total", "Currency",
    "PriceAdjustmentDescription", "PublisherName", "PublisherId", "SubscriptionDescription", "SubscriptionId",
    "ChargeStartDate", "ChargeEndDate", "TermAndBillingCycle", "EffectiveUnitPrice", "UnitType", "AlternateId",
    "BillableQuantity", "BillingFrequency", "PricingCurrency", "PCToBCExchangeRate", "PCToBCExchangeRateDate",
    "MeterDescription", "ReservationOrderId", "CreditReasonCode", "SubscriptionStartDate", "SubscriptionEndDate",
    "ReferenceId", "ProductQualifiers", "PromotionId", "ProductCategory"]


def rounddown(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_DOWN)


@pytest.fixture(scope="module")
def bsim():
    with start_simulator(customers=6, invoices=3, line_items_per_invoice=400, export_running_polls=0,
                         export_retry_after_seconds=0, export_items_per_blob=150) as sim:
        yield sim


def graph(sim):
    http = sim.session()
    http.headers["Authorization"] = "Bearer " + app_only_token(sim, "https://graph.microsoft.com")
    return http


def export(sim, suffix: str, body: dict) -> tuple[dict, list[str]]:
    """(final operation, raw JSON lines of every blob)."""
    http = graph(sim)
    location = http.post(f"{sim.graph_url}{EXPORT}/{suffix}/export", json=body).headers["Location"]
    while (op := http.get(location).json())["status"] == "running":
        time.sleep(0.05)
    if op["status"] != "succeeded":
        return op, []
    manifest = http.get(op["resourceLocation@odata.navigationLink"]).json()
    lines = []
    for blob in manifest["blobs"]:
        content = http.get(f"{manifest['rootDirectory']}/{blob['name']}?{manifest['sasToken']}").content
        lines += gzip.decompress(content).decode().splitlines()
    return {**op, "manifest": manifest}, lines


def rows(lines: list[str]) -> list[dict]:
    return [json.loads(line, parse_float=Decimal) for line in lines]


def new_invoice(sim, **kwargs) -> dict:
    return sim.control.add_invoice(kind="G", line_items=kwargs.pop("line_items", 60), **kwargs)


def test_recon_rows_use_documented_columns_and_microsofts_rounding(bsim):
    invoice = next(i for i in bsim.control.invoices() if i["id"].startswith("G"))
    _, lines = export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})
    recon = rows(lines)
    assert len(recon) == 400 and all(list(r) == RECON_COLUMNS for r in recon)
    assert sum(r["Total"] for r in recon) == Decimal(repr(invoice["totalCharges"]))
    usage_lines = [r for r in recon if r["ProductCategory"] == "Azure"]
    licenses = [r for r in recon if r["ProductCategory"] != "Azure"]
    assert len(usage_lines) == 200 and all(r["Quantity"] == 1 != r["BillableQuantity"] for r in usage_lines)
    for r in usage_lines:
        assert r["Subtotal"] == rounddown(rounddown(r["EffectiveUnitPrice"] * r["BillableQuantity"])
                                          * r["PCToBCExchangeRate"])
    for r in licenses:
        assert r["Subtotal"] == rounddown(r["EffectiveUnitPrice"] * r["PCToBCExchangeRate"]) * r["BillableQuantity"]
        assert r["Quantity"] == r["BillableQuantity"]
    assert all(r["Total"] == r["Subtotal"] + r["TaxTotal"] for r in recon)
    assert any(r["PriceAdjustmentDescription"].startswith('["15.0% Partner earned credit') and
               r["EffectiveUnitPrice"] < r["UnitPrice"] for r in usage_lines)
    # 22-digit prices are JSON numbers in the text, digit for digit
    first = usage_lines[0]
    digits = format(first["UnitPrice"], "f")
    assert len(digits.replace("0.", "", 1)) == 22 and f'"UnitPrice":{digits},' in lines[recon.index(first)]
    assert float(digits) != first["UnitPrice"] or len(repr(float(digits))) < len(digits)


def test_billed_usage_adds_up_to_recon_lines_within_rounding(bsim):
    invoice = next(i for i in bsim.control.invoices() if i["id"].startswith("G"))
    recon = rows(export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})[1])
    usage = rows(export(bsim, "usage/billed", {"invoiceId": invoice["id"]})[1])
    assert len(usage) == 3 * 200 and not {"totalForCustomer", "invoiceLineItemType", "billingProvider"} & set(usage[0])
    quantity, billed = defaultdict(Decimal), defaultdict(Decimal)
    for row in usage:
        key = (row["SubscriptionId"], row["SkuId"])
        quantity[key] += row["Quantity"]
        billed[key] += row["BillingPreTaxTotal"]
        assert row["BillingPreTaxTotal"] == (row["EffectiveUnitPrice"] * row["Quantity"] * row["PCToBCExchangeRate"]
                                             ).quantize(Decimal(1).scaleb(-22))
    lines = {(r["SubscriptionId"], r["SkuId"]): r for r in recon if r["ProductCategory"] == "Azure"}
    assert set(lines) == set(quantity)
    for key, line in lines.items():
        assert quantity[key] == line["BillableQuantity"]
        assert 0 <= billed[key] - line["Subtotal"] < 2 * CENT


def test_foreign_currency_invoice_uses_the_exchange_rate(bsim):
    invoice = new_invoice(bsim, currency="EUR")
    assert invoice["currencyCode"] == "EUR"
    recon = rows(export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})[1])
    assert {r["PCToBCExchangeRate"] for r in recon} == {Decimal("0.846202666")}
    assert {(r["Currency"], r["PricingCurrency"]) for r in recon} == {("EUR", "USD")}
    assert sum(r["Total"] for r in recon) == Decimal(repr(invoice["totalCharges"]))
    changed = bsim.control.set_billing(invoice["id"], exchangeRate="1.0712")
    assert changed["exchangeRate"] == "1.0712"
    again = rows(export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})[1])
    assert {r["PCToBCExchangeRate"] for r in again} == {Decimal("1.0712")}
    total = next(i for i in bsim.control.invoices() if i["id"] == invoice["id"])["totalCharges"]
    assert sum(r["Total"] for r in again) == Decimal(repr(total)) != Decimal(repr(invoice["totalCharges"]))


def test_blobs_come_from_the_storage_host_only(bsim):
    invoice = next(i for i in bsim.control.invoices() if i["id"].startswith("G"))
    op, _ = export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})
    manifest = op["manifest"]
    assert bsim.blob_url and bsim.blob_url != bsim.graph_url
    assert manifest["rootDirectory"].startswith(bsim.blob_url + "/")
    path = manifest["rootDirectory"].removeprefix(bsim.blob_url)
    http = bsim.session()
    on_graph_host = http.get(f"{bsim.graph_url}{path}/{manifest['blobs'][0]['name']}?{manifest['sasToken']}")
    assert on_graph_host.status_code == 404
    assert http.get(f"{bsim.blob_url}{EXPORT}/manifests/{manifest['id']}").status_code == 404


def test_usage_file_arrives_a_day_late(bsim):
    invoice = new_invoice(bsim, billing={"usageDelayDays": 1})
    op, _ = export(bsim, "usage/billed", {"invoiceId": invoice["id"]})
    assert op["status"] == "failed" and op["error"]["code"] == "5000"
    assert export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})[0]["status"] == "succeeded"
    bsim.control.advance_clock(days=1, seconds=1)
    op, lines = export(bsim, "usage/billed", {"invoiceId": invoice["id"]})
    assert op["status"] == "succeeded" and len(lines) == 3 * 30


def test_usage_not_ready_as_an_empty_export_until_the_knob(bsim):
    invoice = new_invoice(bsim, billing={"usageReady": False, "usageNotReady": "empty"})
    op, lines = export(bsim, "usage/billed", {"invoiceId": invoice["id"]})
    assert op["status"] == "succeeded" and op["manifest"]["blobCount"] == 0 and lines == []
    bsim.control.set_billing(invoice["id"], usageReady=True)
    assert len(export(bsim, "usage/billed", {"invoiceId": invoice["id"]})[1]) == 90


def test_planted_mismatch_and_one_file_lines(bsim):
    invoice = new_invoice(bsim, billing={"extras": {"reservation": 1, "savings_plan": 1, "marketplace": 1,
                                                    "credit": 1, "adjustment": 1, "usage_only": 1}})
    truth = bsim.control.usage_truth(invoice["id"])
    target = next(sub for sub, t in truth["subscriptions"].items() if not t["oneFile"] and t["recon"])
    bsim.control.set_billing(invoice["id"], usageMismatch={target: "-25.00"})
    truth = bsim.control.usage_truth(invoice["id"])
    recon = rows(export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})[1])
    usage = rows(export(bsim, "usage/billed", {"invoiceId": invoice["id"]})[1])
    assert len(recon) == 60 + 5 and len(usage) == 3 * (30 + 1) == truth["usageRows"]
    assert sum(r["Total"] for r in recon) == Decimal(repr(next(
        i for i in bsim.control.invoices() if i["id"] == invoice["id"])["totalCharges"]))
    kinds = {one["kind"] for t in truth["subscriptions"].values() for one in t["oneFile"]}
    assert kinds == {"reservation", "savings_plan", "marketplace", "credit", "adjustment", "usage_only"}
    for sub, totals in truth["subscriptions"].items():
        explained = sum((o["amount"] if o["file"] == "recon" else -o["amount"] for o in totals["oneFile"]),
                        Decimal(0))
        rest = totals["difference"] - explained + totals["planted"]
        assert abs(rest) < 2 * CENT * len(recon), sub
    assert truth["subscriptions"][target]["planted"] == Decimal("-25.00")
    credits = [r for r in recon if r["ChargeType"] == "customerCredit"]
    assert credits[0]["CreditReasonCode"] == "Azure Consumption Credit" and credits[0]["Subtotal"] < 0
    assert any(r["ReservationOrderId"] for r in recon) and any(r["PublisherName"] == "Contoso ISV Ltd" for r in recon)
    recon_keys = {(r["SubscriptionId"], r["SkuId"]) for r in recon}
    assert [u for u in usage if (u["SubscriptionId"], u["SkuId"]) not in recon_keys]   # the usage-only rows


def test_unknown_customer_and_subscription_lines(bsim):
    invoice = new_invoice(bsim, billing={"extras": ["unknown_customer", "unknown_subscription"]})
    recon = rows(export(bsim, "reconciliation/billed", {"invoiceId": invoice["id"]})[1])
    usage = rows(export(bsim, "usage/billed", {"invoiceId": invoice["id"]})[1])
    customers = {c["id"] for c in bsim.control.customers()}
    subscriptions = {s["id"].lower() for s in bsim.control.subscriptions()}
    unknown_customer, unknown_sub = recon[-2], recon[-1]
    assert unknown_customer["CustomerId"] not in customers
    assert unknown_sub["CustomerId"] in customers and unknown_sub["SubscriptionId"].lower() not in subscriptions
    assert sum(1 for u in usage if u["SubscriptionId"] == unknown_sub["SubscriptionId"]) == 3
    assert all(r["CustomerId"] in customers for r in recon[:-2])
    assert all(r["SubscriptionId"].lower() in subscriptions for r in recon[:-2])


def test_bad_knobs_are_refused_and_change_nothing(bsim):
    invoice = new_invoice(bsim)
    for knobs in ({"extras": ["nonsense"]}, {"exchangeRate": "abc"}, {"usageNotReady": "later"},
                  {"usageMismatch": {"00000000-0000-0000-0000-000000000000": "1"}}, {"colour": "red"},
                  {"currency": "EURO"}, {"specializationDiscount": 5}):
        with pytest.raises(ControlError) as refused:
            bsim.control.set_billing(invoice["id"], **knobs)
        assert refused.value.status == 400
    plan = bsim.control.billing(invoice["id"])
    assert plan["extras"] == [] and plan["usageMismatch"] == {} and plan["currency"] == "USD"
    assert plan["specializationDiscount"] == ""
    with pytest.raises(ControlError) as missing:
        bsim.control.billing("G999999999")
    assert missing.value.status == 404


@pytest.mark.parametrize("period", ["current", "last"])
def test_unbilled_recon_and_usage_agree(bsim, period):
    body = {"currencyCode": "EUR", "billingPeriod": period, "attributeSet": "full"}
    recon = rows(export(bsim, "reconciliation/unbilled", body)[1])
    usage = rows(export(bsim, "usage/unbilled", body)[1])
    assert recon and {r["InvoiceNumber"] for r in recon} == {""} and {r["Currency"] for r in recon} == {"EUR"}
    lines = {(r["SubscriptionId"], r["SkuId"]): r["Subtotal"] for r in recon if r["ProductCategory"] == "Azure"}
    billed = defaultdict(Decimal)
    for row in usage:
        billed[(row["SubscriptionId"], row["SkuId"])] += row["BillingPreTaxTotal"]
    assert set(billed) == set(lines) and all(0 <= billed[k] - v < 2 * CENT for k, v in lines.items())
    basic = rows(export(bsim, "usage/unbilled", {**body, "attributeSet": "basic"})[1])
    assert "MeterCategory" not in basic[0] and {"BillingPreTaxTotal", "SubscriptionId", "Quantity"} <= set(basic[0])


def test_legacy_azure_usage_adds_up_to_its_billing_lines(bsim):
    invoice = next(i for i in bsim.control.invoices() if i["id"].startswith("D"))
    client = PartnerCenterClient(bsim, app_only_token(bsim))

    def every(item_type):
        found, offset = [], 0
        while True:
            page = json.loads(client.get(f"/v1/invoices/{invoice['id']}/lineitems?provider=azure&invoicelineitemtype="
                                         f"{item_type}&size=2000&offset={offset}").text, parse_float=Decimal)
            found += page["items"]
            if "next" not in page.get("links", {}):
                return found
            offset += 2000

    billing, usage = every("billinglineitems"), every("usagelineitems")
    assert len(usage) == 3 * len(billing) > 0
    consumed = defaultdict(Decimal)
    for row in usage:
        consumed[(row["subscriptionId"], row["resourceGuid"])] += row["consumedQuantity"]
    assert consumed == {(b["subscriptionId"], b["resourceGuid"]): Decimal(b["consumedQuantity"]) for b in billing}
    by_path = json.loads(client.get(f"/v1/invoices/{invoice['id']}/lineitems/Azure/UsageLineItems?size=2000&offset=0"
                                    ).text, parse_float=Decimal)["items"]
    assert by_path == usage[:len(by_path)]
