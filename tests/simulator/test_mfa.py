"""MFA and token health (issue 11): 401 / 900421 and the 2019 form, progressive enforcement,
403 / 900309, the trusted-location exemption, refresh-token failures, and the MFA reports."""
from __future__ import annotations

import pytest

from conftest import PC_SCOPE, PartnerCenterClient, app_only_token, consent, msal_app


def test_app_user_call_without_mfa_is_401_900421(fresh_sim):
    sim = fresh_sim
    response = PartnerCenterClient(sim, consent(sim, mfa=False)["access_token"]).get("/v1/customers")
    assert response.status_code == 401 and response.json()["code"] == 900421
    assert "mfa" in response.json()["description"] and response.json()["source"] == "PartnerFD"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert PartnerCenterClient(sim, app_only_token(sim)).get("/v1/customers").status_code == 200


def test_2019_form_is_selectable(fresh_sim):
    sim = fresh_sim
    sim.control.set_settings(mfa_error_format="2019")
    response = PartnerCenterClient(sim, consent(sim, mfa=False)["access_token"]).get("/v1/customers")
    assert response.status_code == 401 and response.reason == "Unauthorized - MFA required"
    assert response.content == b""


def test_progressive_enforcement_refuses_some_calls(fresh_sim):
    sim = fresh_sim
    sim.control.set_settings(mfa_enforcement=0.5)
    client = PartnerCenterClient(sim, consent(sim, mfa=False)["access_token"])
    statuses = {client.get("/v1/customers?size=1").status_code for _ in range(30)}
    assert statuses == {200, 401}


def test_conditional_access_block_is_403_900309(fresh_sim):
    sim = fresh_sim
    client = PartnerCenterClient(sim, consent(sim)["access_token"])
    sim.control.set_settings(conditional_access_block=True)
    response = client.get("/v1/customers")
    assert response.status_code == 403 and response.json()["code"] == 900309
    assert "Conditional Access" in response.json()["description"]
    assert PartnerCenterClient(sim, app_only_token(sim)).get("/v1/customers").status_code == 200


def test_trusted_location_issues_tokens_without_mfa(fresh_sim):
    sim = fresh_sim
    refresh_token = consent(sim)["refresh_token"]
    sim.control.set_settings(trusted_location_skips_mfa=True)
    result = msal_app(sim).acquire_token_by_refresh_token(refresh_token, [PC_SCOPE])
    response = PartnerCenterClient(sim, result["access_token"]).get("/v1/customers")
    assert response.status_code == 401 and response.json()["code"] == 900421


@pytest.mark.parametrize("reason,error,code", [
    ("expired", "invalid_grant", 700082), ("revoked", "invalid_grant", 50173),
    ("mfa", "interaction_required", 50076), ("conditional_access", "invalid_grant", 53003)])
def test_refresh_token_failures(fresh_sim, reason, error, code):
    sim = fresh_sim
    refresh_token = consent(sim)["refresh_token"]
    sim.control.fail_refresh_tokens(reason)
    result = msal_app(sim).acquire_token_by_refresh_token(refresh_token, [PC_SCOPE])
    assert result.get("error") == error and code in result.get("error_codes", []), result
    sim.control.fail_refresh_tokens("none")
    assert "access_token" in msal_app(sim).acquire_token_by_refresh_token(refresh_token, [PC_SCOPE])


def test_mfa_reports_count_app_user_requests(fresh_sim):
    sim = fresh_sim
    without = PartnerCenterClient(sim, consent(sim, mfa=False)["access_token"])
    assert without.get("/v1/customers").status_code == 401
    with_mfa = PartnerCenterClient(sim, consent(sim)["access_token"])
    assert with_mfa.get("/v1/customers").status_code == 200
    status = with_mfa.get("/v1/applicationmfaadoptionstatus").json()
    row = status["items"][0]
    assert row["applicationId"] == sim.client_id and row["totalRequestCount"] >= 2
    assert row["totalRequestCount"] - row["mfaCompliantRequestCount"] >= 1
    principals = with_mfa.get("/v1/nonMfaCompliantPartnerPrincipals").json()["items"]
    assert principals[0]["userPrincipalName"] == sim.integration_user and principals[0]["requestCount"] >= 1
    truth = sim.control.mfa_requests()
    assert truth["requests"][0]["totalRequestCount"] == row["totalRequestCount"] + 1  # + the report call itself
    assert truth["nonMfaCompliantPrincipals"][0]["requestCount"] == principals[0]["requestCount"]
    refused = PartnerCenterClient(sim, app_only_token(sim)).get("/v1/applicationmfaadoptionstatus")
    assert refused.status_code == 403 and refused.json()["code"] == 900329
