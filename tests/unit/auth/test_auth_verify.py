"""Verify Connectivity with a fake token provider and a fake HTTP session."""
import json
import uuid
from dataclasses import replace

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from auth.entra import IdentityProviderUnavailable, TokenRequestFailed
from tests.fakes.auth import (
    TENANT_ID,
    FakeProviders,
    FakeTokenProvider,
    ManualClock,
    make_jwt,
    make_settings,
    provider,
    user_access_token,
)
from auth.verify import VerifyService
from shared.errors import ConsentRequired, NotFound

PC = "https://pc.example.test"
APP_USER_CHECKS = ["token_refresh", "mfa_claim", "tenant_matches", "organization_profile", "customers_read",
                   "invoices_read"]
CHECKS = APP_USER_CHECKS + ["app_only_access", "mfa_compliance"]


def response(status, body=None):
    r = requests.Response()
    r.status_code = status
    r.headers = CaseInsensitiveDict({"Content-Type": "application/json"} if body is not None else {})
    r._content = json.dumps(body).encode() if body is not None else b""
    return r


class FakeSession:
    def __init__(self, answers=None):
        self.answers = answers or {}
        self.requests = []

    def get(self, url, headers=None, timeout=None):
        self.requests.append((url, dict(headers or {}), timeout))
        path = url[len(PC):].split("?")[0]
        answer = self.answers.get(path, 200)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):  # (status, body)
            return response(*answer)
        if answer == 200:
            return response(200, {"items": []})
        return response(answer, {"code": 900150, "description": "role"} if answer == 403 else None)


def run(tokens=None, session=None, **provider_overrides):
    providers = FakeProviders(provider(consent_status="active", **provider_overrides))
    service = VerifyService(settings=make_settings(partner_center_url=PC), providers=providers,
                            token_sources=lambda p: tokens or FakeTokenProvider(), session=session or FakeSession(),
                            clock=ManualClock())
    return service.verify("contoso"), providers


def test_everything_passes_and_is_stored_on_the_provider():
    session = FakeSession()
    tokens = FakeTokenProvider()
    report, providers = run(tokens, session)
    assert [c.name for c in report.checks] == CHECKS
    assert report.passed and all(c.fix == "" for c in report.checks)
    assert tokens.calls == [True]  # verify forces a real refresh
    stored = providers.get_provider("contoso")
    assert json.loads(stored.verify_result) == report.to_json()
    assert stored.verified_at == "2025-01-15T09:00:00Z"
    urls = [u for u, _, _ in session.requests]
    assert urls == [f"{PC}/v1/profiles/organization", f"{PC}/v1/customers?size=1", f"{PC}/v1/invoices?size=1",
                    f"{PC}/v1/customers?size=1", f"{PC}/v1/applicationmfaadoptionstatus"]
    sent = [headers["Authorization"] for _, headers, _ in session.requests]
    assert sent == [f"Bearer {tokens.token}"] * 3 + [f"Bearer {tokens.app}", f"Bearer {tokens.token}"]
    for _, headers, timeout in session.requests:
        assert headers["Accept"] == "application/json"
        uuid.UUID(headers["MS-RequestId"]), uuid.UUID(headers["MS-CorrelationId"])
        assert timeout
    assert len({h["MS-RequestId"] for _, h, _ in session.requests}) == 5
    assert len({h["MS-CorrelationId"] for _, h, _ in session.requests}) == 1


@pytest.mark.parametrize("path,check,role", [("/v1/customers", "customers_read", "Sales Agent"),
                                             ("/v1/invoices", "invoices_read", "Billing Admin")])
def test_each_missing_role_is_reported_separately(path, check, role):
    report, _ = run(session=FakeSession({path: 403}))
    failed = [c for c in report.checks if not c.passed]
    # the app-only check reads customers too
    assert [c.name for c in failed] == [check] + (["app_only_access"] if check == "customers_read" else [])
    assert failed[0].evidence == "HTTP 403, code 900150" and role in failed[0].fix
    assert not report.passed


def test_mfa_missing_and_401_are_explained():
    tokens = FakeTokenProvider(user_access_token(mfa=False))
    report, _ = run(tokens, FakeSession({"/v1/profiles/organization": 401, "/v1/customers": 401,
                                         "/v1/invoices": 401}))
    assert not report.check("mfa_claim").passed and report.check("mfa_claim").evidence == "amr=pwd"
    assert "every sign-in" in report.check("mfa_claim").fix
    assert report.check("organization_profile").evidence == "HTTP 401" and "MFA" in report.check(
        "organization_profile").fix


def test_tenant_mismatch():
    report, _ = run(FakeTokenProvider(user_access_token(tenant_id="00000000-0000-0000-0000-0000000000ff")))
    check = report.check("tenant_matches")
    assert not check.passed and TENANT_ID in check.fix


@pytest.mark.parametrize("error,evidence", [
    (ConsentRequired("contoso", "expired", "The stored consent expired (AADSTS700082)."), "consent expired"),
    (TokenRequestFailed("bad secret", error="invalid_client", codes=(7000215,)), "invalid_client AADSTS7000215"),
    (IdentityProviderUnavailable("down"), "Entra ID unreachable"),
])
def test_no_token_fails_refresh_and_skips_the_dependent_checks(error, evidence):
    session = FakeSession()
    report, _ = run(FakeTokenProvider(error=error), session)
    assert report.check("token_refresh").evidence == evidence and report.check("token_refresh").fix
    for name in APP_USER_CHECKS[1:] + ["mfa_compliance"]:
        assert report.check(name).evidence == "skipped: no access token"
    # only the app-only check can still ask Partner Center
    assert [u for u, _, _ in session.requests] == [f"{PC}/v1/customers?size=1"]


