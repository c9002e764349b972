"""The auth functions called through the registered app with real HttpRequest objects
(bad input and refusals; the full consent round trip against the simulator is in
tests/integration/test_auth_simulator.py)."""
import json
import uuid
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest

TENANT = "3b33e682-00c3-41ee-9dd2-a548adf56438"
VALID = {"name": "Contoso PC", "countryCode": "US", "currencyCode": "USD", "tenantId": TENANT}


def request(method, route, *, params=None, route_params=None, body=b"", headers=None):
    return func.HttpRequest(method=method, url=f"http://localhost:7071/api/{route}", body=body,
                            params=params or {}, route_params=route_params or {}, headers=headers or {})


@pytest.fixture
def call(registered_functions):
    def invoke(name, req):
        response = registered_functions[name].get_user_function()(req)
        body = response.get_body().decode()
        return response, body
    return invoke


def test_functions_are_registered_with_the_right_routes_and_auth_levels(registered_functions):
    expected = {
        "consent_link": ("providers/{id}/consent-link", ["GET"], "FUNCTION"),
        "consent_callback": ("consent/callback", ["GET", "POST"], "ANONYMOUS"),
        "verify_connectivity": ("providers/{id}/verify", ["POST"], "FUNCTION"),
    }
    for name, (route, methods, level) in expected.items():
        trigger = registered_functions[name].get_trigger().get_dict_repr()
        assert trigger["route"] == route
        assert sorted(str(m) for m in trigger["methods"]) == methods
        assert str(trigger["authLevel"]).split(".")[-1].upper() == level


@pytest.mark.parametrize("name,method,route", [("consent_link", "GET", "consent-link"),
                                                ("verify_connectivity", "POST", "verify")])
def test_unknown_provider_is_404_json(call, runtime, name, method, route):
    response, body = call(name, request(method, f"providers/nobody/{route}", route_params={"id": "nobody"}))
    assert response.status_code == 404 and "nobody" in json.loads(body)["error"]


@pytest.mark.parametrize("name,method", [("consent_link", "GET"), ("verify_connectivity", "POST")])
def test_invalid_provider_id_is_400_json(call, runtime, name, method):
    response, body = call(name, request(method, "providers/x", route_params={"id": "Bad_ID!"}))
    assert response.status_code == 400 and "id" in json.loads(body)["problems"]


def test_consent_link_for_incomplete_provider_is_409_naming_the_fields(call, runtime):
    runtime.tables.table("providers").upsert_entity(
        {"PartitionKey": "provider", "RowKey": "half", "name": "Half", "country_code": "US",
         "currency_code": "USD", "tenant_id": ""})
    response, body = call("consent_link", request("GET", "providers/half/consent-link", route_params={"id": "half"}))
    payload = json.loads(body)
    assert response.status_code == 409 and set(payload["problems"]) == {"tenantId"}
    assert "fill in" in payload["error"]


def test_consent_link_without_app_settings_is_a_clear_500(call, runtime):
    runtime.providers.put_provider("contoso", VALID)
    response, body = call("consent_link", request("GET", "providers/contoso/consent-link",
                                                  route_params={"id": "contoso"}))
    assert response.status_code == 500 and "client_id" in json.loads(body)["error"]
    assert "Traceback" not in body


def test_consent_link_rejects_a_bad_login_hint(call, runtime):
    response, body = call("consent_link", request("GET", "providers/contoso/consent-link",
                                                  params={"loginHint": "no-at-sign"}, route_params={"id": "contoso"}))
    assert response.status_code == 400 and "loginHint" in json.loads(body)["problems"]


@pytest.mark.parametrize("params", [{}, {"state": "forged", "code": "abc"}, {"error": "access_denied"}])
def test_callback_with_unknown_state_is_a_400_page(call, runtime, params):
    response, body = call("consent_callback", request("GET", "consent/callback", params=params))
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "Consent not completed" in body and "Traceback" not in body


def test_callback_reads_form_post_bodies(call, runtime):
    response, body = call("consent_callback", request(
        "POST", "consent/callback", body=b"code=abc&state=forged",
        headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert response.status_code == 400 and "not belong to a consent link" in body


def test_callback_refuses_oversized_bodies(call, runtime):
    response, _ = call("consent_callback", request("POST", "consent/callback", body=b"x" * 70_000))
    assert response.status_code == 400


# -- the whole round trip through the functions, against the simulator ---------------------------

@pytest.fixture
def sim_provider(sim_runtime, simulator):
    provider_id = f"fn-{uuid.uuid4().hex[:8]}"
    sim_runtime.providers.put_provider(provider_id, VALID | {"tenantId": simulator.tenant_id})
    yield provider_id
    sim_runtime.forget_provider_state(provider_id)


def form_post(redirect: str) -> func.HttpRequest:
    """What the browser sends to the callback when Entra answers with response_mode=form_post."""
    parts = urlsplit(redirect)
    return func.HttpRequest(method="POST", url=f"{parts.scheme}://{parts.netloc}{parts.path}",
                            body=parts.query.encode(), params={}, route_params={},
                            headers={"Content-Type": "application/x-www-form-urlencoded"})


def link_for(call, provider_id):
    response, body = call("consent_link", request("GET", f"providers/{provider_id}/consent-link",
                                                  route_params={"id": provider_id}))
    assert response.status_code == 200, body
    return json.loads(body)


def test_consent_then_verify_through_the_functions(call, sim_runtime, simulator, sim_provider):
    link = link_for(call, sim_provider)
    assert "MFA" in " ".join(link["instructions"]) and link["expiresAt"]
    redirect = simulator.control.sign_in(link["consentUrl"], True)

    response, body = call("consent_callback", form_post(redirect))
    assert response.status_code == 200 and response.mimetype == "text/html" and "Consent complete" in body
    response, body = call("consent_callback", form_post(redirect))
    assert response.status_code == 400 and "already used" in body

    response, body = call("verify_connectivity", request("POST", f"providers/{sim_provider}/verify",
                                                         route_params={"id": sim_provider}))
    report = json.loads(body)
    assert response.status_code == 200 and report["passed"] is True, report
    assert {c["name"] for c in report["checks"]} >= {"token_refresh", "mfa_claim", "customers_read"}
    assert sim_runtime.providers.get_provider(sim_provider).verified_at


def test_sign_in_without_mfa_through_the_functions(call, sim_runtime, simulator, sim_provider):
    redirect = simulator.control.sign_in(link_for(call, sim_provider)["consentUrl"], False)
    response, body = call("consent_callback", request("GET", "consent/callback",
                                                      params=dict(parse_qsl(urlsplit(redirect).query))))
    assert response.status_code == 403 and "MFA must be enabled" in body and "every sign-in" in body
    assert sim_runtime.providers.get_provider(sim_provider).consent_status == "pending"
