"""`pcsync --settings local.settings.json doctor` against Azurite and the simulator (issue 14): a
good deployment passes with one line per check; each misconfiguration the issue names (missing
setting, bad schedule, unreachable storage, missing secret, expired consent) is a [FAIL] line with
its fix and exit code 1."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

import cli
from devservices import (
    azurite_connection_string,
    build_simulator_runtime,
    free_ports,
    register_and_consent,
    simulator_app_settings,
)

PROVIDER_ID = "doctor"
SCHEDULES = {"PCSYNC_SCHEDULE_CUSTOMERS": "0 0 */4 * * *", "PCSYNC_SCHEDULE_DELTA": "0 */15 * * * *",
             "PCSYNC_SCHEDULE_INVOICES": "0 0 6 * * *", "PCSYNC_SCHEDULE_UNBILLED": "0 30 6 * * *",
             "PCSYNC_SCHEDULE_WRITEBACKS": "0 */15 * * * *"}
LINE = re.compile(r"^\[(ok|FAIL|info)\] [^:]+: .+$")


@pytest.fixture
def doctor(simulator, storage, tmp_path, capsys, monkeypatch):
    """Runs `pcsync --settings FILE doctor` with the simulator's app settings and the sample's
    schedules; keyword arguments replace settings by name (None removes one)."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "PCSYNC_", "AzureWebJobs")):
            monkeypatch.delenv(name)
    simulator.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0, latency_ms=0)
    path = tmp_path / "local.settings.json"

    def run(*argv, **overrides):
        values = simulator_app_settings(simulator, storage) | SCHEDULES
        for name, value in overrides.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        started = time.monotonic()
        code = cli.main(["--settings", str(path), "doctor", *argv])
        out, err = capsys.readouterr()
        return code, out, err, time.monotonic() - started

    yield run
    from bootstrap import install_services

    install_services(None)


