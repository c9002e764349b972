"""Control API for the 2026 rules (issue 11), under /_sim/ like the rest of the control API:
run-time settings, the EST backfill, lifecycle truth, the customer's side of an enhanced
attestation, and refresh-token failures. See simulator/STATUS.md, "2026 rules"."""
from __future__ import annotations

import datetime as dt

from simulator import attestation, lifecycle
from simulator.clock import iso
from simulator.data import NCE_PRODUCTS, Subscription
from simulator.state import SimulatorState
from simulator.web import HttpError, Request, Response, Router, json_response, route

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
END_OF_TERM = {"renew": lifecycle.RENEW, "cancel": lifecycle.CANCEL, "est": lifecycle.EST, "none": None}
# what the next refresh-token redemption answers (simulator/entra.py reads state.refresh_failure)
REFRESH_FAILURES = ("none", "expired", "revoked", "mfa", "conditional_access")


def _error(status: int, message: str) -> HttpError:
    return HttpError(json_response(status, {"error": message}))


def _object_body(req: Request) -> dict:
    body = req.json() if req.body else {}
    if not isinstance(body, dict):
        raise _error(400, "the request body must be a JSON object")
    return body


def _typed(key: str, value, kind: type):
    if kind is bool and isinstance(value, bool):
        return value
    if kind in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)) \
            and (kind is float or float(value).is_integer()):
        return kind(value)
    if kind is str and isinstance(value, str):
        return value
    raise _error(400, f"{key} must be of type {kind.__name__}")


def seed_subscription_options(sub: Subscription, body: dict, now: dt.datetime) -> None:
    """POST /_sim/customers/{id}/subscriptions extras: ``software`` (bool), ``autoRenewEnabled``
    (bool), ``ends_in_days`` (number), ``end_of_term`` (renew|cancel|est|none) and
    ``extended_service_term`` (bool: in EST already). New-commerce subscriptions only."""
    if not sub.nce:
        return
    if "software" in body:
        product = NCE_PRODUCTS[4] if _typed("software", body["software"], bool) else NCE_PRODUCTS[0]
        sub.offer_id, sub.offer_name = f"{product[0]}:{product[1]}:{product[2]}", product[3]
        sub.friendly_name, sub.product_type = product[3], {"id": product[4], "displayName": product[5]}
    if "autoRenewEnabled" in body:
        sub.auto_renew = _typed("autoRenewEnabled", body["autoRenewEnabled"], bool)
        sub.scheduled_actions = []
    if "ends_in_days" in body:
        days = _typed("ends_in_days", body["ends_in_days"], float)
        sub.commitment_end = (now + dt.timedelta(days=days)).replace(microsecond=0)
    if "end_of_term" in body:
        chosen = body["end_of_term"]
        if chosen not in END_OF_TERM:
            raise _error(400, f"end_of_term must be one of {sorted(END_OF_TERM)}")
        sub.auto_renew = chosen == "renew"
        sub.scheduled_actions = [lifecycle.action(END_OF_TERM[chosen])] if END_OF_TERM[chosen] else []
    if "end_of_term" not in body:
        lifecycle.seed_end_of_term(sub)
    if body.get("extended_service_term") is True:
        lifecycle.backfill([sub], None, now, immediately=True)


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
        body = _object_body(req)
        unknown = set(body) - set(SETTINGS)
        if unknown:
            raise _error(400, f"unknown settings {sorted(unknown)}; known: {list(SETTINGS)}")
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
