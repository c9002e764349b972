"""The admin page in headless Chromium against `pcsync serve --simulator`: every set-up step as a
partner's engineer does it, with a screenshot of each step under test-output/browser/<test>/.

Not here yet: retrying a blocked write-back. The write-back log's list, retry and dismiss routes
are built on another branch; until they are registered the page shows the section as not
available (checked in the health test)."""
from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
from urllib.parse import parse_qsl, urlsplit

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TENANT_PLACEHOLDER = "not-a-guid"
ROLES = ["SalesAgent", "BillingAdmin"]


def open_admin(context, serve, shots=None):
    """The admin page, signed in with the function key (typed once for this browser session)."""
    page = context.new_page()
    page.goto(serve.admin_url)
    page.wait_for_selector("#signin:not([hidden])")
    if shots:
        shots(page, "asks for the function key")
    page.fill("#function-key", serve.function_key)
    page.click("#signin-button")
    page.wait_for_selector("#app:not([hidden])")
    return page


def put_provider(serve, provider_id, **fields):
    body = {"name": f"Browser {provider_id}", "countryCode": "US", "currencyCode": "USD",
            "tenantId": serve.simulator.tenant_id, **fields}
    response = serve.request("PUT", f"/api/providers/{provider_id}", json=body)
    assert response.status_code in (200, 201), response.text


def consent_by_api(serve, provider_id):
    """Consent without the browser (for tests about later steps): the link, the simulator's
    sign-in with MFA, and the form post Entra makes to the callback."""
    link = serve.get(f"/api/providers/{provider_id}/consent-link").json()
    redirect = serve.simulator.control.sign_in(link["consentUrl"], True)
    parts = urlsplit(redirect)
    answer = serve.request("POST", parts.path, key=False, data=dict(parse_qsl(parts.query)))
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def consented(serve):
    put_provider(serve, "consented-us")
    consent_by_api(serve, "consented-us")
    return "consented-us"


def test_the_form_shows_the_servers_message_next_to_each_field_then_saves(context, serve, shots):
    page = open_admin(context, serve, shots)
    page.click("#new-provider")
    page.fill("#field-id", "form-us")
    page.fill("#field-name", "Form test")
    page.fill("#field-countryCode", "ZZ")
    page.fill("#field-currencyCode", "ZZZ")
    page.fill("#field-tenantId", TENANT_PLACEHOLDER)
    page.fill("#field-billingStartDay", "40")
    page.fill("#field-resellerRelationshipUrl", "http://not-https.example")
    shots(page, "bad values")
    page.click("#save")
    page.wait_for_selector("#problem-tenantId:not(:empty)")
    shots(page, "per-field messages")
    assert "GUID" in page.text_content("#problem-tenantId")
    assert "country code" in page.text_content("#problem-countryCode")
    assert "currency code" in page.text_content("#problem-currencyCode")
    assert "1 to 31" in page.text_content("#problem-billingStartDay")
    assert "https" in page.text_content("#problem-resellerRelationshipUrl")
    assert page.text_content("#problem-name") == ""
    assert page.is_hidden("#generate-consent")  # only once the provider is saved

    page.fill("#field-countryCode", "US")
    page.fill("#field-currencyCode", "USD")
    page.fill("#field-tenantId", serve.simulator.tenant_id)
    page.fill("#field-billingStartDay", "1")
    page.fill("#field-resellerRelationshipUrl", "")
    page.select_option("#field-azureSpecializations", ["kubernetes", "analytics"])
    page.click("#save")
    page.wait_for_selector("#form-status:has-text('Created.')")
    page.wait_for_selector("tr[data-provider='form-us']")
    shots(page, "saved and listed")
    assert page.text_content("#problem-tenantId") == ""
    assert page.is_visible("#generate-consent") and page.is_visible("#verify")
    stored = serve.get("/api/providers/form-us").json()
    assert stored["billingStartDay"] == 1 and sorted(stored["azureSpecializations"]) == ["analytics", "kubernetes"]