@pytest.fixture
def consented(simulator, storage):
    services = build_simulator_runtime(simulator, storage)  # stores the app's client secret in the vault
    outcome = register_and_consent(services, simulator, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    return services


def lines(out: str) -> dict[str, str]:
    found = out.strip().splitlines()
    assert all(LINE.match(line) for line in found), out
    return {line.split("] ", 1)[1].split(": ", 1)[0]: line for line in found}


def test_a_good_deployment_passes_with_one_line_per_check(doctor, consented, simulator, storage):
    assert consented.verify.verify(PROVIDER_ID).passed
    code, out, err, _ = doctor()
    assert code == 0, out
    checks = lines(out)
    assert checks["setting PCSYNC_CLIENT_ID"] == f"[ok] setting PCSYNC_CLIENT_ID: {simulator.client_id}"
    schedule = checks["schedule PCSYNC_SCHEDULE_CUSTOMERS"]
    assert schedule.startswith("[ok]") and len(re.findall(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", schedule)) == 3
    assert checks["storage tables"].startswith("[ok] storage tables: created, wrote, read and deleted table "
                                               "pcsyncdoctor")
    assert checks["storage queues"].startswith("[ok]")
    assert checks["key vault"] == (f"[ok] key vault: client secret 'pcsync-client-secret' read from "
                                   f"{simulator.key_vault_url}")
    assert checks[f"entra app {PROVIDER_ID}"].startswith(f"[ok] entra app {PROVIDER_ID}: app-only token issued in "
                                                        f"tenant {simulator.tenant_id}; roles:")
    assert checks["entra app redirect uri"].startswith("[info]")
    consent = checks[f"consent {PROVIDER_ID}"]
    assert consent.startswith(f"[ok] consent {PROVIDER_ID}: active, refresh token expires in 89 days if unused")
    assert "verify passed" in consent
    assert simulator.client_secret not in out + err
    assert "doctor: " in err and ", 0 failed" in err
    # the scratch table and queue are gone again
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    tables = TableServiceClient.from_connection_string(storage).list_tables()
    queues = QueueServiceClient.from_connection_string(storage).list_queues()
    assert not [t.name for t in tables if t.name.startswith("pcsyncdoctor")]
    assert not [q.name for q in queues if q.name.startswith("pcsyncdoctor")]


def test_json_output_for_scripts(doctor, consented):
    code, out, _, _ = doctor("--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] is True
    assert {tuple(sorted(c)) for c in report["checks"]} == {("evidence", "fix", "name", "status")}
    assert {c["status"] for c in report["checks"]} <= {"ok", "info"}


def test_a_missing_setting_is_a_fail_line_with_its_fix(doctor, consented):
    code, out, _, _ = doctor(PCSYNC_CLIENT_ID=None, PCSYNC_REDIRECT_URI=None)
    checks = lines(out)
    assert code == 1
    assert checks["setting PCSYNC_CLIENT_ID"] == ("[FAIL] setting PCSYNC_CLIENT_ID: not set — set it to the app "
                                                  "registration's Application (client) ID")
    assert checks["setting PCSYNC_REDIRECT_URI"].startswith("[FAIL] setting PCSYNC_REDIRECT_URI: not set — set it "
                                                            "to https://<function app host>/api/consent/callback")
    assert checks[f"entra app {PROVIDER_ID}"] == (f"[info] entra app {PROVIDER_ID}: not checked — fix "
                                                  "PCSYNC_CLIENT_ID first")
    assert checks["storage tables"].startswith("[ok]")  # the rest is still checked


def test_missing_storage_and_malformed_settings_are_all_reported(doctor):
    code, out, _, _ = doctor(PCSYNC_STORAGE=None, PCSYNC_CALLS_PER_MINUTE="lots", PCSYNC_WEBHOOK_MAX_AGE_DAYS="0")
    found = out.strip().splitlines()
    assert code == 1
    assert found[0].startswith("[FAIL] setting storage: storage is not configured: set PCSYNC_STORAGE")
    assert found[1].startswith("[FAIL] setting PCSYNC_CALLS_PER_MINUTE: PCSYNC_CALLS_PER_MINUTE must be a whole "
                               "number of calls per minute, got 'lots'")
    assert found[2].startswith("[FAIL] setting PCSYNC_WEBHOOK_MAX_AGE_DAYS: PCSYNC_WEBHOOK_MAX_AGE_DAYS must be a "
                               "whole number of days")
    assert found[3] == "[info] services: not checked — fix the settings above, then run pcsync doctor again"
    assert len(found) == 4


def test_a_bad_schedule_is_a_fail_line(doctor, consented):
    code, out, _, _ = doctor(PCSYNC_SCHEDULE_CUSTOMERS="0 */4 * * *", PCSYNC_SCHEDULE_INVOICES=None)
    checks = lines(out)
    assert code == 1
    assert checks["schedule PCSYNC_SCHEDULE_CUSTOMERS"] == (
        "[FAIL] schedule PCSYNC_SCHEDULE_CUSTOMERS: '0 */4 * * *': 5 fields, NCRONTAB has six (seconds first) — "
        "use a six-field NCRONTAB expression, seconds first, e.g. '0 0 */4 * * *' (every four hours)")
    assert checks["schedule PCSYNC_SCHEDULE_INVOICES"].startswith(
        "[FAIL] schedule PCSYNC_SCHEDULE_INVOICES: not set — set it: the timer binding reads "
        "%PCSYNC_SCHEDULE_INVOICES%")


def test_unreachable_storage_fails_within_seconds(doctor):
    (port,) = free_ports(1)
    code, out, err, elapsed = doctor(PCSYNC_STORAGE=azurite_connection_string(port, port, port))
    checks = lines(out)
    assert code == 1 and "Traceback" not in err
    for name in ("storage tables", "storage queues"):
        assert checks[name].startswith(f"[FAIL] {name}: create {name.split()[1][:-1]}: could not be reached"), out
        assert "check PCSYNC_STORAGE" in checks[name]
    assert checks["consent"] == "[info] consent: not checked — fix storage first: the providers are stored there"
    assert elapsed < 30, elapsed


def test_a_missing_secret_names_the_secret_to_store(doctor, consented):
    code, out, _, _ = doctor(PCSYNC_CLIENT_SECRET_NAME="doctor-no-such-secret")
    checks = lines(out)
    assert code == 1
    assert checks["key vault"].startswith("[FAIL] key vault: ")
    assert "'doctor-no-such-secret' does not exist" in checks["key vault"]
    assert checks["key vault"].endswith("— store the app registration's client secret in the vault as secret "
                                        "'doctor-no-such-secret'")
    assert checks[f"entra app {PROVIDER_ID}"].endswith("fix the key vault check first")


def test_an_unreachable_key_vault_names_the_setting(doctor, consented):
    (port,) = free_ports(1)
    code, out, _, elapsed = doctor(PCSYNC_KEY_VAULT_URL=f"https://127.0.0.1:{port}")
    checks = lines(out)
    assert code == 1
    assert checks["key vault"].startswith(f"[FAIL] key vault: https://127.0.0.1:{port} could not be reached")
    assert "check PCSYNC_KEY_VAULT_URL" in checks["key vault"]
    assert elapsed < 30, elapsed


def test_an_expired_consent_is_a_fail_line_with_the_way_back(doctor, consented):
    consented.providers.update_status(
        PROVIDER_ID, consent_status="expired",
        consent_error="The stored consent expired: its refresh token was not used for 90 days (AADSTS700082).")
    code, out, _, _ = doctor()
    checks = lines(out)
    assert code == 1
    assert checks[f"consent {PROVIDER_ID}"] == (
        f"[FAIL] consent {PROVIDER_ID}: expired: The stored consent expired: its refresh token was not used for 90 "
        f"days (AADSTS700082). — open a new consent link (pcsync consent-link --provider {PROVIDER_ID}) and sign "
        "in as the integration user")


def test_a_refresh_token_past_its_window_is_expired(doctor, consented):
    consented.providers.update_status(PROVIDER_ID, refresh_token_expires_at="2020-01-01T00:00:00Z")
    code, out, _, _ = doctor()
    assert code == 1
    assert lines(out)[f"consent {PROVIDER_ID}"].startswith(
        f"[FAIL] consent {PROVIDER_ID}: expired: the refresh token was unused until 2020-01-01T00:00:00Z")


def test_cost_management_without_the_graph_role_fails_the_entra_check(doctor, consented, simulator):
    consented.providers.put_provider(PROVIDER_ID, {"name": "Simulated partner", "countryCode": "US",
                                                   "currencyCode": "USD", "tenantId": simulator.tenant_id,
                                                   "costManagement": True})
    granted = simulator.control.app_permissions()["graph_application"]
    simulator.control.set_app_permissions(graph_application=[])
    try:
        code, out, _, _ = doctor()
    finally:
        simulator.control.set_app_permissions(graph_application=granted)
    check = lines(out)[f"entra app {PROVIDER_ID}"]
    assert code == 1
    assert check.startswith(f"[FAIL] entra app {PROVIDER_ID}: app-only token issued in tenant {simulator.tenant_id}; "
                            "roles: (none) — cost management is on: add the Microsoft Graph application permission "
                            "PartnerBilling.Read.All")
