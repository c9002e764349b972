"""Graph billing export end to end: POST, poll with Retry-After, manifest, gzip JSON Lines."""
from __future__ import annotations

import gzip
import json
import time

from simulator.testing import start_simulator

from conftest import app_only_token, assert_same_shape, load_sample

EXPORT = "/v1.0/reports/partners/billing"


def _graph(sim):
    http = sim.session()
    http.headers["Authorization"] = "Bearer " + app_only_token(sim, "https://graph.microsoft.com")
    return http


def _run_export(sim, http, suffix, body):
    started = http.post(f"{sim.graph_url}{EXPORT}/{suffix}/export", json=body)
    assert started.status_code == 202
    location = started.headers["Location"]
    assert location.startswith(f"{sim.graph_url}{EXPORT}/operations/")
    polls = []
    while True:
        op = http.get(location)
        assert op.status_code == 200
        polls.append(op.json())
        if op.json()["status"] != "running":
            return polls
        assert int(op.headers["Retry-After"]) >= 0
        time.sleep(int(op.headers["Retry-After"]))


def test_billed_reconciliation_export_matches_invoice_total():
    with start_simulator(customers=3, invoices=2, line_items_per_invoice=1200, export_items_per_blob=500,
                         export_retry_after_seconds=0) as sim:
        http = _graph(sim)
        invoice = next(i for i in sim.control.invoices() if i["id"].startswith("G"))
        polls = _run_export(sim, http, "reconciliation/billed", {"invoiceId": invoice["id"], "attributeSet": "full"})
        assert [p["status"] for p in polls] == ["running", "running", "succeeded"]
        assert_same_shape(load_sample("graph-billing-operation-running.json"), polls[0])
        assert_same_shape(load_sample("graph-billing-operation-succeeded.json"), polls[-1])
        manifest = http.get(polls[-1]["resourceLocation@odata.navigationLink"]).json()
        assert_same_shape(load_sample("graph-billing-manifest.json"), manifest)
        assert manifest["dataFormat"] == "compressedJSONLines" and manifest["blobCount"] == 3
        rows = []
        for blob in manifest["blobs"]:
            response = http.get(f"{manifest['rootDirectory']}/{blob['name']}?{manifest['sasToken']}", stream=True)
            assert response.status_code == 200 and response.headers.get("Transfer-Encoding") == "chunked"
            rows += [json.loads(line) for line in gzip.decompress(response.raw.read()).splitlines()]
        assert len(rows) == 1200
        assert sum(round(r["Total"] * 100) for r in rows) == round(invoice["totalCharges"] * 100)
        assert not {"totalForCustomer", "invoiceLineItemType", "billingProvider"} & set(rows[0])
        assert http.get(f"{manifest['rootDirectory']}/{manifest['blobs'][0]['name']}").status_code == 403


def test_legacy_invoice_fails_with_5000(sim):
    http = _graph(sim)
    invoice = next(i for i in sim.control.invoices() if i["id"].startswith("D"))
    sim.control.set_faults(export_retry_after_seconds=0)
    polls = _run_export(sim, http, "reconciliation/billed", {"invoiceId": invoice["id"]})
    failed = polls[-1]
    assert_same_shape(load_sample("graph-billing-operation-failed.json"), failed)
    assert failed["error"]["code"] == "5000" and invoice["id"] in failed["error"]["message"]


def test_unbilled_usage_export_pascal_case_rows(sim):
    http = _graph(sim)
    sim.control.set_faults(export_retry_after_seconds=0)
    polls = _run_export(sim, http, "usage/unbilled", {"currencyCode": "USD", "billingPeriod": "current",
                                                      "attributeSet": "full"})
    manifest = http.get(polls[-1]["resourceLocation@odata.navigationLink"]).json()
    blob = http.get(f"{manifest['rootDirectory']}/{manifest['blobs'][0]['name']}?{manifest['sasToken']}")
    first = json.loads(gzip.decompress(blob.content).splitlines()[0])
    assert {"CustomerId", "UsageDate", "BillingPreTaxTotal", "MeterCategory"} <= set(first)


def test_bad_request_and_missing_permission(fresh_sim):
    sim = fresh_sim
    http = _graph(sim)
    assert http.post(f"{sim.graph_url}{EXPORT}/reconciliation/unbilled/export", json={"currencyCode": "USD"}
                     ).status_code == 400
    sim.control.set_app_permissions(graph_application=[])
    denied = http.post(f"{sim.graph_url}{EXPORT}/reconciliation/billed/export", json={"invoiceId": "G1"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Forbidden"
    nobody = sim.session().post(f"{sim.graph_url}{EXPORT}/reconciliation/billed/export", json={"invoiceId": "G1"})
    assert nobody.status_code == 401


def test_delegated_graph_token_with_permission_is_accepted(sim):
    from conftest import consent
    token = consent(sim, scopes=("https://graph.microsoft.com/PartnerBilling.Read.All",))["access_token"]
    http = sim.session()
    http.headers["Authorization"] = f"Bearer {token}"
    started = http.post(f"{sim.graph_url}{EXPORT}/usage/billed/export", json={"invoiceId": "G000000001"})
    assert started.status_code == 202
