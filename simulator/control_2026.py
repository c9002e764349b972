"""Control API for the 2026 rules (issue 11), under /_sim/ like the rest of the control API:
run-time settings, the EST backfill, lifecycle truth, the customer's side of an enhanced
attestation, and refresh-token failures. See simulator/STATUS.md, "2026 rules"."""
from __future__ import annotations

from simulator import attestation, lifecycle
from simulator.clock import iso
from simulator.control import _body_of_known_keys, _error, _object_body
from simulator.data import Subscription
from simulator.state import SimulatorState
from simulator.web import Request, Response, Router, json_response, route

SERVICE = "control"
# setting -> (type, check, what the error says)
SETTINGS = {
    "est_conversion_hours": (float, lambda v: v >= 0, "a number >= 0"),
    "pending_operation_seconds": (float, lambda v: v >= 0, "a number >= 0"),
    "allow_multi_property_patch": (bool, None, "a boolean"),
    "legacy_agreement_confirmation": (bool, None, "a boolean"),
    "attestation_link_days": (int, lambda v: v >= 1, "an integer >= 1"),
    "mfa_error_format": (str, lambda v: v in ("2026", "2019"), '"2026" or "2019"'),
    "mfa_enforcement": (float, lambda v: 0 <= v <= 1, "a number between 0 and 1"),
    "conditional_access_block": (bool, None, "a boolean"),
    "trusted_location_skips_mfa": (bool, None, "a boolean"),
}
# what the next refresh-token redemption answers (simulator/entra.py reads state.refresh_failure)
REFRESH_FAILURES = ("none", "expired", "revoked", "mfa", "conditional_access")


def _typed(key: str, value, kind: type):
    try:
        return lifecycle.typed(key, value, kind)
    except ValueError as exc:
        raise _error(400, str(exc))


def lifecycle_view(sub: Subscription) -> dict:
    return {"customerId": sub.customer_id.lower(), "subscriptionId": sub.id, "status": sub.status,
            "autoRenewEnabled": sub.auto_renew, "endOfTermAction": lifecycle.end_of_term_action(sub),
            "isExtendedServiceTerm": sub.extended_service_term, "commitmentEndDate": iso(sub.commitment_end),
            "estConversionAt": iso(sub.est_conversion_at) if sub.est_conversion_at else None,
            "pendingUntil": iso(sub.pending_until) if sub.pending_until else None}


class Control2026:
    def __init__(self, state: SimulatorState, attestations=None):
        self.state, self.attestations = state, attestations

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE, prefix="/_sim")

    @route("GET", "/settings")
    def get_settings(self, req: Request) -> Response:
        return json_response(200, {key: getattr(self.state.config, key) for key in SETTINGS})

    @route("PUT", "/settings")
    def put_settings(self, req: Request) -> Response:
        body = _body_of_known_keys(req, SETTINGS, "settings")
        clean = {}
        for key, value in body.items():
            kind, check, says = SETTINGS[key]
            typed = _typed(key, value, kind)
            if check is not None and not check(typed):
                raise _error(400, f"{key} must be {says}")
            clean[key] = typed
        with self.state.lock:
            for key, value in clean.items():
                setattr(self.state.config, key, value)
        return self.get_settings(req)

    @route("POST", "/subscriptions/est-backfill")
    def est_backfill(self, req: Request) -> Response:
        body = _object_body(req)
        ids = body.get("subscriptionIds")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise _error(400, "subscriptionIds must be a list of subscription ids")
        immediately = _typed("immediately", body.get("immediately", False), bool)
        with self.state.lock:
            changed = lifecycle.backfill(self.state.all_subscriptions(), {i.lower() for i in ids} if ids else None,
                                         self.state.clock.now(), immediately)
        return json_response(200, {"changed": changed})

    @route("GET", "/truth/lifecycle")
    def truth_lifecycle(self, req: Request) -> Response:
        self.state.advance_lifecycle()
        with self.state.lock:
            subs = [lifecycle_view(s) for s in self.state.all_subscriptions() if s.nce]
            events = list(self.state.lifecycle_events)
        return json_response(200, {"subscriptions": subs, "events": events})

    @route("GET", "/truth/mfa")
    def truth_mfa(self, req: Request) -> Response:
        """Every App+User Partner Center call counted per day and app, and who called without MFA."""
        with self.state.lock:
            days = [{"date": day, "applicationId": app, "mfaCompliantRequestCount": c[0], "totalRequestCount": c[1]}
                    for (day, app), c in sorted(self.state.mfa_requests.items())]
            principals = [{"userId": oid, "applicationId": app, "userPrincipalName": v["upn"],
                           "requestCount": v["count"], "lastRequestDateTime": iso(v["last"])}
                          for (oid, app), v in self.state.non_mfa_principals.items()]
        return json_response(200, {"requests": days, "nonMfaCompliantPrincipals": principals})

    @route("POST", "/tokens/fail")
    def fail_refresh_tokens(self, req: Request) -> Response:
        reason = _object_body(req).get("reason")
        if reason not in REFRESH_FAILURES:
            raise _error(400, f"reason must be one of {list(REFRESH_FAILURES)}")
        with self.state.lock:
            self.state.refresh_failure = None if reason == "none" else reason
        return json_response(200, {"reason": reason})

    # ---- the customer's side of an enhanced attestation ---------------------------------------
    @route("GET", "/truth/attestations")
    def truth_attestations(self, req: Request) -> Response:
        with self.state.lock:
            now = self.state.clock.now()
            items = [{**attestation.render_attestation(a, now), "agreementCreated": a.agreement_created}
                     for a in self.state.attestations.values()]
            needing = sorted(cid for cid in self.state.customers
                             if attestation.needs_new_attestation(self.state.agreements.get(cid, [])))
        return json_response(200, {"totalCount": len(items), "items": items, "customersNeedingAttestation": needing})

    @route("POST", "/attestations/{attestation_id}/accept")
    def accept_attestation(self, req: Request) -> Response:
        return self._attestation_step(attestation.accept, req.params["attestation_id"])

    @route("POST", "/attestations/{attestation_id}/expire")
    def expire_attestation(self, req: Request) -> Response:
        return self._attestation_step(attestation.expire, req.params["attestation_id"])

    def _attestation_step(self, step, attestation_id: str) -> Response:
        try:
            return json_response(200, step(self.state, attestation_id))
        except LookupError as exc:
            raise _error(404, str(exc))
        except ValueError as exc:
            raise _error(409, str(exc))
