"""The admin page's security over real HTTP through `pcsync serve` (which checks function keys as
the Functions host does): nothing without credentials, a forged principal refused, no cross-site
way in."""
from __future__ import annotations

import base64
import json

import pytest

# every JSON route the admin page calls, and the other changes an attacker would want
PAGE_CALLS = [
    ("GET", "/api/providers"), ("GET", "/api/providers/guarded-us"), ("PUT", "/api/providers/guarded-us"),
    ("DELETE", "/api/providers/guarded-us"), ("GET", "/api/providers/guarded-us/consent-link"),
    ("POST", "/api/providers/guarded-us/verify"), ("GET", "/api/providers/guarded-us/health?days=30"),
    ("GET", "/api/invoices?provider=guarded-us"), ("GET", "/api/alerts"), ("POST", "/api/writebacks"),
    ("GET", "/api/writebacks/some-key"), ("GET", "/api/writebacks?provider=guarded-us"),
    ("POST", "/api/writebacks/some-key/retry"), ("POST", "/api/writebacks/some-key/dismiss"),
    ("GET", "/api/admin/shell"),
]
FORGED = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [
    {"typ": "roles", "val": "pcsync.Admin"}, {"typ": "name", "val": "mallory@evil.example"}]}).encode()).decode()


@pytest.fixture(scope="module")
def guarded(serve):
    body = {"name": "Guarded PC", "countryCode": "US", "currencyCode": "USD", "tenantId": serve.simulator.tenant_id}
    assert serve.request("PUT", "/api/providers/guarded-us", json=body).status_code in (200, 201)
    return "guarded-us"


@pytest.mark.parametrize("method,path", PAGE_CALLS)
@pytest.mark.parametrize("headers", [{}, {"X-MS-CLIENT-PRINCIPAL": FORGED, "X-PCSYNC-Admin": "1"},
                                     {"x-functions-key": "not-the-key"}])
def test_no_json_route_answers_without_the_function_key(serve, guarded, method, path, headers):
    response = serve.request(method, path, key=False, headers={"Origin": "https://evil.example", **headers},
                             json={"name": "Hijacked"} if method in ("PUT", "POST") else None)
    assert response.status_code == 401, (method, path, response.text[:200])
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Guarded PC" not in response.text


@pytest.mark.parametrize("headers", [{}, {"x-functions-key": "not-the-key"}, {"X-PCSYNC-Admin": "1"}])
def test_the_page_without_credentials_is_refused_with_the_key_prompt_and_nothing_else(serve, guarded, headers):
    response = serve.get("/api/admin", key=False, headers=headers)
    assert response.status_code == 401 and 'id="function-key"' in response.text
    assert "guarded-us" not in response.text and "Guarded PC" not in response.text
    assert serve.function_key not in response.text
    assert 'id="app"' not in response.text and 'id="provider-form"' not in response.text  # the page comes with the key
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    shell = serve.get("/api/admin/shell")  # what the prompt's script fetches with the key
    assert shell.status_code == 200 and 'id="provider-form"' in shell.text and "guarded-us" not in shell.text


@pytest.mark.parametrize("path", ["/api/admin", "/api/admin/shell", "/api/admin/static/admin.js",
                                  "/api/admin/api/providers"])
def test_a_forged_principal_is_refused(serve, guarded, path):
    response = serve.get(path, key=False, headers={"X-MS-CLIENT-PRINCIPAL": FORGED, "X-PCSYNC-Admin": "1"})
    assert response.status_code == 401 and "guarded-us" not in response.text


def test_the_gateway_gives_nothing_with_the_function_key_setting(serve, guarded):
    for method in ("GET", "PUT"):
        response = serve.request(method, "/api/admin/api/providers/guarded-us", key=False,
                                 headers={"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "same-origin"},
                                 json={"name": "Hijacked"} if method == "PUT" else None)
        assert response.status_code == 404 and "Guarded PC" not in response.text
    assert serve.get("/api/providers/guarded-us").json()["name"] == "Guarded PC"
