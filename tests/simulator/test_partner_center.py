"""Partner Center /v1 behaviour: auth rules, paging, subscriptions PATCH, agreements."""
from __future__ import annotations

import copy

import pytest

from conftest import PartnerCenterClient, app_only_token, consent


def test_missing_or_foreign_token_is_401(sim):
    assert sim.session().get(f"{sim.partner_center_url}/v1/customers").status_code == 401
    graph_token = app_only_token(sim, "https://graph.microsoft.com")
    assert PartnerCenterClient(sim, graph_token).get("/v1/customers").status_code == 401


def test_app_only_refused_on_app_user_endpoints(app_pc):
    for path in ("/v1/profiles/organization", "/v1/agreements?agreementType=MicrosoftCustomerAgreement",
                 "/v1/customers/relationshiprequests"):
        response = app_pc.get(path)
        assert response.status_code == 403 and response.json()["code"] == 900329, path


def test_roles_are_enforced_for_delegated_tokens(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, consent(sim)["access_token"])
    assert client.get("/v1/invoices").status_code == 200
    sim.control.set_integration_user(roles=["SalesAgent"])
    denied = client.get("/v1/invoices")
    assert denied.status_code == 403
    assert denied.json() == {"code": 900150, "description": "The supplied role does not have the rights to "
                                                            "perform the requested operation", "data": [],
                             "source": "PartnerFD"}
    assert client.get("/v1/customers").status_code == 200
    sim.control.set_integration_user(roles=["BillingAdmin"])
    assert client.get("/v1/customers").status_code == 403
    sim.control.set_integration_user(roles=["AdminAgent"])
    assert client.get("/v1/customers").status_code == 200 and client.get("/v1/invoices").status_code == 200


def test_headers_echo_request_ids(app_pc):
    response = app_pc.get("/v1/customers?size=1", headers={"MS-CorrelationId": "c0ffee00-0000-0000-0000-000000000001",
                                                           "MS-RequestId": "c0ffee00-0000-0000-0000-000000000002"})
    assert response.headers["MS-CorrelationId"] == "c0ffee00-0000-0000-0000-000000000001"
    assert response.headers["MS-RequestId"] == "c0ffee00-0000-0000-0000-000000000002"
    assert response.headers["MS-CV"]


def test_customers_seek_paging_matches_truth(sim, app_pc):
    seen, response = [], app_pc.get("/v1/customers?size=7")
    pages = 0
    while True:
        body = response.json()
        pages += 1
        assert body["totalCount"] == len(body["items"]) <= 7
        seen += [c["id"] for c in body["items"]]
        nxt = body.get("links", {}).get("next")
        if not nxt:
            assert "continuationToken" not in body
            break
        assert nxt["uri"] == "/customers?size=7&seekOperation=Next"
        assert body["continuationToken"] == nxt["headers"][0]["value"]
        response = app_pc.get("/v1" + nxt["uri"], headers={h["key"]: h["value"] for h in nxt["headers"]})
    assert pages == 4 and len(seen) == len(set(seen))
    assert sorted(seen) == sorted(c["id"] for c in sim.control.customers())
    broken = app_pc.get("/v1/customers?size=7&seekOperation=Next", headers={"MS-ContinuationToken": "garbage"})
    assert broken.status_code == 400


def test_unknown_ids_are_documented_faults(sim, app_pc):
    customer_id = sim.control.customers()[0]["id"]
    assert app_pc.get(f"/v1/customers/{customer_id}/subscriptions/nope").json()["code"] == 20003
    assert app_pc.get("/v1/invoices/G999999999/lineitems?provider=onetime&invoicelineitemtype=billinglineitems"
                      ).json()["code"] == 1000
    assert app_pc.get("/v1/no/such/path").status_code == 404


def _nce(sim, within_window: bool):
    now = sim.control.now()
    for sub in sim.control.subscriptions():
        if sub["isNce"] and sub["status"] == "active" and (sub["cancellationAllowedUntilDate"] > now) == within_window:
            return sub
    customer = sim.control.customers()[0]["id"]
    return sim.control.add_subscription(customer, nce=True, status="active", quantity=10,
                                        days_ago=1 if within_window else 60)


def test_patch_etag_rules_and_pascal_case(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, app_only_token(sim))
    sub = _nce(sim, within_window=False)
    path = f"/v1/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    current = client.get(path).json()
    pascal = {"Id": current["id"], "Quantity": current["quantity"] + 2, "Status": "active",
              "Attributes": {"Etag": current["attributes"]["etag"], "ObjectType": "Subscription"}}
    updated = client.patch(path, json=pascal, headers={"If-Match": f'"{current["attributes"]["etag"]}"'})
    assert updated.status_code == 200 and updated.json()["quantity"] == current["quantity"] + 2
    assert updated.json()["attributes"]["etag"] != current["attributes"]["etag"]
    stale = client.patch(path, json={**current, "quantity": current["quantity"] + 5})
    assert stale.status_code == 400 and stale.json()["code"] == 2055
    stale_header = client.patch(path, json={"quantity": 99}, headers={"If-Match": current["attributes"]["etag"]})
    assert stale_header.json()["code"] == 2055