def open_provider(page, provider_id):
    page.click(f"tr[data-provider='{provider_id}'] button")
    page.wait_for_selector(f"#form-title:has-text('{provider_id}')")


def _consent_link(page, shots, step):
    page.click("#generate-consent")
    page.wait_for_selector("#consent-dialog[open]")
    shots(page, step)
    link = page.input_value("#consent-link")
    instructions = page.text_content("#consent-instructions")
    assert "private" in instructions and "MFA" in instructions and "Sales Agent" in instructions
    assert "x-functions-key" not in link and "code=" not in link
    return link


def _sign_in(browser_context, link, shots, button):
    """The integration user in a private window: the start page, then the simulator's sign-in."""
    private = browser_context.browser.new_context(ignore_https_errors=True)
    try:
        window = private.new_page()
        window.goto(link)
        window.wait_for_selector("#start-consent")
        shots(window, "consent start page")
        window.click("#start-consent")
        window.wait_for_selector(button)
        shots(window, "simulator sign-in")
        window.click(button)
        window.wait_for_selector("h1:has-text('Consent')")
        shots(window, "callback page")
        return window.text_content("body")
    finally:
        private.close()


def test_consent_with_mfa_becomes_active_without_a_reload(context, serve, shots):
    put_provider(serve, "consent-us")
    page = open_admin(context, serve)
    open_provider(page, "consent-us")
    link = _consent_link(page, shots, "consent link dialog")
    page.click("#copy-link")
    assert "/api/admin/consent?state=" in link
    answer = _sign_in(context, link, shots, "#signin-mfa")
    assert "Consent complete" in answer
    page.wait_for_selector("#dialog-consent-state:has-text('Consent is active')", timeout=30_000)
    shots(page, "consent active in the dialog")
    page.click("#close-dialog")
    page.wait_for_selector("tr[data-provider='consent-us'] .consent-status:has-text('active')")
    assert page.get_attribute("#consent-state", "data-status") == "active"
    days = page.text_content("tr[data-provider='consent-us'] .days-left")
    assert days.isdigit() and 85 <= int(days) <= 90
    shots(page, "provider list shows the consent")


def test_a_sign_in_without_mfa_is_refused_and_shown(context, serve, shots):
    put_provider(serve, "nomfa-us")
    page = open_admin(context, serve)
    open_provider(page, "nomfa-us")
    link = _consent_link(page, shots, "consent link dialog")
    answer = _sign_in(context, link, shots, "#signin-nomfa")
    assert "Consent not completed" in answer and "MFA" in answer
    page.wait_for_timeout(2500)  # a poll or more
    assert "pending" in page.text_content("#dialog-consent-state")
    shots(page, "admin page still pending")
    assert serve.get("/api/providers/nomfa-us").json()["consent"]["status"] == "pending"


def test_verify_with_a_role_removed_names_the_failed_check_and_the_fix(context, serve, shots, consented):
    control = serve.simulator.control
    control.set_integration_user(roles=["SalesAgent"])
    try:
        page = open_admin(context, serve)
        open_provider(page, consented)
        page.click("#verify")
        page.wait_for_selector("#verify-results tr[data-check='invoices_read']")
        shots(page, "verify with billing admin removed")
        failed = page.locator("#verify-results tr.fail")
        assert failed.count() == 1
        assert page.get_attribute("#verify-results tr.fail", "data-check") == "invoices_read"
        assert "Billing Admin" in page.text_content("tr[data-check='invoices_read'] .fix")
        assert page.text_content("tr[data-check='invoices_read'] .redo").startswith("Step 5")
        assert page.text_content("tr[data-check='customers_read'] .result") == "pass"
    finally:
        control.set_integration_user(roles=ROLES)
    page.click("#verify")
    page.wait_for_selector("#verify-summary:has-text('all checks passed')")
    shots(page, "verify after the role is back")


