"""Invoices and line items: size/offset and seek paging, totals that reconcile."""
from __future__ import annotations

from conftest import PartnerCenterClient, app_only_token


def _collect_offset(client, first_path):
    items, path = [], first_path
    while path:
        body = client.get("/v1" + path).json()
        assert body["totalCount"] == len(body["items"])
        items += body["items"]
        path = body.get("links", {}).get("next", {}).get("uri")
    return items


def _collect_seek(client, first_path):
    items, response = [], client.get("/v1" + first_path)
    while True:
        body = response.json()
        items += body["items"]
        nxt = body.get("links", {}).get("next")
        if not nxt:
            return items
        assert "seekOperation=Next" in nxt["uri"]
        response = client.get("/v1" + nxt["uri"], headers={h["key"]: h["value"] for h in nxt["headers"]})


def _cents(value) -> int:
    return round(value * 100)


def test_invoice_list_offset_paging(sim, app_pc):
    listed = _collect_offset(app_pc, "/invoices?size=4&offset=0")
    assert sorted(i["id"] for i in listed) == sorted(i["id"] for i in sim.control.invoices())
    dates = [i["invoiceDate"] for i in listed]
    assert dates == sorted(dates, reverse=True)
    kinds = {i["invoiceType"] for i in listed}
    assert kinds == {"OneTime", "Recurring"}


def test_new_commerce_lines_seek_paging_reconcile_with_total():
    from simulator.testing import start_simulator
    with start_simulator(customers=4, invoices=2, line_items_per_invoice=4500) as sim:
        client = PartnerCenterClient(sim, app_only_token(sim))
        invoice = next(i for i in sim.control.invoices() if i["id"].startswith("G"))
        lines = _collect_seek(client, f"/invoices/{invoice['id']}/lineitems?provider=onetime"
                                      f"&invoicelineitemtype=billinglineitems&size=2000")
        assert len(lines) == 4500
        assert sum(_cents(line["totalForCustomer"]) for line in lines) == _cents(invoice["totalCharges"])
        # deterministic: the same page twice is identical
        first = client.get(f"/v1/invoices/{invoice['id']}/lineitems?provider=onetime&invoicelineitemtype="
                           f"billinglineitems&size=3").json()["items"]
        assert first == lines[:3]
        usage = _collect_seek(client, f"/invoices/{invoice['id']}/lineitems?provider=onetime"
                                      f"&invoicelineitemtype=usagelineitems&currencycode=usd&period=previous")
        # three daily rows for each usage-based (odd) reconciliation line
        assert len(usage) == 3 * (4500 // 2) and usage[0]["attributes"]["objectType"] == "DailyRatedUsageLineItem"


def test_legacy_lines_offset_paging_reconcile_with_total(sim, app_pc):
    invoice = next(i for i in sim.control.invoices() if i["id"].startswith("D"))
    office = _collect_offset(app_pc, f"/invoices/{invoice['id']}/lineitems?provider=office"
                                     f"&invoicelineitemtype=billinglineitems&size=7&offset=0")
    azure = _collect_offset(app_pc, f"/invoices/{invoice['id']}/lineitems?provider=azure"
                                    f"&invoicelineitemtype=billinglineitems&size=7&offset=0")
    assert len(office) + len(azure) == invoice["lineItemCounts"]["office_billing"] + \
        invoice["lineItemCounts"]["azure_billing"]
    total = sum(_cents(l["totalForCustomer"]) for l in office) + sum(_cents(l["postTaxTotal"]) for l in azure)
    assert total == _cents(invoice["totalCharges"])
    # the older path form pages the same data
    by_path = _collect_offset(app_pc, f"/invoices/Recurring-{invoice['id']}/lineitems/Office/BillingLineItems?size=9")
    assert by_path == office


def test_unbilled_requires_period_and_currency(app_pc):
    missing = app_pc.get("/v1/invoices/unbilled/lineitems?provider=onetime&invoicelineitemtype=billinglineitems")
    assert missing.status_code == 400
    ok = app_pc.get("/v1/invoices/unbilled/lineitems?provider=onetime&invoicelineitemtype=usagelineitems"
                    "&currencycode=USD&period=current&size=5").json()
    assert ok["totalCount"] == 5 and "continuationToken" in ok
    links = app_pc.get("/v1/invoices/estimates/links?currencycode=USD").json()
    assert links["totalCount"] == 4


def test_invoice_by_id_needs_app_user(sim, app_pc, user_pc):
    invoice_id = sim.control.invoices()[0]["id"]
    assert app_pc.get(f"/v1/invoices/{invoice_id}").json()["code"] == 900329
    assert user_pc.get(f"/v1/invoices/{invoice_id}").json()["id"] == invoice_id
    assert user_pc.get(f"/v1/invoices/OneTime-{invoice_id}").status_code == 200
