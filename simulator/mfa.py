"""MFA enforcement on App+User calls (2026: 401 with error code 900421), the Conditional Access
block (403 / 900309), and Partner Center's MFA reporting APIs (partner-center-2026.md §1.2):
``GET /v1/applicationmfaadoptionstatus`` and ``GET /v1/nonMfaCompliantPartnerPrincipals``."""
from __future__ import annotations

import datetime as dt
import random
import threading

from simulator.clock import iso, parse_iso
from simulator.pc_common import SERVICE, api_fault, collection, fail
from simulator.web import Request, Response, Router, json_response, route

INVALID_TOKEN = ("WWW-Authenticate", 'Bearer error="invalid_token"')
MFA_REQUIRED_2026 = ("Multi-factor authentication is required for App+User calls to Partner Center APIs: the "
                     "access token has no 'mfa' in its amr claim. Sign in with MFA and try again.")
CONDITIONAL_ACCESS = ("Access has been blocked by Conditional Access policies. The access policy does not allow "
                      "token issuance.")
REPORT_DAYS = 7


class MfaGate:
    """Decides whether an App+User call is refused for MFA or Conditional Access, and counts
    App+User calls per day and application for the reporting APIs."""

    def __init__(self, state):
        self.state = state
        self._rng = random.Random(state.config.seed * 104729 + 11)
        self._lock = threading.Lock()

    def refusal(self, principal) -> Response | None:
        if principal.app_only:
            return None
        config = self.state.config
        compliant = principal.has_mfa
        self._count(principal, compliant)
        if config.conditional_access_block:
            return api_fault(403, 900309, CONDITIONAL_ACCESS)
        if compliant or not self._enforced(config.mfa_enforcement):
            return None
        if config.mfa_error_format == "2019":
            # documented verbatim in 2019: status 401, reason "Unauthorized - MFA required", no body
            return Response(401, b"", [INVALID_TOKEN], reason="Unauthorized - MFA required")
        return api_fault(401, 900421, MFA_REQUIRED_2026, headers=[INVALID_TOKEN])

    def _enforced(self, share: float) -> bool:
        if share >= 1:
            return True
        with self._lock:  # progressive roll-out: some calls fail, others still pass
            return self._rng.random() < share

    def _count(self, principal, compliant: bool) -> None:
        now = self.state.clock.now()
        app = str(principal.claims.get("appid") or principal.claims.get("azp") or "")
        with self.state.lock:
            day = self.state.mfa_requests.setdefault((now.date().isoformat(), app), [0, 0])
            day[0] += int(compliant)
            day[1] += 1
            if not compliant:
                key = (principal.oid, app)
                seen = self.state.non_mfa_principals.setdefault(key, {"count": 0, "upn": ""})
                seen.update(count=seen["count"] + 1, last=now,
                            upn=str(principal.claims.get("upn") or principal.claims.get("preferred_username") or ""))


def _day(req: Request, name: str, default: dt.date) -> dt.date:
    raw = req.query.get(name)
    if not raw:
        return default
    try:
        return parse_iso(raw).date()
    except ValueError:
        raise fail(400, 2000, f"{name} must be an ISO-8601 date.", [name])


class MfaReports:
    def __init__(self, state, auth):
        self.state, self.auth = state, auth

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

    @route("GET", "/v1/applicationmfaadoptionstatus")
    def adoption_status(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True)
        today = self.state.clock.now().date()
        start = _day(req, "startDate", today - dt.timedelta(days=REPORT_DAYS - 1))
        end = _day(req, "endDate", today)
        with self.state.lock:
            rows = sorted(self.state.mfa_requests.items())
        items = [{"date": day, "applicationId": app, "mfaCompliantRequestCount": counts[0],
                  "totalRequestCount": counts[1]}
                 for (day, app), counts in rows if start.isoformat() <= day <= end.isoformat()]
        return json_response(200, collection(items))

    @route("GET", "/v1/nonMfaCompliantPartnerPrincipals")
    def non_compliant_principals(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True)
        since = self.state.clock.now() - dt.timedelta(days=REPORT_DAYS)
        with self.state.lock:
            seen = [(key, dict(value)) for key, value in self.state.non_mfa_principals.items()]
        items = [{"userId": oid, "userPrincipalName": value["upn"], "applicationId": app,
                  "requestCount": value["count"], "lastRequestDateTime": iso(value["last"])}
                 for (oid, app), value in seen if value["last"] >= since]
        items.sort(key=lambda item: item["lastRequestDateTime"], reverse=True)
        return json_response(200, collection(items[:10_000]))
