"""msal and azure-identity against the simulated Entra ID."""
from __future__ import annotations

import warnings
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from conftest import PC_SCOPE, REDIRECT_URI, consent, msal_app


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _flow(app, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return app.initiate_auth_code_flow([PC_SCOPE], redirect_uri=REDIRECT_URI, **kw)


def test_openid_configuration_and_jwks_verify_tokens(sim):
    http = sim.session()
    config = http.get(f"{sim.authority_host}/{sim.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert config["issuer"] == f"{sim.authority_host}/{sim.tenant_id}/v2.0"
    keys = http.get(config["jwks_uri"]).json()["keys"]
    token = consent(sim)["access_token"]
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWK(next(k for k in keys if k["kid"] == header["kid"])).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience="https://api.partnercenter.microsoft.com",
                        issuer=config["issuer"])
    assert claims["tid"] == sim.tenant_id and claims["upn"] == sim.integration_user
    assert claims["amr"] == ["pwd", "mfa"] and claims["scp"] == "user_impersonation"


def test_html_sign_in_page_without_mfa(sim):
    app, http = msal_app(sim), sim.session()
    flow = _flow(app)
    page = http.get(flow["auth_uri"])
    assert page.status_code == 200 and 'value="signin_mfa"' in page.text
    form = dict(parse_qsl(urlsplit(flow["auth_uri"]).query), action="signin_nomfa")
    answer = http.post(flow["auth_uri"].split("?")[0], data=form, allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"].startswith(REDIRECT_URI)
    result = app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(answer.headers["Location"]).query)))
    assert _claims(result["access_token"])["amr"] == ["pwd"]
    assert result["id_token_claims"]["preferred_username"] == sim.integration_user


def test_form_post_response_mode(sim):
    app, http = msal_app(sim), sim.session()
    flow = _flow(app, response_mode="form_post")
    form = dict(parse_qsl(urlsplit(flow["auth_uri"]).query), action="signin_mfa")
    page = http.post(flow["auth_uri"].split("?")[0], data=form)
    assert page.status_code == 200 and 'name="code"' in page.text and f'action="{REDIRECT_URI}"' in page.text


def test_decline_returns_access_denied(sim):
    flow = _flow(msal_app(sim))
    params = dict(parse_qsl(urlsplit(sim.control.sign_in(flow["auth_uri"], mfa="decline")).query))
    assert params["error"] == "access_denied" and params["error_description"].startswith("AADSTS65004")
    assert params["state"] == flow["state"]


def test_code_is_single_use_and_needs_matching_pkce(sim):
    app = msal_app(sim)
    flow = _flow(app)
    params = dict(parse_qsl(urlsplit(sim.control.sign_in(flow["auth_uri"])).query))
    http = sim.session()
    token_url = f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token"
    base = {"grant_type": "authorization_code", "client_id": sim.client_id, "client_secret": sim.client_secret,
            "code": params["code"], "redirect_uri": REDIRECT_URI, "scope": PC_SCOPE}
    bad = http.post(token_url, data={**base, "code_verifier": "wrong-verifier"}).json()
    assert bad["error"] == "invalid_grant" and bad["error_codes"] == [501481]
    good = http.post(token_url, data={**base, "code_verifier": flow["code_verifier"]})
    assert good.status_code == 200
    again = http.post(token_url, data={**base, "code_verifier": flow["code_verifier"]}).json()
    assert again["error"] == "invalid_grant"
    for key in ("error_description", "timestamp", "trace_id", "correlation_id"):
        assert key in again


def test_redirect_uri_must_match_the_code(sim):
    flow = _flow(msal_app(sim))
    params = dict(parse_qsl(urlsplit(sim.control.sign_in(flow["auth_uri"])).query))
    answer = sim.session().post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": sim.client_id, "client_secret": sim.client_secret,
        "code": params["code"], "redirect_uri": "https://elsewhere.example/cb", "code_verifier": flow["code_verifier"]})
    assert answer.status_code == 400 and answer.json()["error_codes"] == [50011]


def test_refresh_rotation_inactivity_and_revocation(fresh_sim):
    sim = fresh_sim
    app = msal_app(sim)
    first = consent(sim)["refresh_token"]
    second = app.acquire_token_by_refresh_token(first, [PC_SCOPE])
    assert second["refresh_token"] != first
    assert "access_token" in app.acquire_token_by_refresh_token(first, [PC_SCOPE])   # old one still works
    assert _claims(second["access_token"])["amr"] == ["pwd", "mfa"]                  # MFA carried over

    sim.control.advance_clock(days=89)
    third = app.acquire_token_by_refresh_token(second["refresh_token"], [PC_SCOPE])
    assert "access_token" in third                                                   # sliding window
    sim.control.advance_clock(days=91)
    expired = app.acquire_token_by_refresh_token(third["refresh_token"], [PC_SCOPE])
    assert expired["error"] == "invalid_grant" and expired["error_codes"] == [700082]
    assert "AADSTS700082" in expired["error_description"]

    fourth = consent(sim)["refresh_token"]
    assert sim.control.revoke_refresh_tokens() >= 1
    revoked = app.acquire_token_by_refresh_token(fourth, [PC_SCOPE])
    assert revoked["error"] == "invalid_grant" and revoked["error_codes"] == [50173]


def test_client_credentials_tokens(sim):
    app = msal_app(sim)
    graph = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    claims = _claims(graph["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com" and claims["roles"] == ["PartnerBilling.Read.All"]
    assert "scp" not in claims and claims["idtyp"] == "app"
    bad = app.acquire_token_for_client(["https://graph.microsoft.com/User.Read"])
    assert bad["error"] == "invalid_scope"


def test_azure_identity_client_secret_credential(sim):
    credential = ClientSecretCredential(sim.tenant_id, sim.client_id, sim.client_secret,
                                        authority=sim.authority_host, disable_instance_discovery=True,
                                        connection_verify=sim.ca_bundle)
    token = credential.get_token("https://vault.azure.net/.default")
    assert _claims(token.token)["aud"] == "https://vault.azure.net"
    wrong = ClientSecretCredential(sim.tenant_id, sim.client_id, "not-the-secret", authority=sim.authority_host,
                                   disable_instance_discovery=True, connection_verify=sim.ca_bundle)
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        wrong.get_token("https://vault.azure.net/.default")
