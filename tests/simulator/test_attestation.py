"""Enhanced MCA attestation (issue 11): app-only create, the customer's acceptance on the control
API, agreement creation with the attestation id, 600061 for a duplicate, expired links, and
customers whose agreement predates 2023-04-01."""
from __future__ import annotations

import pytest

from conftest import PartnerCenterClient, app_only_token, consent
from simulator.testing import ControlError


def _request(customer_id: str, **overrides) -> dict:
    return {"customerTenantId": customer_id, "country": "US", "language": "en-US", "companyName": "Contoso",
            "signatoryFirstName": "Tania", "signatoryLastName": "Carr", "signatoryEmail": "tania@example.com",
            **overrides}


def test_attestation_create_is_app_only(fresh_sim):
    sim = fresh_sim
    customer_id = sim.control.customers()[0]["id"]
    user = PartnerCenterClient(sim, consent(sim)["access_token"])
    refused = user.post("/v1/attestations/enhanced", json=_request(customer_id))
    assert refused.status_code == 403 and refused.json()["code"] == 2032
    app = PartnerCenterClient(sim, app_only_token(sim))
    created = app.post("/v1/attestations/enhanced", json=_request(customer_id))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending" and body["customerTenantId"] == customer_id
    assert body["acceptanceLink"] == f"https://cdn.partner.microsoft.com/mca/?attestationid={body['attestationId']}"
    assert app.get(f"/v1/attestations/enhanced/{body['attestationId']}").json()["status"] == "pending"


def test_accept_then_create_agreement_then_duplicate_is_600061(fresh_sim):
    sim = fresh_sim
    customer_id = sim.control.customers()[1]["id"]
    app = PartnerCenterClient(sim, app_only_token(sim))
    attestation_id = app.post("/v1/attestations/enhanced", json=_request(customer_id)).json()["attestationId"]
    path = f"/v1/customers/{customer_id}/agreements"
    early = app.post(path, json={"attestationId": attestation_id})
    assert early.status_code == 409 and "AttestationNotAccepted" in early.json()["description"]
    assert sim.control.accept_attestation(attestation_id)["status"] == "accepted"
    created = app.post(path, json={"attestationId": attestation_id})
    assert created.status_code == 201, created.text
    assert created.json()["attestationId"] == attestation_id
    assert created.json()["primaryContact"]["email"] == "tania@example.com"
    again = app.post(path, json={"attestationId": attestation_id})
    assert again.status_code == 400 and again.json()["code"] == 600061 and again.json()["isRetryable"] is False
    assert again.json()["description"].startswith("PartnerConfirmedAgreementAlreadyExists")
    second = app.post("/v1/attestations/enhanced", json=_request(customer_id)).json()["attestationId"]
    sim.control.accept_attestation(second)
    same_contact = app.post(path, json={"attestationId": second})
    assert same_contact.status_code == 400 and same_contact.json()["code"] == 600061
    assert customer_id.lower() not in sim.control.request("GET", "/truth/attestations")["customersNeedingAttestation"]


def test_expired_link(fresh_sim):
    sim = fresh_sim
    customer_id = sim.control.customers()[2]["id"]
    app = PartnerCenterClient(sim, app_only_token(sim))
    first = app.post("/v1/attestations/enhanced", json=_request(customer_id)).json()["attestationId"]
    assert sim.control.expire_attestation(first)["status"] == "expired"
    with pytest.raises(ControlError) as refused:
        sim.control.accept_attestation(first)
    assert refused.value.status == 409
    gone = app.post(f"/v1/customers/{customer_id}/agreements", json={"attestationId": first})
    assert gone.status_code == 410 and "AttestationExpired" in gone.json()["description"]
    second = app.post("/v1/attestations/enhanced", json=_request(customer_id)).json()["attestationId"]
    sim.control.advance_clock(days=31)  # attestation_link_days=30
    assert app.get(f"/v1/attestations/enhanced/{second}").json()["status"] == "expired"


def test_bad_attestation_input(sim, app_pc):
    customer_id = sim.control.customers()[0]["id"]
    missing = app_pc.post("/v1/attestations/enhanced", json={"customerTenantId": customer_id})
    assert missing.status_code == 400 and "signatoryEmail" in missing.json()["data"]
    assert app_pc.post("/v1/attestations/enhanced", json=_request(customer_id, country="USA")).status_code == 400
    unknown = app_pc.post("/v1/attestations/enhanced", json=_request("00000000-0000-0000-0000-000000000000"))
    assert unknown.status_code == 404
    assert app_pc.post(f"/v1/customers/{customer_id}/agreements",
                       json={"attestationId": "nope"}).status_code == 404


def test_seed_has_customers_whose_agreement_predates_april_2023(sim):
    old = [a for a in sim.control.agreements()
           if a["type"] == "MicrosoftCustomerAgreement" and a["dateAgreed"] < "2023-04-01"]
    recent = [a for a in sim.control.agreements()
              if a["type"] == "MicrosoftCustomerAgreement" and a["dateAgreed"] >= "2023-04-01"]
    assert old and recent
    needing = sim.control.request("GET", "/truth/attestations")["customersNeedingAttestation"]
    assert all(a["customerId"].lower() in needing for a in old)
