"""Security of the admin page through the registered functions: who may call what, a forged
principal header, cross-site requests, and the headers every answer carries."""
import base64
import json

import functools

import pytest

from shared.settings import AdminAuth
from tests.support import function_caller, http_request

TENANT = "3b33e682-00c3-41ee-9dd2-a548adf56438"
VALID = {"name": "Contoso PC", "countryCode": "US", "currencyCode": "USD", "tenantId": TENANT}
HOST = "pcsync.example.net"
# routes anonymous at the host, each checking the caller itself (or, for the consent pages, the
# flow's state being the credential)
ANONYMOUS_ROUTES = {"admin", "admin/static/{name}", "admin/api/{*path}", "admin/consent", "consent/callback"}


def principal(*roles, name="ann@contoso.test", claims=None):
    body = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles",
            "claims": claims if claims is not None else
            [{"typ": "name", "val": name}] + [{"typ": "roles", "val": r} for r in roles]}
    return base64.b64encode(json.dumps(body).encode()).decode()


request = functools.partial(http_request, base=f"https://{HOST}")


@pytest.fixture
def call(registered_functions):
    return function_caller(registered_functions)


@pytest.fixture
def app_service(runtime):
    from bootstrap import install_services

    services = runtime.derive(admin_auth=AdminAuth.APP_SERVICE)
    install_services(services)
    yield services
    install_services(runtime)


def _gateway(method, path, *, headers=None, body=b""):
    return request(method, f"admin/api/{path}", route_params={"path": path}, headers=headers, body=body)


def test_every_other_http_route_needs_the_function_key(registered_functions):
    for name, function in registered_functions.items():
        trigger = function.get_trigger().get_dict_repr()
        if trigger.get("type") != "httpTrigger":
            continue
        level = str(trigger["authLevel"]).split(".")[-1].upper()
        if trigger["route"] in ANONYMOUS_ROUTES:
            assert level == "ANONYMOUS", name
        else:
            assert level == "FUNCTION", (name, trigger["route"])


# -- function key mode (the default) --------------------------------------------------------------

@pytest.mark.parametrize("name,route,route_params", [("admin_page", "admin", {}), ("admin_shell", "admin/shell", {}),
                                                     ("admin_static", "admin/static/admin.js", {"name": "admin.js"}),
                                                     ("admin_api", "admin/api/providers", {"path": "providers"})])
@pytest.mark.parametrize("header", ["X-MS-CLIENT-PRINCIPAL", "x-ms-client-principal", "X-MS-CLIENT-PRINCIPAL-NAME"])
def test_a_forged_principal_is_refused_without_app_service_authentication(call, runtime, name, route, route_params,
                                                                          header):
    runtime.providers.put_provider("contoso", VALID)
    forged = {header: principal("pcsync.Admin"), "X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "same-origin"}
    response, body = call(name, request("GET", route, route_params=route_params, headers=forged))
    assert response.status_code == 401 and "contoso" not in body
    assert "App Service Authentication is not in front" in body


def test_the_page_without_credentials_is_refused_with_the_key_prompt(call, runtime):
    runtime.providers.put_provider("contoso", VALID)
    response, body = call("admin_page", request("GET", "admin"))
    assert response.status_code == 401 and 'id="function-key"' in body
    assert "contoso" not in body and 'id="app"' not in body


def test_the_gateway_is_off_with_the_function_key(call, runtime):
    runtime.providers.put_provider("contoso", VALID)
    response, body = call("admin_api", _gateway("GET", "providers", headers={"X-PCSYNC-Admin": "1"}))
    assert response.status_code == 404 and "contoso" not in body


# -- App Service Authentication -------------------------------------------------------------------

@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Reader")}, 403),
    ({"X-MS-CLIENT-PRINCIPAL": principal()}, 403),
    ({"X-MS-CLIENT-PRINCIPAL": "not base64 json!"}, 401),
    ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"[1, 2]").decode()}, 401),
    ({"X-MS-CLIENT-PRINCIPAL": principal(claims="roles")}, 401),
    ({"X-MS-CLIENT-PRINCIPAL": "A" * 20000}, 401),
])
@pytest.mark.parametrize("name,route,route_params", [("admin_page", "admin", {}),
                                                     ("admin_static", "admin/static/admin.js", {"name": "admin.js"}),
                                                     ("admin_api", "admin/api/providers", {"path": "providers"})])
def test_app_service_mode_needs_a_signed_in_admin_with_the_role(call, app_service, headers, status, name, route,
                                                                route_params):
    app_service.providers.put_provider("contoso", VALID)
    response, body = call(name, request("GET", route, route_params=route_params,
                                        headers={**headers, "X-PCSYNC-Admin": "1"}))
    assert response.status_code == status and "contoso" not in body


