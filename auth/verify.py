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
            if provider.cost_management:
                checks.append(self._graph_billing(tokens))

            report = VerifyReport(provider_id, to_iso(self.clock()), tuple(checks))
            self.providers.update_status(
                provider_id, verify_result=json.dumps(report.to_json()), verified_at=report.checked_at
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
                    "Enable MFA for the integration user so that it triggers on every sign-in, then consent again.")

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
        self, session: requests.Session, name: str, path: str, token: str | None, correlation_id: str
    ) -> Check:
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
        code = _fault_code(response) if response.status_code >= 400 else None
        evidence = f"HTTP {response.status_code}" + (f", code {code}" if code else "")
        if response.status_code == 200:
            return ok(name, evidence)
        unauthorized, forbidden = _PC_FIXES[name]
        if response.status_code == 401:
            fix = unauthorized
        elif response.status_code == 403:
            fix = forbidden
        elif response.status_code == 429 or response.status_code >= 500:
            fix = "Partner Center is busy or failing; run Verify Connectivity again in a few minutes."
        else:
            fix = f"Unexpected answer from Partner Center for {path}; see the evidence."
        return fail(name, evidence, fix)

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
