"""The pure parts of `pcsync doctor` (admin/doctor.py): schedules, settings, storage failures and
consent health, with fakes and fixed times."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from admin.doctor import (
    check_tables,
    consent_health,
    next_occurrences,
    read_settings,
    redirect_uri_check,
    required_settings,
    schedule_check,
    storage_failure,
)
from shared.checks import CheckStatus, DoctorCheck
from tests.fakes.auth import provider

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)
STORAGE = {"PCSYNC_STORAGE": "UseDevelopmentStorage=true"}


def at(hour: int, day: int = 1) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=timezone.utc)


def test_next_occurrences_read_seconds_first():
    assert next_occurrences("0 0 */4 * * *", now=NOW) == [at(12), at(16), at(20)]
    assert next_occurrences("0 0 6 * * MON-FRI", now=NOW) == [at(6, 2), at(6, 3), at(6, 4)]  # 1 March 2026: Sunday
    assert next_occurrences("30 15 10 * * *", now=NOW, count=1) == [NOW.replace(day=2, minute=15, second=30)]


@pytest.mark.parametrize("expression, problem", [
    ("0 */4 * * *", "5 fields, NCRONTAB has six"),
    ("0 0 */4 * * * *", "7 fields"),
    ("0 0 H * * *", "not a valid NCRONTAB expression (H)"),  # croniter's hash, refused by the host
    ("0 0 6 L * *", "not a valid NCRONTAB expression (L)"),
    ("0 0 6 * * 1#2", "not a valid NCRONTAB expression (1#2)"),
    ("0 0 25 * * *", "not a valid NCRONTAB expression"),
    ("00:05:00", "1 fields"),  # a TimeSpan: App Service plans only, not Flex Consumption
])
def test_expressions_the_functions_host_refuses(expression, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        next_occurrences(expression, now=NOW)


def test_a_schedule_check_names_the_setting_and_the_fix():
    good = schedule_check("PCSYNC_SCHEDULE_CUSTOMERS", "0 0 */4 * * *", now=NOW)
    assert good.line() == ("[ok] schedule PCSYNC_SCHEDULE_CUSTOMERS: '0 0 */4 * * *', next 2026-03-01T12:00:00Z, "
                           "2026-03-01T16:00:00Z, 2026-03-01T20:00:00Z")
    missing = schedule_check("PCSYNC_SCHEDULE_INVOICES", "", now=NOW)
    assert missing.failed and "%PCSYNC_SCHEDULE_INVOICES%" in missing.fix


def test_every_timer_schedule_is_checked_the_write_backs_timer_too():
    settings, _ = read_settings(STORAGE)
    environ = {"PCSYNC_SCHEDULE_CUSTOMERS": "0 0 */4 * * *", "PCSYNC_SCHEDULE_INVOICES": "0 0 6 * * *"}
    checks = {c.name: c for c in required_settings(settings, environ, now=NOW)}
    assert {name for name in checks if name.startswith("schedule ")} == {
        "schedule PCSYNC_SCHEDULE_CUSTOMERS", "schedule PCSYNC_SCHEDULE_DELTA", "schedule PCSYNC_SCHEDULE_INVOICES",
        "schedule PCSYNC_SCHEDULE_UNBILLED", "schedule PCSYNC_SCHEDULE_WRITEBACKS"}
    assert checks["schedule PCSYNC_SCHEDULE_WRITEBACKS"].failed
    assert "%PCSYNC_SCHEDULE_WRITEBACKS%" in checks["schedule PCSYNC_SCHEDULE_WRITEBACKS"].fix
    environ["PCSYNC_SCHEDULE_WRITEBACKS"] = "0 */15 * * * *"
    writebacks = {c.name: c for c in required_settings(settings, environ, now=NOW)}["schedule PCSYNC_SCHEDULE_WRITEBACKS"]
    assert writebacks.line() == ("[ok] schedule PCSYNC_SCHEDULE_WRITEBACKS: '0 */15 * * * *', next 2026-03-01T10:45:00Z, "
                                 "2026-03-01T11:00:00Z, 2026-03-01T11:15:00Z")


def test_the_doctor_knows_every_timer_binding_s_schedule_setting(registered_functions):
    import re

    from shared.settings import SCHEDULE_SETTINGS

    bound = {name for function in registered_functions.values()
             for name in re.findall(r"%(PCSYNC_SCHEDULE_[A-Z0-9_]+)%", function.get_function_json())}
    assert bound == set(SCHEDULE_SETTINGS)


@pytest.mark.parametrize("uri, passed", [
    ("https://pcsync.azurewebsites.net/api/consent/callback", True),
    ("http://localhost:7071/api/consent/callback", True),
    ("http://pcsync.example/api/consent/callback", False),  # http only for localhost
    ("https://pcsync.azurewebsites.net/consent/callback", False),
    ("", False),
])
def test_redirect_uri(uri, passed):
    assert redirect_uri_check(uri).failed is not passed


def test_every_malformed_setting_is_reported_not_only_the_first():
    settings, problems = read_settings(STORAGE | {"PCSYNC_GRAPH_URL": "http://graph", "PCSYNC_SHARED_BUDGET": "maybe",
                                                  "AZURE_CLIENT_SECRET": "s3cret"})
    assert settings is None
    assert [p.name for p in problems] == ["setting AZURE_CLIENT_SECRET", "setting PCSYNC_GRAPH_URL",
                                          "setting PCSYNC_SHARED_BUDGET"]
    assert all(p.failed and p.fix for p in problems)


def test_a_storage_problem_does_not_hide_the_others():
    settings, problems = read_settings({"PCSYNC_STORAGE__accountName": "Not_A_Name", "PCSYNC_CALLS_PER_MINUTE": "0"})
    assert settings is None
    assert [p.name for p in problems] == ["setting PCSYNC_STORAGE__accountName", "setting PCSYNC_CALLS_PER_MINUTE"]


def test_good_settings_load():
    settings, problems = read_settings(STORAGE | {"PCSYNC_CLIENT_ID": "35bf992d-c9e9-4616-a12e-7696a6cecc1b"})
    assert problems == [] and settings.client_id == "35bf992d-c9e9-4616-a12e-7696a6cecc1b"


def forbidden() -> HttpResponseError:
    error = HttpResponseError(message="This request is not authorized to perform this operation.")
    error.status_code = 403
    return error


def test_a_403_names_the_missing_storage_role():
    check = storage_failure("storage queues", "send message", forbidden(), role="Storage Queue Data Contributor",
                            identity_based=True)
    assert check.line() == ("[FAIL] storage queues: send message: HTTP 403 — give the app's identity the Storage "
                            "Queue Data Contributor role on the storage account")
    with_key = storage_failure("storage tables", "create table", forbidden(), role="Storage Table Data Contributor",
                               identity_based=False)
    assert "account key or SAS in PCSYNC_STORAGE" in with_key.fix


class RefusingTables:
    """A TableStore whose table writes fail as a storage account without the role answers."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def table(self, name: str):
        return self

    def upsert_entity(self, entity, **options):
        raise self.exc