def test_app_service_mode_serves_the_page_and_the_api_to_the_admin(call, app_service):
    app_service.providers.put_provider("contoso", VALID)
    admin = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin", name="<b>ann</b>@contoso.test"), "X-PCSYNC-Admin": "1"}
    response, body = call("admin_page", request("GET", "admin", headers=admin))
    assert response.status_code == 200 and 'data-api="/api/admin/api/"' in body
    assert "&lt;b&gt;ann&lt;/b&gt;@contoso.test" in body and "<b>ann</b>" not in body  # escaped
    response, body = call("admin_api", _gateway("GET", "providers", headers=admin))
    assert response.status_code == 200 and json.loads(body)["providers"][0]["id"] == "contoso"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_admin_role_is_a_setting(call, app_service):
    from bootstrap import install_services

    install_services(app_service.derive(admin_role="Partner.Ops"))
    ops = {"X-MS-CLIENT-PRINCIPAL": principal("Partner.Ops")}
    assert call("admin_page", request("GET", "admin", headers=ops))[0].status_code == 200
    admin = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin")}
    assert call("admin_page", request("GET", "admin", headers=admin))[0].status_code == 403


SAME_ORIGIN_PUT = {"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "same-origin", "Origin": f"https://{HOST}"}


@pytest.mark.parametrize("headers", [
    {"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "same-site", "Origin": f"https://other.{HOST}"},
    {"X-PCSYNC-Admin": "1", "Origin": "https://evil.example"},
    {"X-PCSYNC-Admin": "1"},  # neither Sec-Fetch-Site nor Origin: not what a browser sends
    {"Sec-Fetch-Site": "same-origin", "Origin": f"https://{HOST}"},  # a plain form post
    {"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "cross-site"},
])
def test_a_cross_site_change_is_refused(call, app_service, headers):
    app_service.providers.put_provider("contoso", VALID)
    headers = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin"), **headers}
    body = json.dumps(VALID | {"name": "Hijacked"}).encode()
    response, text = call("admin_api", _gateway("PUT", "providers/contoso", headers=headers, body=body))
    assert response.status_code == 403 and json.loads(text)["reason"] == "cross_site"
    assert app_service.providers.get_provider("contoso").name == "Contoso PC"


def test_a_same_origin_change_goes_through_the_same_handler(call, app_service):
    admin = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin"), **SAME_ORIGIN_PUT}
    response, text = call("admin_api", _gateway("PUT", "providers/contoso", headers=admin,
                                                body=json.dumps(VALID | {"countryCode": "ZZ"}).encode()))
    assert response.status_code == 400 and set(json.loads(text)["problems"]) == {"countryCode"}
    response, text = call("admin_api", _gateway("PUT", "providers/contoso", headers=admin,
                                                body=json.dumps(VALID).encode()))
    assert response.status_code == 201 and app_service.providers.get_provider("contoso").name == "Contoso PC"


@pytest.mark.parametrize("method,path", [("DELETE", "providers/contoso"), ("GET", "writebacks/abc"),
                                         ("POST", "webhooks/partner-center/contoso"), ("GET", "admin"),
                                         ("GET", "providers/contoso/../../admin"), ("PUT", "providers"),
                                         ("GET", "consent/callback")])
def test_the_gateway_serves_only_the_page_routes(call, app_service, method, path):
    app_service.providers.put_provider("contoso", VALID)
    admin = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin"), **SAME_ORIGIN_PUT}
    response, _ = call("admin_api", _gateway(method, path, headers=admin))
    assert response.status_code == 404
    assert app_service.providers.get_provider("contoso").enabled is True


@pytest.mark.parametrize("name,route,route_params", [("admin_page", "admin", {}),
                                                     ("admin_static", "admin/static/admin.js", {"name": "admin.js"}),
                                                     ("admin_consent_start", "admin/consent", {})])
def test_answers_carry_a_strict_content_security_policy(call, runtime, name, route, route_params):
    response, _ = call(name, request("GET", route, route_params=route_params))
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("name,route,route_params", [("admin_page", "admin", {}),
                                                     ("admin_api", "admin/api/providers", {"path": "providers"})])
def test_malformed_settings_let_nobody_in_and_name_no_value(call, runtime, monkeypatch, name, route, route_params):
    from bootstrap import install_services

    install_services(None)  # the next call builds the Services from this environment
    monkeypatch.setenv("PCSYNC_STORAGE", runtime.settings.storage.connection_string)
    monkeypatch.setenv("PCSYNC_ADMIN_AUTH", "trust-everyone")
    forged = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin"), "X-PCSYNC-Admin": "1"}
    response, body = call(name, request("GET", route, route_params=route_params, headers=forged))
    assert response.status_code == 500 and "trust-everyone" not in body and "AccountKey" not in body
    assert "app settings cannot be used" in body


def test_the_gateway_serves_the_write_back_log_and_its_retry_and_dismiss(call, app_service):
    admin = {"X-MS-CLIENT-PRINCIPAL": principal("pcsync.Admin"), **SAME_ORIGIN_PUT}
    response, text = call("admin_api", request("GET", "admin/api/writebacks", route_params={"path": "writebacks"},
                                               headers=admin, params={"provider": "contoso", "state": "blocked"}))
    listing = json.loads(text)
    assert response.status_code == 200 and listing["items"] == [] and listing["next"] is None
    assert listing["states"]["blocked"] == ["dismiss"]
    for action in ("retry", "dismiss"):
        response, text = call("admin_api", _gateway("POST", f"writebacks/no-such-key/{action}", headers=admin))
        # the write-back handler answered (an unknown key), not the gateway's "not served"
        assert response.status_code == 404 and "not served" not in text and "no-such-key" in text
