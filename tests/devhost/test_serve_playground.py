"""`pcsync serve --simulator` end to end: Azurite on disk, the simulator, the app's HTTP routes
with the host's key check, a timer on a short schedule that fans out to the queue trigger, and a
restart that keeps the data and the consent."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from devhost.testing import start_serve
from tests.devhost.support import wait_for
from devservices import register_and_consent
from sync.runs import list_runs

# every three seconds (the schedule the test gives; the settings file keeps the real one)
SHORT_SCHEDULE = "*/3 * * * * *"


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    with start_serve(tmp_path_factory.mktemp("playground"),
                     env={"PCSYNC_SCHEDULE_CUSTOMERS": SHORT_SCHEDULE}) as serve:
        yield serve


def test_it_says_where_things_are_and_never_prints_the_key(playground):
    output = "\n".join(playground.output)
    assert f"Admin page: {playground.admin_url}" in playground.output
    assert f"Integration user: {playground.simulator.integration_user}" in playground.output
    assert playground.output[-1] == "Ready." or "Ready." in playground.output
    assert "PCSYNC_LOCAL_FUNCTION_KEY" in output
    assert playground.function_key and playground.function_key not in output
    assert playground.function_key not in playground.stderr_path.read_text()


def test_the_settings_file_matches_the_playground(playground):
    values = playground.values
    assert values["PCSYNC_STORAGE"] == playground.connection_string
    assert values["PCSYNC_PARTNER_CENTER_URL"] == playground.simulator.partner_center_url
    assert values["PCSYNC_REDIRECT_URI"] == f"http://localhost:{playground.port}/api/consent/callback"
    assert playground.simulator.control.health()["status"] == "ok"


@pytest.mark.parametrize("how", ["none", "wrong header", "wrong code"])
def test_a_function_route_without_the_key_is_401(playground, how):
    if how == "none":
        response = playground.get("/api/providers", key=False)
    elif how == "wrong header":
        response = playground.get("/api/providers", headers={"x-functions-key": "not-the-key"})
    else:
        response = playground.get("/api/providers?code=not-the-key", key=False)
    assert response.status_code == 401


def test_the_key_works_as_header_or_code(playground):
    assert playground.get("/api/providers").status_code == 200
    by_code = requests.get(f"{playground.base_url}/api/providers", params={"code": playground.function_key}, timeout=30)
    assert by_code.status_code == 200
    assert by_code.json() == playground.get("/api/providers").json()


def test_an_anonymous_route_needs_no_key(playground):
    # the consent callback is where Entra sends the browser back: the host lets it through and
    # the app answers (here: a sign-in response it cannot use)
    response = playground.get("/api/consent/callback?state=nothing&code=x", key=False)
    assert response.status_code not in (401, 404)
    assert "text/html" in response.headers["Content-Type"]


def test_unknown_routes_are_404(playground):
    assert playground.get("/api/no-such-route").status_code == 404
    assert playground.get("/not-api/providers").status_code == 404


def test_the_timer_fires_on_its_schedule_and_feeds_the_queue_trigger(playground):
    services = playground.services()
    register_and_consent(services, playground.simulator, "timerp")
    # the customers timer syncs the provider and queues one sync-customer message per customer,
    # which the host's queue trigger then runs: both leave syncruns rows
    def timer_and_queue_runs():
        runs = [r for r in list_runs(services.tables, "timerp") if r["outcome"] == "succeeded"]
        by_timer = [r for r in runs if r["stream"] == "customers" and not r.get("customer_id")]
        by_queue = [r for r in runs if r.get("customer_id")]
        return (by_timer, by_queue) if by_timer and by_queue else None

    by_timer, by_queue = wait_for(timer_and_queue_runs,
                                   what="a customers run by the timer and a customer run by the queue trigger")
    assert by_timer[0]["rows_written"] > 0 and by_queue


def test_a_restart_keeps_the_provider_the_consent_and_the_data(tmp_path):
    with start_serve(tmp_path, extra_args=["--no-timers"]) as first:
        assert any("new state" in line for line in first.output)
        body = {"name": "Restart test", "countryCode": "US", "currencyCode": "USD",
                "tenantId": first.simulator.tenant_id}
        assert first.request("PUT", "/api/providers/restartp", json=body).status_code in (200, 201)
        link = first.get("/api/providers/restartp/consent-link").json()["consentUrl"]
        redirect = first.simulator.control.sign_in(link, mfa=True)
        callback = urlsplit(redirect)
        assert callback.path == "/api/consent/callback"
        page = first.get(f"/api/consent/callback?{callback.query}", key=False)
        assert page.status_code == 200, page.text
        assert first.get("/api/providers/restartp").json()["consent"]["status"] == "active"
        key, settings_before = first.function_key, first.values

    with start_serve(tmp_path, extra_args=["--run-timers-now"]) as second:
        assert any("state restored" in line for line in second.output)
        assert not any(line.startswith("Wrote ") for line in second.output)   # the settings file is kept
        assert second.function_key == key and second.values == settings_before
        provider = second.get("/api/providers/restartp").json()
        assert provider["name"] == "Restart test"
        assert provider["consent"]["status"] == "active"
        # the simulator still knows the app, its secret in Key Vault and the refresh token
        report = second.request("POST", "/api/providers/restartp/verify").json()
        assert report["passed"], report
        # --run-timers-now: the customers timer ran once at start and synced with the kept consent
        services = second.services()
        wait_for(lambda: [r for r in list_runs(services.tables, "restartp")
                          if r["stream"] == "customers" and r["outcome"] == "succeeded"],
                 what="the customers run fired by --run-timers-now")


def test_services_only_starts_the_playground_for_core_tools_without_hosting(tmp_path):
    with start_serve(tmp_path, extra_args=["--services-only"]) as services_only:
        assert services_only.simulator.control.health()["status"] == "ok"
        assert services_only.values["PCSYNC_STORAGE"] == services_only.connection_string
        assert any(line.startswith("Admin page: ") for line in services_only.output)
        with pytest.raises(requests.ConnectionError):   # `func start` serves the functions, not this process
            requests.get(f"{services_only.base_url}/api/providers", timeout=5)


def test_a_settings_file_that_does_not_match_the_playground_is_kept_and_named(tmp_path):
    from devhost.local_settings import sample_values, write

    write(tmp_path / "local.settings.json", {"IsEncrypted": False, "Values": sample_values()})
    with start_serve(tmp_path, extra_args=["--services-only"]) as services_only:
        warning = [line for line in services_only.output if line.startswith("warning: ")]
        assert warning and "PCSYNC_STORAGE" in warning[0] and "PCSYNC_PARTNER_CENTER_URL" in warning[0]
        assert services_only.values == sample_values()   # not overwritten
