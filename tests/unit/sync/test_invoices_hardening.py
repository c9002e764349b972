"""Issue 9 for invoice imports: broken answers never tombstone lines (6), an invoice id is
checked before it goes into a path (8), an import killed mid-way leaves its run row (14)."""
from __future__ import annotations

import pytest

from sync.runs import RunOutcome
from tests.fakes.partner_center import response
from tests.unit.sync.test_invoices_reconciliation import PROVIDER, FakeBilling, invoice_lines, invoice_service, onetime_lines


def imported(lines=5):
    billing = FakeBilling()
    billing.add("G1", onetime_lines(lines))
    svc, tables = invoice_service(billing)
    assert svc.import_invoice(PROVIDER, "G1").outcome == RunOutcome.SUCCEEDED
    return billing, svc, tables


def live_lines(tables):
    return list(invoice_lines(tables, "G1").values())


def answer(billing, when, broken):
    original = billing.request

    def request(method, url, **kwargs):
        return broken() if when(url) else original(method, url, **kwargs)

    billing.request = request


BROKEN = {
    "manifest without blobs": (lambda url: "/manifests/" in url,
                               lambda: response(200, {"rootDirectory": "https://blob.test/r", "blobCount": 1})),
    "manifest blobCount disagrees": (lambda url: "/manifests/" in url,
                                     lambda: response(200, {"rootDirectory": "https://blob.test/r", "blobCount": 4,
                                                            "blobs": [{"name": "part-0.json.gz"}]})),
    "invoice read is an error envelope": (lambda url: url.endswith("/v1/invoices/G1"),
                                          lambda: response(200, {"error": {"code": "x", "message": "boom"}})),
    "invoice read is another invoice": (lambda url: url.endswith("/v1/invoices/G1"),
                                        lambda: response(200, {"id": "D9", "attributes": {"objectType": "Invoice"}})),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_answer_fails_the_import_and_tombstones_no_line(kind):
    billing, svc, tables = imported()
    before = len(live_lines(tables))
    answer(billing, *BROKEN[kind])
    result = svc.import_invoice(PROVIDER, "G1")
    assert result.outcome == RunOutcome.FAILED and result.rows_removed == 0
    assert len(live_lines(tables)) == before == 5
    run = tables.table("syncruns").partition("p1")
    assert any(r["run_id"] == result.run_id and r["outcome"] == "failed" for r in run.values())


@pytest.mark.parametrize("invoice_id", ["G1/../D1", "../G1", "G1?x=1", "G 1"])
def test_an_invoice_id_that_is_not_letters_and_digits_never_reaches_a_path(invoice_id):
    billing, svc, tables = imported()
    sent = len(billing.sent)
    result = svc.import_invoice(PROVIDER, invoice_id)
    assert result.outcome == RunOutcome.FAILED and "letters and digits" in result.error
    assert len(billing.sent) == sent


def test_an_import_killed_mid_way_leaves_a_running_row():
    billing = FakeBilling()
    billing.add("G1", onetime_lines(2))
    svc, tables = invoice_service(billing)

    def killed(method, url, **kwargs):
        raise KeyboardInterrupt

    billing.request = killed
    with pytest.raises(KeyboardInterrupt):
        svc.import_invoice(PROVIDER, "G1")
    (row,) = tables.table("syncruns").partition("p1").values()
    assert row["outcome"] == "running" and row["invoice_id"] == "G1"