def test_the_table_check_says_which_step_failed():
    check = check_tables(RefusingTables(forbidden()), "pcsyncdoctorx", identity_based=True)
    assert check.evidence == "write entity: HTTP 403" and "Storage Table Data Contributor" in check.fix
    unreachable = check_tables(RefusingTables(ServiceRequestError("no route")), "pcsyncdoctorx", identity_based=True)
    assert unreachable.evidence == "write entity: could not be reached (ServiceRequestError)"


def consented(**overrides):
    values = dict(consent_status="active", consented_at="2026-02-01T00:00:00Z",
                  refresh_token_expires_at="2026-05-20T10:30:00Z")
    return provider(**(values | overrides))


def verify_result(*failed: str) -> str:
    checks = [{"name": n, "passed": False} for n in failed] + [{"name": "token_refresh", "passed": True}]
    return json.dumps({"passed": not failed, "checks": checks})


def test_consent_health_reports_status_days_left_and_the_last_verify():
    check = consent_health(consented(verify_result=verify_result(), verified_at="2026-02-28T09:00:00Z"), now=NOW)
    assert check.line() == ("[ok] consent contoso: active, refresh token expires in 80 days if unused "
                            "(2026-05-20T10:30:00Z), verify passed 2026-02-28T09:00:00Z")


@pytest.mark.parametrize("overrides, status, words", [
    ({"consent_status": "expired", "consent_error": "refresh token unused for 90 days"}, CheckStatus.FAIL,
     "expired: refresh token unused"),
    ({"consent_status": "none", "consented_at": None}, CheckStatus.FAIL, "none: no working consent yet"),
    ({"refresh_token_expires_at": (NOW + timedelta(days=10)).isoformat()}, CheckStatus.FAIL, "expires in 10 days"),
    ({"refresh_token_expires_at": (NOW - timedelta(days=1)).isoformat()}, CheckStatus.FAIL,
     "expired: the refresh token was unused until"),
    ({"verify_result": verify_result("invoices_read")}, CheckStatus.FAIL, "verify failed: invoices_read"),
    ({"enabled": False, "consent_status": "revoked"}, CheckStatus.INFO, "provider disabled"),
    ({"token_health": "mfa_required"}, CheckStatus.FAIL, "no MFA claim (401, error 900421)"),
    ({"token_health": "conditional_access_blocked"}, CheckStatus.FAIL, "Conditional Access policy blocks"),
])
def test_consent_health_failures(overrides, status, words):
    check = consent_health(consented(**overrides), now=NOW)
    assert check.status == status and words in check.evidence
    assert check.fix or status == CheckStatus.INFO


def test_a_check_line_and_its_json():
    check = DoctorCheck("key vault", CheckStatus.FAIL, "HTTP 403", "give the role")
    assert check.line() == "[FAIL] key vault: HTTP 403 — give the role"
    assert check.to_json() == {"name": "key vault", "status": "FAIL", "evidence": "HTTP 403", "fix": "give the role"}