def test_nce_cancellation_window(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, app_only_token(sim))
    sub = _nce(sim, within_window=True)
    path = f"/v1/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    body = client.get(path).json()
    if body["quantity"] < 3:
        body = client.patch(path, json={**body, "quantity": 5}).json()
    decreased = client.patch(path, json={**body, "quantity": body["quantity"] - 1})
    assert decreased.status_code == 200

    sim.control.advance_clock(days=8)
    body = client.get(path).json()
    assert body["refundOptions"] == []
    too_late = client.patch(path, json={**body, "quantity": body["quantity"] - 1})
    assert too_late.status_code == 400 and too_late.json()["code"] == 800090
    cancel = client.patch(path, json={**body, "status": "deleted"})
    assert cancel.status_code == 400 and cancel.json()["code"] == 900117
    increase = client.patch(path, json={**body, "quantity": body["quantity"] + 1})
    assert increase.status_code == 200


def test_cancel_inside_window_then_deleted_is_final(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, app_only_token(sim))
    sub = _nce(sim, within_window=True)
    path = f"/v1/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    body = client.get(path).json()
    cancelled = client.patch(path, json={**body, "status": "deleted"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "deleted"
    again = client.patch(path, json={**cancelled.json(), "quantity": 3})
    assert again.json()["code"] == 2011


def test_suspended_subscription_only_reactivates(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, app_only_token(sim))
    sub = _nce(sim, within_window=False)
    path = f"/v1/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    body = client.get(path).json()
    suspended = client.patch(path, json={**body, "status": "suspended"}).json()
    assert suspended["status"] == "suspended" and suspended["suspensionReasons"]
    refused = client.patch(path, json={**suspended, "quantity": suspended["quantity"] + 1})
    assert refused.status_code == 400 and refused.json()["code"] == 800091
    reactivated = client.patch(path, json={**suspended, "status": "active"})
    assert reactivated.status_code == 200 and reactivated.json()["status"] == "active"


def test_write_202_applies_change_and_points_to_resource(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, app_only_token(sim))
    sub = _nce(sim, within_window=False)
    path = f"/v1/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    body = client.get(path).json()
    sim.control.set_faults(write_202=1.0)
    accepted = client.patch(path, json={**body, "autoRenewEnabled": not body["autoRenewEnabled"]})
    assert accepted.status_code == 202
    assert accepted.headers["Location"] == f"/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    assert client.get(path).json()["autoRenewEnabled"] == (not body["autoRenewEnabled"])


def test_patch_bad_input_is_400(sim, app_pc):
    sub = _nce(sim, within_window=False)
    path = f"/v1/customers/{sub['customerId']}/subscriptions/{sub['id']}"
    assert app_pc.patch(path, data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert app_pc.patch(path, json={"quantity": "many"}).status_code == 400
    assert app_pc.patch(path, json=[1, 2]).status_code == 400


def test_create_agreement_legacy_path_when_enabled(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, consent(sim)["access_token"])
    customer_id = sim.control.customers()[0]["id"]
    request = {"primaryContact": {"firstName": "Tania", "lastName": "Carr", "email": "tania@example.com",
                                  "phoneNumber": "1234567890"},
               "templateId": "117a77b0-9360-443b-8795-c6dedc750cf9", "dateAgreed": "2026-06-14T00:00:00.000Z",
               "type": "MicrosoftCustomerAgreement"}
    retired = client.post(f"/v1/customers/{customer_id}/agreements", json=request)
    assert retired.status_code == 400 and "retired on 2026-01-05" in retired.json()["description"]
    sim.control.set_settings(legacy_agreement_confirmation=True)
    created = client.post(f"/v1/customers/{customer_id}/agreements", json=request)
    assert created.status_code == 201
    assert created.json()["userId"] == sim.control.integration_user()["oid"]
    duplicate = client.post(f"/v1/customers/{customer_id}/agreements", json=request)
    assert duplicate.status_code == 400
    broken = copy.deepcopy(request)
    del broken["primaryContact"]["email"]
    invalid = client.post(f"/v1/customers/{customer_id}/agreements", json=broken)
    assert invalid.status_code == 400 and "primaryContact.email" in invalid.json()["description"]
    listed = client.get(f"/v1/customers/{customer_id}/agreements?agreementType=*").json()
    assert any(a["primaryContact"]["email"] == "tania@example.com" for a in listed["items"])


@pytest.mark.parametrize("body", [b"", b"null", b"{\"value\": 1}"])
def test_control_api_rejects_bad_input(sim, body):
    response = sim.session().post(f"{sim.control_url}/customers/nope/subscriptions", data=body,
                                  headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
