"""Verify Connectivity: one named check per permission the sync needs, each with evidence (an
HTTP status or error code) and a fix in plain words. The report is stored on the provider row.

The few Partner Center GETs here are deliberately not made through the sync's client: a check
must show the raw answer (401 vs 403, the ApiFault code), not a retried or translated one.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import requests

from shared import telemetry
from shared.checks import Check, fail, ok
from shared.clock import Clock, to_iso, utc_now
from shared.errors import Conflict, ConsentRequired, NotFound
from shared.logging import get_logger
from shared.providers import ProviderConnection, validate_provider_id
from shared.settings import SettingsError

from shared.token_health import (
    CONDITIONAL_ACCESS_CODE,
    MFA_CLAIM_MISSING,
    MFA_REQUIRED_CODE,
    TokenHealth,
    describe,
    partner_center_code,
)

from .entra import IdentityProviderUnavailable, TokenRequestFailed, http_session, unverified_claims
from .tokens import TokenProvider

log = get_logger(__name__)

GRAPH_BILLING_ROLE = "PartnerBilling.Read.All"
PC_TIMEOUT = (5, 30)
USER_MANAGEMENT = "in Partner Center (Account settings > User management)"


@dataclass(frozen=True)
class VerifyReport:
    provider_id: str
    checked_at: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "providerId": self.provider_id,
            "passed": self.passed,
            "checkedAt": self.checked_at,
            "checks": [c.verdict_json() for c in self.checks],
        }


# What a missing provider, an unusable tenant or an empty setting raises: the check fails with
# the error's own message, which says what to fix.
SETUP_ERRORS = (NotFound, Conflict, SettingsError)


def _setup_failed(name: str, exc: Exception) -> Check:
    return fail(name, type(exc).__name__, str(exc))


def _token_error_evidence(exc: TokenRequestFailed) -> str:
    """``invalid_client AADSTS7000215``: the OAuth error and its AADSTS numbers."""
    return " ".join(filter(None, [exc.error] + [f"AADSTS{c}" for c in exc.codes]))


def _fault_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        code = body.get("code") or body.get("errorCode")
        if isinstance(body.get("error"), dict):
            code = code or body["error"].get("code")
        return str(code) if code not in (None, "") else None
    return None


def _refusal_health(status: int, code: str | None) -> TokenHealth | None:
    return {(401, MFA_REQUIRED_CODE): TokenHealth.MFA_REQUIRED,
            (403, CONDITIONAL_ACCESS_CODE): TokenHealth.CONDITIONAL_ACCESS_BLOCKED}.get((status, code))


def _kept_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _count(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


# the checks whose failure says the App+User token is refused, and what a pass clears
_HEALTH_CHECKS = ("organization_profile", "mfa_compliance")


def _health_after_verify(report: VerifyReport, provider: ProviderConnection) -> dict[str, Any]:
    """The provider's ``token_health`` after Verify: the MFA or Conditional Access cause it saw,
    or cleared when the App+User checks pass (an earlier refusal was fixed)."""
    for check in report.checks:
        if check.name in _HEALTH_CHECKS and not check.passed:
            for health, code in ((TokenHealth.MFA_REQUIRED, MFA_REQUIRED_CODE),
                                 (TokenHealth.CONDITIONAL_ACCESS_BLOCKED, CONDITIONAL_ACCESS_CODE)):
                if f"code {code}" in check.evidence:
                    return {"token_health": health, "token_health_at": report.checked_at}
    passed = all(c.passed for c in report.checks if c.name in _HEALTH_CHECKS + ("token_refresh",))
    if passed and provider.token_health:
        return {"token_health": None, "token_health_at": None}
    return {}


# Partner Center answers per check: (fix for 401, fix for 403)
_PC_FIXES = {
    "organization_profile": (
        "Partner Center refused the App+User token. Make sure MFA triggers on every sign-in of the "
        "integration user, then consent again.",
        f"Give the integration user a Partner Center role {USER_MANAGEMENT}, e.g. Sales Agent.",
    ),
    "customers_read": (
        "Partner Center refused the App+User token. Make sure MFA triggers on every sign-in, then consent again.",
        f"Give the integration user the Sales Agent role {USER_MANAGEMENT}.",
    ),
    "invoices_read": (
        "Partner Center refused the App+User token. Make sure MFA triggers on every sign-in, then consent again.",
        f"Give the integration user the Billing Admin role {USER_MANAGEMENT}.",
    ),
    "app_only_access": (
        "Partner Center refused the app's own (app-only) token: register the app in Partner Center (Account "
        "settings > App management > Add new web app) with this client id. Until then every call uses the "
        "App+User token, so an MFA problem stops the whole sync.",
        "Partner Center refused the app-only token for this call: register the app in Partner Center's App "
        "management with this client id.",
    ),
    "mfa_compliance": (
        "Partner Center refused the App+User token.",
        f"Give the integration user an admin role {USER_MANAGEMENT} to read the MFA report.",
    ),
}


@dataclass(frozen=True, kw_only=True)
class VerifyService:
    """Runs the checks for one provider and stores the report on its row. ``session`` (default:
    a fresh one per run, without retries) and ``clock`` are for tests."""

    settings: Any
    providers: Any
    token_sources: Callable[[ProviderConnection], TokenProvider]
    session: requests.Session | None = None
    clock: Clock = utc_now

    def verify(self, provider_id: str) -> VerifyReport:
        with telemetry.span("pcsync.verify", provider=provider_id):
            validate_provider_id(provider_id)
            provider = self.providers.get_provider(provider_id)  # NotFound -> 404
            tokens = self.token_sources(provider)
            session = self.session or http_session(self.settings, retries=0)
            correlation_id = str(uuid.uuid4())

            checks: list[Check] = []
            token, token_check = self._token_refresh(tokens)
            checks.append(token_check)
            claims = unverified_claims(token)
            checks.append(self._mfa_claim(token, claims))
            checks.append(self._tenant_matches(provider, token, claims))
            for name, path in (
                ("organization_profile", "/v1/profiles/organization"),
                ("customers_read", "/v1/customers?size=1"),
                ("invoices_read", "/v1/invoices?size=1"),
            ):
                checks.append(self._partner_center_get(session, name, path, token, correlation_id))
            checks.append(self._app_only_access(session, tokens, correlation_id))
            checks.append(self._mfa_compliance(session, token, correlation_id))
            if provider.cost_management:
                checks.append(self._graph_billing(tokens))

            report = VerifyReport(provider_id, to_iso(self.clock()), tuple(checks))
            self.providers.update_status(
                provider_id, verify_result=json.dumps(report.to_json()), verified_at=report.checked_at,
                **_health_after_verify(report, provider),
            )
            telemetry.annotate(outcome="passed" if report.passed else "failed",
                               failed_checks=[c.name for c in checks if not c.passed])
            log.info("verify for provider %s: %s", provider_id,
                     ", ".join(f"{c.name}={'ok' if c.passed else 'FAIL'}" for c in checks))
            return report

    # -- the checks -------------------------------------------------------------------------

    @staticmethod
    def _token_refresh(tokens: TokenProvider) -> tuple[str | None, Check]:
        name = "token_refresh"
        try:
            return tokens.access_token(force_refresh=True), ok(name, "access token issued")
        except ConsentRequired as exc:
            return None, fail(name, f"consent {exc.status}", str(exc))
        except TokenRequestFailed as exc:
            return None, fail(name, _token_error_evidence(exc), "Check the app registration: client id, "
                              "and the client secret or certificate stored in Key Vault.")
        except IdentityProviderUnavailable:
            return None, fail(name, "Entra ID unreachable", "Try again later; check network access to "
                              "Entra ID from the Function App.")
        except SETUP_ERRORS as exc:
            return None, _setup_failed(name, exc)

    @staticmethod
    def _mfa_claim(token: str | None, claims: dict[str, Any]) -> Check:
        name = "mfa_claim"
        if token is None:
            return fail(name, "skipped: no access token", "Fix token_refresh first.")
        amr = [str(a) for a in claims.get("amr") or []]
        if "mfa" in amr:
            return ok(name, "amr=" + ",".join(amr))
        return fail(name, "amr=" + (",".join(amr) or "(none)"),
                     "Enable MFA for the integration user so that it triggers on every sign-in, then consent again. "
                     + MFA_CLAIM_MISSING)

    @staticmethod
    def _tenant_matches(provider: ProviderConnection, token: str | None, claims: dict[str, Any]) -> Check:
        name = "tenant_matches"
        if token is None:
            return fail(name, "skipped: no access token", "Fix token_refresh first.")
        tid = str(claims.get("tid") or "")
        if tid.lower() == str(provider.tenant_id).lower():
            return ok(name, f"tid={tid}")
        return fail(name, f"tid={tid or '(none)'}",
                    f"The provider's tenant id is {provider.tenant_id} but the integration user signed in to "
                    f"tenant {tid or 'unknown'}: correct the provider's tenant id or consent with a user of "
                    "the partner tenant.")

    def _partner_center_get(
        self, session: requests.Session, name: str, path: str, token: str | None, correlation_id: str,
        keep: bool = False,
    ) -> Check | dict[str, Any]:
        """The check for one GET; with ``keep`` a 200 answer's JSON object instead (for a check
        that reads the body)."""
        if token is None:
            return fail(name, "skipped: no access token", "Fix token_refresh first.")
        url = self.settings.partner_center_url.rstrip("/") + path
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "MS-RequestId": str(uuid.uuid4()),
            "MS-CorrelationId": correlation_id,
        }
        try:
            # verify sends its own requests (not through the transport), so its attempt spans are here
            with telemetry.span("partner center GET", {"http.request.method": "GET", "url.path": path,
                                **telemetry.header_attributes("request", headers)}, client=True, check=name) as span:
                response = session.get(url, headers=headers, timeout=PC_TIMEOUT)
                span.set({"http.response.status_code": response.status_code,
                          **telemetry.header_attributes("response", response.headers)})
        except requests.RequestException as exc:
            return fail(name, f"connection failed: {type(exc).__name__}",
                         f"Check that {self.settings.partner_center_url} is reachable from the Function App.")
        # the 2019 MFA refusal (401 "Unauthorized - MFA required", no body) reads as code 900421
        code = partner_center_code(response.status_code, _fault_code(response), response.reason) \
            if response.status_code >= 400 else None
        evidence = f"HTTP {response.status_code}" + (f", code {code}" if code else "")
        if response.status_code == 200:
            return _kept_body(response) if keep else ok(name, evidence)
        unauthorized, forbidden = _PC_FIXES[name]
        health = _refusal_health(response.status_code, code)
        if health is not None:  # MFA (900421, or the 2019 form) or Conditional Access (900309)
            cause, fix = describe(health)
            return fail(name, evidence, f"{cause} {fix}")
        if response.status_code == 401:
            fix = unauthorized
        elif response.status_code == 403:
            fix = forbidden
        elif response.status_code == 429 or response.status_code >= 500:
            fix = "Partner Center is busy or failing; run Verify Connectivity again in a few minutes."
        else:
            fix = f"Unexpected answer from Partner Center for {path}; see the evidence."
        return fail(name, evidence, fix)

    def _app_only_access(self, session: requests.Session, tokens: TokenProvider, correlation_id: str) -> Check:
        """The app-only token the sync sends on every call that takes one (shared.token_choice)."""
        name = "app_only_access"
        try:
            token = tokens.app_access_token(force_refresh=True)
        except TokenRequestFailed as exc:
            return fail(name, _token_error_evidence(exc), "Check the app registration's client secret or "
                         "certificate.")
        except IdentityProviderUnavailable:
            return fail(name, "Entra ID unreachable", "Try again later.")
        except SETUP_ERRORS as exc:
            return _setup_failed(name, exc)
        return self._partner_center_get(session, name, "/v1/customers?size=1", token, correlation_id)

    def _mfa_compliance(self, session: requests.Session, token: str | None, correlation_id: str) -> Check:
        """Partner Center's MFA self-test: the last 7 days of this app's App+User requests
        (``GET /v1/applicationmfaadoptionstatus``), each counted with or without MFA."""
        name = "mfa_compliance"
        url = self.settings.partner_center_url.rstrip("/") + "/v1/applicationmfaadoptionstatus"
        check = self._partner_center_get(session, name, "/v1/applicationmfaadoptionstatus", token, correlation_id,
                                         keep=True)
        if isinstance(check, Check):
            if check.evidence.startswith("HTTP 404"):
                return ok(name, "self-test not offered by this Partner Center (HTTP 404)")
            return check
        rows = [r for r in (check.get("items") or []) if isinstance(r, dict)
                and str(r.get("applicationId", "")).lower() == str(self.settings.client_id).lower()]
        total = sum(_count(r.get("totalRequestCount")) for r in rows)
        compliant = sum(_count(r.get("mfaCompliantRequestCount")) for r in rows)
        evidence = f"{compliant} of {total} App+User requests of this app in the last 7 days carried MFA ({url})"
        # judged on the newest day, so a fixed setup passes now rather than when old requests age out
        newest = max((str(r.get("date") or "") for r in rows), default="")
        latest = [r for r in rows if str(r.get("date") or "") == newest]
        missing = sum(_count(r.get("totalRequestCount")) - _count(r.get("mfaCompliantRequestCount")) for r in latest)
        if missing <= 0:
            return ok(name, evidence)
        return fail(name, f"{evidence}; {missing} without MFA on {newest}",
                     describe(TokenHealth.MFA_REQUIRED)[1])

    @staticmethod
    def _graph_billing(tokens: TokenProvider) -> Check:
        name = "graph_billing_permission"
        fix = (f"In Entra ID, add the Microsoft Graph application permission {GRAPH_BILLING_ROLE} to the app "
               "registration and grant admin consent in the partner tenant.")
        try:
            token = tokens.graph_token(force_refresh=True)
        except TokenRequestFailed as exc:
            return fail(name, _token_error_evidence(exc),
                        "Check the app registration's client secret or certificate; " + fix)
        except IdentityProviderUnavailable:
            return fail(name, "Entra ID unreachable", "Try again later.")
        except SETUP_ERRORS as exc:
            return _setup_failed(name, exc)
        roles = [str(r) for r in unverified_claims(token).get("roles") or []]
        if GRAPH_BILLING_ROLE in roles:
            return ok(name, f"roles include {GRAPH_BILLING_ROLE}")
        return fail(name, "roles=" + (",".join(roles) or "(none)"), fix)