def test_partner_center_unreachable_or_busy():
    report, _ = run(session=FakeSession({"/v1/profiles/organization": requests.ConnectionError("x"),
                                         "/v1/customers": 503}))
    assert report.check("organization_profile").evidence == "connection failed: ConnectionError"
    assert report.check("customers_read").evidence == "HTTP 503" and "again" in report.check("customers_read").fix


def test_graph_billing_permission_only_when_cost_management_is_on():
    report, _ = run(cost_management=False)
    assert "graph_billing_permission" not in [c.name for c in report.checks]
    report, _ = run(cost_management=True)
    assert report.check("graph_billing_permission").passed
    report, _ = run(FakeTokenProvider(graph=make_jwt(roles=["Other.Read"])), cost_management=True)
    check = report.check("graph_billing_permission")
    assert not check.passed and check.evidence == "roles=Other.Read" and "PartnerBilling.Read.All" in check.fix
    report, _ = run(FakeTokenProvider(graph=TokenRequestFailed("x", error="invalid_client", codes=(7000215,))),
                    cost_management=True)
    assert report.check("graph_billing_permission").evidence == "invalid_client AADSTS7000215"


def test_unknown_provider():
    providers = FakeProviders()
    service = VerifyService(settings=make_settings(), providers=providers,
                            token_sources=lambda p: FakeTokenProvider(), session=FakeSession())
    with pytest.raises(NotFound):
        service.verify("nobody")


def test_report_json_shape():
    report, _ = run(session=FakeSession({"/v1/invoices": 403}))
    body = report.to_json()
    assert body["providerId"] == "contoso" and body["passed"] is False
    assert set(body["checks"][0]) == {"name", "passed", "evidence", "fix"}


def test_verify_result_survives_a_provider_with_previous_result():
    report, providers = run(verify_result='{"old": true}')
    assert json.loads(providers.get_provider("contoso").verify_result)["checks"]
    assert replace(providers.get_provider("contoso")).verified_at


# -- MFA and token health (issue 11) ------------------------------------------------------------

MFA_401 = (401, {"code": 900421, "description": "Multi-factor authentication is required", "source": "PartnerFD"})


def test_900421_names_the_cause_and_the_fix_and_is_recorded():
    report, providers = run(session=FakeSession({"/v1/profiles/organization": MFA_401}))
    check = report.check("organization_profile")
    assert check.evidence == "HTTP 401, code 900421"
    assert "trusted-location" in check.fix and "amr" in check.fix and "hotspot" in check.fix
    assert report.check("app_only_access").passed  # app-only calls are unaffected
    stored = providers.get_provider("contoso")
    assert stored.token_health == "mfa_required" and stored.token_health_at == report.checked_at


def test_conditional_access_block_is_named():
    blocked = (403, {"code": 900309, "description": "Access has been blocked by Conditional Access policies"})
    report, providers = run(session=FakeSession({"/v1/profiles/organization": blocked}))
    assert "Conditional Access policy" in report.check("organization_profile").fix
    assert providers.get_provider("contoso").token_health == "conditional_access_blocked"


def test_passing_verify_clears_an_old_cause():
    report, providers = run(token_health="mfa_required", token_health_at="2025-01-01T00:00:00Z")
    assert report.passed and providers.get_provider("contoso").token_health is None


def _adoption(rows):
    return (200, {"totalCount": len(rows), "items": rows})


def test_mfa_compliance_reads_the_self_test():
    app = make_settings().client_id
    old_bad = {"date": "2025-01-13", "applicationId": app, "mfaCompliantRequestCount": 1, "totalRequestCount": 5}
    today_ok = {"date": "2025-01-15", "applicationId": app, "mfaCompliantRequestCount": 3, "totalRequestCount": 3}
    other_app = {"date": "2025-01-15", "applicationId": "other", "mfaCompliantRequestCount": 0, "totalRequestCount": 9}
    report, _ = run(session=FakeSession({"/v1/applicationmfaadoptionstatus": _adoption([old_bad, today_ok, other_app])}))
    check = report.check("mfa_compliance")
    assert check.passed and check.evidence.startswith("4 of 8 App+User requests")
    today_bad = dict(today_ok, mfaCompliantRequestCount=1)
    report, _ = run(session=FakeSession({"/v1/applicationmfaadoptionstatus": _adoption([today_bad])}))
    check = report.check("mfa_compliance")
    assert not check.passed and "2 without MFA on 2025-01-15" in check.evidence and "amr" in check.fix


def test_mfa_self_test_not_offered_passes_with_a_note():
    report, _ = run(session=FakeSession({"/v1/applicationmfaadoptionstatus": 404}))
    assert report.check("mfa_compliance").passed and "not offered" in report.check("mfa_compliance").evidence


def test_app_only_refused_says_how_to_register_the_app():
    tokens = FakeTokenProvider()
    session = FakeSession()
    real_get = session.get

    def get(url, headers=None, timeout=None):
        if headers and headers.get("Authorization") == f"Bearer {tokens.app}":
            session.requests.append((url, dict(headers), timeout))
            return response(401, {"code": 400, "description": "Access denied"})
        return real_get(url, headers=headers, timeout=timeout)

    session.get = get
    report, _ = run(tokens, session)
    check = report.check("app_only_access")
    assert not check.passed and "App management" in check.fix
