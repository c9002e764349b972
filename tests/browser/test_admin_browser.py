"""The admin page in headless Chromium against `pcsync serve --simulator`: every set-up step as a
partner's engineer does it, and retrying (or dismissing) the write-back that blocks later ones,
with a screenshot of each step under test-output/browser/<test>/."""
from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
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
    page.wait_for_selector("#writebacks-status:not(:empty)")
    assert "No write-backs" in page.text_content("#writebacks-status")


def submit_writeback(serve, body, state):
    """POST /api/writebacks, then wait until the host's queue trigger has brought it to ``state``."""
    response = serve.request("POST", "/api/writebacks", json=body)
    assert response.status_code == 202, response.text
    return wait_for_state(serve, body["idempotencyKey"], state)


def wait_for_state(serve, key, state, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        record = serve.get(f"/api/writebacks/{key}").json()
        if record["state"] == state or time.monotonic() > deadline:
            assert record["state"] == state, record
            return record
        time.sleep(0.5)


def refused_then_blocked(serve, provider_id, tag):
    """A seat reduction after the cancellation window (refused by the rules: ``rejected``) and a
    rename of the same subscription submitted after it, which waits behind it (``blocked``)."""
    control = serve.simulator.control
    customer = control.customers()[0]["id"]
    sub = control.add_subscription(customer, nce=True, software=False, status="active", days_ago=40, quantity=8,
                                   end_of_term="renew", ends_in_days=200)
    reduce = {"idempotencyKey": f"browser-reduce-{tag}", "provider": provider_id, "customer": customer,
              "operation": "subscription.quantity", "subscription": sub["id"], "quantity": 6}
    rename = {"idempotencyKey": f"browser-rename-{tag}", "provider": provider_id, "customer": customer,
              "operation": "subscription.friendlyName", "subscription": sub["id"], "friendlyName": f"Renamed {tag}"}
    assert "cancellation window" in submit_writeback(serve, reduce, "rejected")["reason"]
    assert submit_writeback(serve, rename, "blocked")["blockedBy"] == reduce["idempotencyKey"]
    return customer, sub["id"], reduce["idempotencyKey"], rename["idempotencyKey"]


def refresh_until(page, selector, timeout=60):
    """Press Filter (the log's refresh) until ``selector`` shows."""
    deadline = time.monotonic() + timeout
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} did not show"
        page.click("#writeback-filters button[type=submit]")
        page.wait_for_timeout(700)


def press(page, action, blocker, follower, *, then):
    """Retry or Dismiss on the blocker's row; the follower then succeeds, the blocker ends ``then``."""
    page.click(f"#writebacks tr[data-key='{blocker}'] button.{action}")
    page.wait_for_selector(f"#writebacks-status:has-text('{action}: {blocker} done')")
    refresh_until(page, f"#writebacks tr[data-key='{follower}'].state-succeeded")
    assert page.locator(f"#writebacks tr[data-key='{blocker}'] .state").text_content() == then


def test_a_failed_write_back_blocks_the_next_until_retried_or_dismissed(context, serve, shots, consented):
    control = serve.simulator.control
    customer, sid, blocker, follower = refused_then_blocked(serve, consented, "retry")
    page = open_admin(context, serve)
    open_provider(page, consented)
    page.wait_for_selector(f"#writebacks tr[data-key='{follower}']")
    shots(page, "a refused write-back and the one it blocks")
    blocked = page.locator(f"#writebacks tr[data-key='{follower}']")
    assert blocked.locator(".state").text_content() == "blocked"
    assert blocked.locator(".blocked-by").text_content() == blocker  # names its blocker
    # the buttons follow the service's rules: a blocked one can be dismissed, not retried
    assert blocked.locator("button.retry").count() == 0 and blocked.locator("button.dismiss").count() == 1
    refused = page.locator(f"#writebacks tr[data-key='{blocker}']")
    assert refused.locator(".state").text_content() == "rejected" and refused.locator("button.retry").count() == 1
    options = page.eval_on_selector_all("#writeback-state option", "nodes => nodes.map(n => n.value)")
    assert {"", "blocked", "failed", "dismissed", "scheduled", "waiting", "rejected"} <= set(options)
    page.select_option("#writeback-state", "blocked")
    page.click("#writeback-filters button[type=submit]")
    page.wait_for_selector(f"#writebacks tr[data-key='{blocker}']", state="detached")
    shots(page, "filtered to blocked")
    page.select_option("#writeback-state", "")
    page.click("#writeback-filters button[type=submit]")
    page.wait_for_selector(f"#writebacks tr[data-key='{blocker}']")

    # the cancellation window opens again upstream; Retry applies the reduction, then the rename
    reopened = datetime.now(timezone.utc) + timedelta(days=3)
    control.update_subscription(customer, sid, cancellationAllowedUntilDate=reopened.strftime("%Y-%m-%dT%H:%M:%SZ"))
    press(page, "retry", blocker, follower, then="succeeded")
    shots(page, "retried: both succeeded")
    truth = next(s for s in control.subscriptions(customer) if s["id"] == sid)
    assert truth["quantity"] == 6 and truth["friendlyName"] == "Renamed retry"

    # Dismiss on the refused one instead: the follower goes on without it
    customer, sid, blocker, follower = refused_then_blocked(serve, consented, "dismiss")
    page.click("#writeback-filters button[type=submit]")
    page.wait_for_selector(f"#writebacks tr[data-key='{follower}'].state-blocked")
    press(page, "dismiss", blocker, follower, then="dismissed")
    shots(page, "dismissed: the follower succeeded")
    truth = next(s for s in control.subscriptions(customer) if s["id"] == sid)
    assert truth["quantity"] == 8 and truth["friendlyName"] == "Renamed dismiss"


def test_a_subscription_in_est_nobody_chose_is_an_alert_on_the_page(context, serve, shots, consented):
    control = serve.simulator.control
    customer = control.customers()[0]["id"]
    sub = control.add_subscription(customer, nce=True, software=False, status="active", days_ago=400, quantity=3,
                                   end_of_term="none", extended_service_term=True)  # Microsoft's backfill
    assert sub["isExtendedServiceTerm"] is True
    run = subprocess.run([sys.executable, "-m", "cli", "--settings", str(serve.settings_path), "sync",
                          "--provider", consented, "--customer", customer], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    serve.services().writeback.run_timer()  # the write-backs timer's work, over the playground's storage
    page = open_admin(context, serve)
    open_provider(page, consented)
    row = page.locator(f"#alerts tr[data-kind='est_without_choice']:has-text('{sub['id']}')")
    row.wait_for()
    shots(page, "the EST alert")
    assert row.locator(".severity").text_content() == "critical"
    assert customer in row.text_content() and "Extended Service Term" in row.locator(".message").text_content()
    assert "UTC" in row.text_content()  # when it was detected


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
    # nobody signed in: 401; signed in without the app role: 403 (App Service Authentication's headers)
    for headers, status, step in (({}, 401, "nobody signed in"),
                                  ({"X-MS-CLIENT-PRINCIPAL": _principal("pcsync.Reader")}, 403, "a user without the role")):
        refused = browser.new_context(extra_http_headers=headers)
        try:
            page = refused.new_page()
            answer = page.goto(serve.admin_url)
            assert answer.status == status and page.locator("#app").count() == 0
            shots(page, step)
        finally:
            refused.close()
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
