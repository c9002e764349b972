"""The admin page, its assets, consent start page, gateway and read routes, called through the
registered app with real HttpRequest objects (security: tests/functions/test_admin_security.py)."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.clock import to_iso
from tests.support import function_caller, http_request as request

TENANT = "3b33e682-00c3-41ee-9dd2-a548adf56438"
VALID = {"name": "Contoso <PC>", "countryCode": "US", "currencyCode": "USD", "tenantId": TENANT}


@pytest.fixture
def call(registered_functions):
    return function_caller(registered_functions)


def test_without_credentials_the_page_is_401_and_the_key_prompt_only(call, runtime):
    runtime.providers.put_provider("contoso", VALID)
    response, body = call("admin_page", request("GET", "admin"))
    assert response.status_code == 401 and response.mimetype == "text/html"
    assert 'id="function-key"' in body and 'data-auth="function_key"' in body and 'data-api="/api/"' in body
    assert 'id="app"' not in body and "setup-steps" not in body and 'id="provider-form"' not in body
    assert "contoso" not in body.lower() and "providers.js" not in body and "signin.js" in body
    assert "<script>" not in body and "onclick" not in body  # no inline script: CSP script-src 'self'


def test_the_shell_renders_every_provider_field_from_the_model(call, runtime):
    from admin.form import provider_form_fields

    response, body = call("admin_shell", request("GET", "admin/shell"))
    assert response.status_code == 200 and response.mimetype == "text/html"
    for field in provider_form_fields():
        assert f'id="field-{field.key}"' in body and f'id="problem-{field.key}"' in body
    assert body.count('class="required"') == 1 + 4  # the id and the four required fields
    assert body.count('class="recommended"') == 3
    assert 'id="setup-steps"' in body and body.index("providers.js") < body.index("health.js") < body.index("admin.js")
    assert "<script>" not in body and "onclick" not in body and 'id="function-key"' not in body


@pytest.mark.parametrize("name,route", [("admin_page", "admin"), ("admin_shell", "admin/shell")])
def test_page_holds_no_data_and_no_secret(call, runtime, name, route):
    runtime.providers.put_provider("contoso", VALID)
    _, body = call(name, request("GET", route))
    assert "contoso" not in body.lower() and TENANT not in body
    assert "AccountKey" in runtime.settings.storage.connection_string
    assert "AccountKey" not in body and runtime.settings.storage.connection_string not in body


@pytest.mark.parametrize("name,content_type", [("admin.js", "text/javascript"), ("admin.css", "text/css"),
                                               ("api.js", "text/javascript"), ("health.js", "text/javascript"),
                                               ("signin.js", "text/javascript")])
def test_assets_are_served_with_their_type(call, runtime, name, content_type):
    response, body = call("admin_static", request("GET", f"admin/static/{name}", route_params={"name": name}))
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(content_type)
    assert response.headers["X-Content-Type-Options"] == "nosniff" and body


@pytest.mark.parametrize("name", ["../page.py", "..", ".hidden.js", "page.py", "missing.js", "templates/base.html",
                                  "%2e%2e%2fpage.py"])
def test_nothing_but_the_assets_is_served(call, runtime, name):
    response, _ = call("admin_static", request("GET", f"admin/static/{name}", route_params={"name": name}))
    assert response.status_code == 404


def test_assets_reach_nothing_outside_the_page(registered_functions):
    import pathlib

    static = pathlib.Path("admin/static")
    text = " ".join(p.read_text() for p in static.iterdir())
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "innerHTML" not in text and "eval(" not in text


# -- the consent start page ----------------------------------------------------------------------

def _flow(runtime, state, *, expires_in=timedelta(minutes=10), used=False,
          auth_uri="https://login.example/tenant/oauth2/v2.0/authorize?state=S"):
    row = {"PartitionKey": "flow", "RowKey": state, "provider_id": "contoso",
           "flow": json.dumps({"auth_uri": auth_uri, "state": state}),
           "expires_at": to_iso(datetime.now(timezone.utc) + expires_in)}
    if used:
        row["used_at"] = to_iso(datetime.now(timezone.utc))
    runtime.tables.table("consentflows").upsert_entity(row)


def test_consent_start_page_links_to_the_sign_in(call, runtime):
    _flow(runtime, "live-state")
    response, body = call("admin_consent_start", request("GET", "admin/consent", params={"state": "live-state"}))
    assert response.status_code == 200 and 'id="start-consent"' in body and "Start Consent Process" in body
    assert 'href="https://login.example/tenant/oauth2/v2.0/authorize?state=S"' in body
    assert "Sales Agent" in body and "Billing Admin" in body and "private" in body
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("setup,state,status", [
    (None, "unknown", 404), (None, "", 404), (None, "x" * 300, 404),
    ({"used": True}, "spent", 410), ({"expires_in": timedelta(minutes=-1)}, "old", 410),
    ({"auth_uri": "javascript:alert(1)"}, "odd", 404),
])
def test_consent_start_page_refuses_unknown_used_and_expired_links(call, runtime, setup, state, status):
    if setup is not None:
        _flow(runtime, state, **setup)
    response, body = call("admin_consent_start", request("GET", "admin/consent", params={"state": state}))
    assert response.status_code == status and "start-consent" not in body


# -- the read routes the page uses --------------------------------------------------------------

def _runs(runtime, provider_id):
    from sync.runs import RunOutcome, RunResult, record_run

    now = datetime.now(timezone.utc)
    started_at = {}
    for days_ago, stream, outcome, written in ((0, "customers", RunOutcome.SUCCEEDED, 40),
                                               (0, "subscriptions", RunOutcome.FAILED, 3),
                                               (2, "customers", RunOutcome.SUCCEEDED, 5),
                                               (2, "agreements", RunOutcome.DEGRADED, 0),
                                               (40, "customers", RunOutcome.SUCCEEDED, 999)):
        started = now - timedelta(days=days_ago, minutes=5)
        started_at.setdefault(days_ago, started)
        run = RunResult(provider_id, stream, started_at=started, rows_written=written, calls=7, throttled_429=1)
        run.end(outcome, error="boom" if outcome is RunOutcome.FAILED else None)
        run.finished_at = started + timedelta(seconds=12)
        record_run(runtime.tables, run)
    return started_at


def test_health_counts_runs_per_day_and_the_last_run_of_each_stream(call, runtime):
    runtime.providers.put_provider("contoso", VALID)
    started_at = _runs(runtime, "contoso")
    response, body = call("provider_health", request("GET", "providers/contoso/health", params={"days": "30"},
                                                     route_params={"id": "contoso"}))
    health = json.loads(body)
    assert response.status_code == 200 and len(health["days"]) == 30
    today = next(d for d in health["days"] if d["date"] == started_at[0].date().isoformat())  # midnight-proof
    assert today["runs"] == 2 and today["rowsWritten"] == 43 and today["failures"] == 1 and today["calls"] == 14
    assert today["throttled429"] == 2 and today["durationS"] == 24 and today["degraded"] == 0
    two_days_ago = next(d for d in health["days"] if d["date"] == started_at[2].date().isoformat())
    assert two_days_ago["degraded"] == 1 and two_days_ago["failures"] == 0  # degraded is not a failure
    assert sum(d["runs"] for d in health["days"]) == 4  # the run 40 days ago is outside
    assert health["lastRuns"]["customers"]["rowsWritten"] == 40
    assert health["lastRuns"]["subscriptions"]["outcome"] == "failed"
    assert health["truncated"] is False


@pytest.mark.parametrize("provider_id,params,status", [("nobody", {}, 404), ("Bad_Id", {}, 400),
                                                       ("contoso", {"days": "abc"}, 400),
                                                       ("contoso", {"days": "1000"}, 400)])
def test_health_refuses_bad_input(call, runtime, provider_id, params, status):
    runtime.providers.put_provider("contoso", VALID)
    response, body = call("provider_health", request("GET", f"providers/{provider_id}/health", params=params,
                                                     route_params={"id": provider_id}))
    assert response.status_code == status and "error" in json.loads(body)


def test_invoice_list_uses_the_cli_keys(call, runtime):
    runtime.tables.table("invoices").upsert_entity({
        "PartitionKey": "contoso", "RowKey": "G000024131", "id": "G000024131", "totalCharges": "12.50",
        "currencyCode": "USD", "recon_status": "reconciled", "recon_source": "v2"})
    response, body = call("invoices_list", request("GET", "invoices", params={"provider": "contoso"}))
    listing = json.loads(body)
    assert response.status_code == 200 and listing["next"] is None
    assert listing["items"][0]["id"] == "G000024131" and listing["items"][0]["reconStatus"] == "reconciled"
    response, _ = call("invoices_list", request("GET", "invoices"))
    assert response.status_code == 400


def test_alerts_name_a_consent_about_to_expire(call, runtime):
    runtime.providers.put_provider("contoso", VALID)
    runtime.providers.put_provider("fresh", VALID)
    soon = to_iso(datetime.now(timezone.utc) + timedelta(days=5, hours=1))
    later = to_iso(datetime.now(timezone.utc) + timedelta(days=80))
    runtime.providers.update_status("contoso", consent_status="active", refresh_token_expires_at=soon,
                                    consented_at=soon)
    runtime.providers.update_status("fresh", consent_status="active", refresh_token_expires_at=later,
                                    consented_at=later)
    response, body = call("alerts_list", request("GET", "alerts"))
    items = json.loads(body)["items"]
    assert response.status_code == 200 and [(a["provider"], a["kind"]) for a in items] == [("contoso", "consent_expiring")]
    assert "5 days" in items[0]["message"]
    response, body = call("alerts_list", request("GET", "alerts", params={"provider": "fresh"}))
    assert json.loads(body)["items"] == []


def test_alerts_list_the_rows_features_store_in_table_alerts(call, runtime):
    from sync.writeback.alerts import AlertKind, Alerts

    runtime.providers.put_provider("contoso", VALID)
    detected = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
    alerts = Alerts(runtime.tables, lambda: detected)
    alerts.raise_alert("contoso", AlertKind.EST_WITHOUT_CHOICE, "cust-1", "sub-1", "in Extended Service Term without EST chosen")
    alerts.raise_alert("contoso", AlertKind.END_OF_TERM_DRIFT, "cust-1", "sub-2", "cancel was chosen; renews")
    alerts.clear("contoso", AlertKind.END_OF_TERM_DRIFT, "cust-1", "sub-2")
    response, body = call("alerts_list", request("GET", "alerts", params={"provider": "contoso"}))
    items = json.loads(body)["items"]
    assert response.status_code == 200 and len(items) == 1  # the cleared one is gone
    assert {k: items[0][k] for k in ("kind", "severity", "provider", "customer", "subscription", "since")} == {
        "kind": "est_without_choice", "severity": "critical", "provider": "contoso", "customer": "cust-1",
        "subscription": "sub-1", "since": "2026-11-30T08:00:00Z"}
    assert "Extended Service Term" in items[0]["message"] and "cancel" in items[0]["fix"]
    # the same alert raised again keeps the time it was first detected
    Alerts(runtime.tables, lambda: detected + timedelta(days=1)).raise_alert(
        "contoso", AlertKind.EST_WITHOUT_CHOICE, "cust-1", "sub-1", "still in EST")
    _, body = call("alerts_list", request("GET", "alerts"))
    assert [(a["subscription"], a["since"]) for a in json.loads(body)["items"]] == [("sub-1", "2026-11-30T08:00:00Z")]
