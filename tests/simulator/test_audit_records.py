"""The activity log: records for upstream changes, the 90-day window, seek paging, filters, and
the control API's changes with a chosen trace (audit record, webhook only, none) and their truth."""
from __future__ import annotations

import json

import pytest

from simulator.testing import ControlError

from conftest import PartnerCenterClient, consent


def _client(sim) -> PartnerCenterClient:
    return PartnerCenterClient(sim, consent(sim)["access_token"])


def _all_pages(client, path: str) -> list[dict]:
    items, response = [], client.get(path)
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        nxt = page.get("links", {}).get("next")
        if not nxt:
            return items
        headers = {h["key"]: h["value"] for h in nxt["headers"]}
        assert nxt["uri"].endswith("seekOperation=Next") and page["continuationToken"] == headers["MS-ContinuationToken"]
        response = client.get("/v1" + nxt["uri"], headers=headers)


def test_changes_leave_records_that_page_with_a_continuation_token(fresh_sim):
    sim = fresh_sim
    client = _client(sim)
    customers = [c["id"] for c in sim.control.customers()[:3]]
    for customer in customers:
        sim.control.upstream_change("subscription_quantity", customer)
        sim.control.upstream_change("customer_profile", customer)
    sim.control.upstream_change("agreement", customers[0])
    today = sim.control.now()[:10]
    records = _all_pages(client, f"/v1/auditrecords?startDate={today}&endDate={today}&size=2")
    assert len(records) == 7 and len({r["id"] for r in records}) == 7
    assert [r["resourceType"] for r in records[:2]] == ["subscription", "customer"]
    assert records[-1]["resourceType"] == "agreement" and records[-1]["customerId"] == customers[0]
    documented = {"id", "partnerId", "participants", "customerId", "customerName", "userPrincipalName",
                  "applicationId", "resourceType", "resourceNewValue", "operationType", "originalCorrelationId",
                  "operationDate", "operationStatus", "customizedData", "attributes"}
    assert documented <= set(records[0]) and records[0]["attributes"] == {"objectType": "AuditRecord"}
    assert json.loads(records[1]["resourceNewValue"])["companyProfile"]["companyName"].endswith("Renamed")


def test_filter_by_customer_and_the_90_day_window(fresh_sim):
    sim = fresh_sim
    client = _client(sim)
    first, second = (c["id"] for c in sim.control.customers()[:2])
    sim.control.upstream_change("subscription_quantity", first)
    sim.control.upstream_change("subscription_quantity", second)
    filter_json = json.dumps({"Field": "CustomerId", "Value": second.upper(), "Operator": "equals"})
    page = client.get("/v1/auditrecords", params={"filter": filter_json}).json()
    assert [r["customerId"] for r in page["items"]] == [second]
    sim.control.advance_clock(days=91)
    old = client.get("/v1/auditrecords", params={"startDate": "2000-01-01"})
    assert old.status_code == 400 and old.json()["code"] == 2000
    assert client.get("/v1/auditrecords").json()["items"] == []  # default: the last 30 days
    assert client.get("/v1/auditrecords", params={"startDate": "soon"}).status_code == 400


def test_webhook_only_and_traceless_changes_leave_no_record_and_are_in_the_truth(fresh_sim):
    sim = fresh_sim
    customer = sim.control.customers()[0]["id"]
    with pytest.raises(ControlError) as refused:  # webhook-only needs a registered callback
        sim.control.upstream_change("subscription_quantity", customer, trace="webhook")
    assert refused.value.status == 409
    renewal = sim.control.upstream_change("renewal", customer)
    est = sim.control.upstream_change("est_conversion", customer)
    assert (renewal["trace"], renewal["cause"], est["cause"]) == ("none", "renewal", "est_conversion")
    assert sim.control.audit_records() == []
    assert [c["kind"] for c in sim.control.upstream_changes()] == ["renewal", "est_conversion"]
    sub = next(s for s in sim.control.subscriptions(customer) if s["id"] == est["subscriptionId"])
    assert sub["offerName"].endswith("(Extended Service Term)") and sub.get("termDuration", "P1M") == "P1M"


def test_portal_and_api_writes_are_recorded(fresh_sim):
    sim = fresh_sim
    customer = sim.control.customers()[0]["id"]
    sub = sim.control.subscriptions(customer)[0]
    sim.control.update_subscription(customer, sub["id"], quantity=sub["quantity"] + 3)
    added = sim.control.add_customer(companyName="New Co")
    kinds = [(r["resourceType"], r["operationType"], r["customerId"]) for r in sim.control.audit_records()]
    assert kinds == [("subscription", "update_subscription", customer), ("customer", "add_customer", added["id"])]