def test_a_sync_shows_in_the_health_chart(context, serve, shots, consented):
    for stream in ("customers", "invoices"):
        run = subprocess.run([sys.executable, "-m", "cli", "--settings", str(serve.settings_path), "sync",
                              "--provider", consented, "--stream", stream], capture_output=True, text=True,
                             timeout=240, cwd=ROOT)
        assert run.returncode == 0, run.stdout + run.stderr
    page = open_admin(context, serve)
    open_provider(page, consented)
    page.wait_for_selector("#health-svg g[data-metric='rowsWritten'] rect")
    page.wait_for_selector("#invoices tr[data-invoice]")
    shots(page, "health chart and invoices")
    bars = page.locator("#health-svg g[data-metric='rowsWritten'] rect.bar")
    assert bars.count() == 30
    written = [int(bars.nth(i).get_attribute("data-value")) for i in range(30)]
    assert sum(written[-2:]) > 0 and sum(written[:-2]) == 0  # today (or yesterday, just before midnight)
    tallest = bars.nth(written.index(max(written)))
    assert float(tallest.get_attribute("height")) > 0
    calls = page.locator("#health-svg g[data-metric='calls'] rect.bar")
    assert sum(int(calls.nth(i).get_attribute("data-value")) for i in (28, 29)) > 0
    last = page.text_content(f"tr[data-provider='{consented}'] .last-runs")
    assert "customers: succeeded" in last and "invoices: succeeded" in last
    # the write-back log's routes come from another branch: until then the section says so
    page.wait_for_selector("#writebacks-status:not(:empty)")
    status = page.text_content("#writebacks-status")
    assert "not available" in status or "No write-backs" in status


@pytest.fixture(scope="module")
def app_service_serve(tmp_path_factory):
    """A second playground whose app believes App Service Authentication is in front: the browser
    context below adds the principal header as App Service Authentication would."""
    from devhost.testing import start_serve

    process = start_serve(tmp_path_factory.mktemp("serve-app-service"), simulator=True,
                          env={"PCSYNC_ADMIN_AUTH": "app_service"})
    try:
        yield process
    finally:
        process.stop()


def _principal(*roles):
    claims = [{"typ": "name", "val": "ann@contoso.test"}] + [{"typ": "roles", "val": r} for r in roles]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def test_behind_app_service_authentication_the_page_works_through_the_gateway(browser, app_service_serve, shots):
    serve = app_service_serve
    outsider = browser.new_context(extra_http_headers={"X-MS-CLIENT-PRINCIPAL": _principal("pcsync.Reader")})
    try:
        page = outsider.new_page()
        answer = page.goto(serve.admin_url)
        assert answer.status == 403 and page.locator("#app").count() == 0
        shots(page, "a user without the role")
    finally:
        outsider.close()
    admin = browser.new_context(extra_http_headers={"X-MS-CLIENT-PRINCIPAL": _principal("pcsync.Admin")})
    try:
        page = admin.new_page()
        page.goto(serve.admin_url)
        page.wait_for_selector("#app:not([hidden])")
        assert page.is_hidden("#signin") and "ann@contoso.test" in page.text_content("#who")
        page.fill("#field-id", "gateway-us")
        page.fill("#field-name", "Through the gateway")
        page.fill("#field-countryCode", "US")
        page.fill("#field-currencyCode", "USD")
        page.fill("#field-tenantId", "nope")
        page.click("#save")
        page.wait_for_selector("#problem-tenantId:not(:empty)")
        page.fill("#field-tenantId", serve.simulator.tenant_id)
        page.click("#save")
        page.wait_for_selector("tr[data-provider='gateway-us']")
        shots(page, "saved through the gateway")
    finally:
        admin.close()
    assert serve.get("/api/providers/gateway-us").json()["name"] == "Through the gateway"
