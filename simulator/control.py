"""Control API under /_sim/ (no auth, JSON): truth, mutations, clock, faults, identities."""
from __future__ import annotations

import datetime as dt

from simulator.billing_control import BillingControl
from simulator.audit import audit
from simulator.clock import iso, parse_iso
from simulator.config import FAULT_KNOBS
from simulator.data import GRAPH_BILLING_PERMISSION
from simulator.entra import SIGN_IN_ACTIONS, Entra
from simulator.faults import FaultInjector
from simulator.invoices import render_invoice
from simulator.lifecycle import seed_subscription_options
from simulator.line_items import invoice_stream_counts
from simulator.partner_center import (render_agreement, render_customer,
                                      render_subscription)
from simulator.state import SimulatorState
from simulator.throttle import Throttle
from simulator.web import HttpError, Request, Response, Router, json_response, route
from simulator.webhooks import CERT_PATH, Webhooks

SERVICE = "control"
KNOWN_ROLES = {"SalesAgent", "BillingAdmin", "AdminAgent", "HelpdeskAgent", "GlobalAdmin"}


def _error(status: int, message: str) -> HttpError:
    return HttpError(json_response(status, {"error": message}))


def _object_body(req: Request) -> dict:
    body = req.json() if req.body else {}
    if not isinstance(body, dict):
        raise _error(400, "the request body must be a JSON object")
    return body


def _body_of_known_keys(req: Request, known, what: str) -> dict:
    """A JSON object body whose keys are all in ``known`` (else 400 naming the unknown ones)."""
    body = _object_body(req)
    unknown = set(body) - set(known)
    if unknown:
        raise _error(400, f"unknown {what} {sorted(unknown)}; known: {list(known)}")
    return body


class Control:
    def __init__(self, state: SimulatorState, entra: Entra, faults: FaultInjector, throttle: Throttle,
                 webhooks: Webhooks, webhook_cert_pem: bytes, info: dict, billing: BillingControl | None = None):
        self.state, self.entra, self.faults, self.throttle = state, entra, faults, throttle
        self.billing = billing or BillingControl(state)
        self.webhooks, self.webhook_cert_pem, self.info = webhooks, webhook_cert_pem, info

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE, prefix="/_sim")

    # ---- health and truth ---------------------------------------------------------------
    @route("GET", "/health")
    def health(self, req: Request) -> Response:
        with self.state.lock:
            counts = {"customers": len(self.state.customers),
                      "subscriptions": sum(len(s) for s in self.state.subscriptions.values()),
                      "invoices": len(self.state.invoices)}
        return json_response(200, {"status": "ok", "now": iso(self.state.clock.now()), **counts})

    @route("GET", "/info")
    def get_info(self, req: Request) -> Response:
        return json_response(200, self.info)

    @route("GET", "/truth/customers")
    def truth_customers(self, req: Request) -> Response:
        with self.state.lock:
            items = [render_customer(c) for c in self.state.customers.values()]
        return json_response(200, {"totalCount": len(items), "items": items})

    @route("GET", "/truth/subscriptions")
    def truth_subscriptions(self, req: Request) -> Response:
        wanted = (req.query.get("customer") or "").lower()
        now = self.state.clock.now()
        with self.state.lock:
            self.state.advance_lifecycle()
            if wanted and wanted not in self.state.subscriptions:
                raise _error(404, f"unknown customer {wanted}")
            items = []
            for customer_id, subs in self.state.subscriptions.items():
                if not wanted or customer_id == wanted:
                    items.extend({**render_subscription(s, now), "customerId": customer_id, "isNce": s.nce}
                                 for s in subs.values())
        return json_response(200, {"totalCount": len(items), "items": items})

    @route("GET", "/truth/agreements")
    def truth_agreements(self, req: Request) -> Response:
        with self.state.lock:
            items = [{**render_agreement(a, with_user=True), "customerId": a.customer_id}
                     for agreements in self.state.agreements.values() for a in agreements]
        return json_response(200, {"totalCount": len(items), "items": items})

    @route("GET", "/truth/invoices")
    def truth_invoices(self, req: Request) -> Response:
        with self.state.lock:
            invoices = list(self.state.invoices.values())
        items = [{**render_invoice(self.state, i),
                  "lineItemCounts": invoice_stream_counts(i, self.state.billing_plan(i.id))} for i in invoices]
        return json_response(200, {"totalCount": len(items), "items": items})

    # ---- mutations ----------------------------------------------------------------------
    @route("POST", "/customers")
    def add_customer(self, req: Request) -> Response:
        body = _object_body(req)
        for key in ("companyName", "domain", "id", "country"):
            if key in body and not isinstance(body[key], str):
                raise _error(400, f"{key} must be a string")
        if not isinstance(body.get("upperCaseId", False), bool):
            raise _error(400, "upperCaseId must be a boolean")
        with self.state.lock:
            customer_id = body.get("id", "").lower() or None
            if customer_id and customer_id in self.state.customers:
                raise _error(409, f"customer {customer_id} already exists")
            customer = self.state.factory.new_customer(body.get("companyName"), body.get("domain"), customer_id,
                                                       body.get("country"))
            if body.get("upperCaseId"):
                # Partner Center ids are case-insensitive: this customer is served with an
                # upper-case id, and found by its id in any case (state stays keyed by lower case)
                customer.id = customer.id.upper()
            self.state.customers[customer.id.lower()] = customer
            self.state.subscriptions[customer.id.lower()] = {}
            audit(self.state, customer.id, "customer", "add_customer", render_customer(customer))
            return json_response(201, render_customer(customer))

    @route("DELETE", "/customers/{customer_id}")
    def delete_customer(self, req: Request) -> Response:
        customer_id = req.params["customer_id"].lower()
        with self.state.lock:
            if self.state.customers.pop(customer_id, None) is None:
                raise _error(404, f"unknown customer {customer_id}")
            self.state.subscriptions.pop(customer_id, None)
            self.state.agreements.pop(customer_id, None)
            audit(self.state, customer_id, "customer", "delete_customer")
        return Response(204)

    @route("POST", "/customers/{customer_id}/subscriptions")
    def add_subscription(self, req: Request) -> Response:
        body = _object_body(req)
        customer_id = req.params["customer_id"].lower()
        options = {}
        for key, kind in (("nce", bool), ("quantity", int), ("status", str), ("days_ago", int),
                          ("term_duration", str), ("billing_cycle", str)):
            if key in body:
                if not isinstance(body[key], kind) or (kind is int and isinstance(body[key], bool)):
                    raise _error(400, f"{key} must be of type {kind.__name__}")
                options[key] = body[key]
        if options.get("status", "active") not in ("active", "suspended", "deleted"):
            raise _error(400, "status must be active, suspended or deleted")
        with self.state.lock:
            if customer_id not in self.state.customers:
                raise _error(404, f"unknown customer {customer_id}")
            sub = self.state.factory.new_subscription(customer_id, **options)
            if "cancellation_allowed_until" in body:
                sub.cancellation_allowed_until = self._parse_time(body["cancellation_allowed_until"])
            try:
                seed_subscription_options(sub, body, self.state.clock.now())
            except ValueError as exc:
                raise _error(400, str(exc))
            self.state.subscriptions[customer_id][sub.id.lower()] = sub
            audit(self.state, customer_id, "order", "create_order", None, SubscriptionId=sub.id)
            return json_response(201, {**render_subscription(sub, self.state.clock.now()), "customerId": customer_id})

    @staticmethod
    def _parse_time(value) -> dt.datetime:
        try:
            return parse_iso(str(value))
        except ValueError:
            raise _error(400, f"not an ISO-8601 time: {value!r}")

    @route("PATCH", "/subscriptions/{customer_id}/{subscription_id}")
    def patch_subscription(self, req: Request) -> Response:
        """Change a subscription 'upstream' (as if in Partner Center's UI): no business rules,
        but the etag version is bumped like any other write."""
        body = _object_body(req)
        with self.state.lock:
            sub = self.state.subscription(req.params["customer_id"], req.params["subscription_id"])
            if sub is None:
                raise _error(404, "unknown subscription")
            if "quantity" in body:
                if isinstance(body["quantity"], bool) or not isinstance(body["quantity"], int) or body["quantity"] < 0:
                    raise _error(400, "quantity must be a non-negative integer")
                sub.quantity = body["quantity"]
            if "status" in body:
                if body["status"] not in ("active", "suspended", "deleted", "expired", "disabled"):
                    raise _error(400, "unsupported status")
                sub.status = body["status"]
                sub.suspension_reasons = ["CustomerCancellation"] if sub.status == "suspended" else []
            for key, attr in (("autoRenewEnabled", "auto_renew"), ("friendlyName", "friendly_name")):
                if key in body:
                    setattr(sub, attr, body[key])
            if "cancellationAllowedUntilDate" in body:
                sub.cancellation_allowed_until = self._parse_time(body["cancellationAllowedUntilDate"])
            sub.version += 1
            audit(self.state, sub.customer_id, "subscription", "update_subscription", None, SubscriptionId=sub.id)
            return json_response(200, render_subscription(sub, self.state.clock.now()))

    @route("DELETE", "/subscriptions/{customer_id}/{subscription_id}")
    def delete_subscription(self, req: Request) -> Response:
        with self.state.lock:
            subs = self.state.subscriptions.get(req.params["customer_id"].lower(), {})
            if subs.pop(req.params["subscription_id"].lower(), None) is None:
                raise _error(404, "unknown subscription")
            audit(self.state, req.params["customer_id"], "subscription", "delete_subscription", None,
                  SubscriptionId=req.params["subscription_id"].lower())
        return Response(204)

    @route("POST", "/invoices")
    def add_invoice(self, req: Request) -> Response:
        body = _object_body(req)
        new_commerce = body.get("kind", "G") != "D"
        line_items = body.get("line_items")
        if line_items is not None and (isinstance(line_items, bool) or not isinstance(line_items, int) or line_items < 0):
            raise _error(400, "line_items must be a non-negative integer")
        with self.state.lock:
            invoice = self.state.factory.new_invoice(months_back=0, new_commerce=new_commerce, line_items=line_items)
            invoice.invoice_date = self.state.clock.now()
            self.state.invoices[invoice.id] = invoice
        knobs = body.get("billing") or {}
        if not isinstance(knobs, dict):
            raise _error(400, "billing must be an object of billing knobs")
        if knobs or body.get("currency"):
            try:
                self.billing.plant(invoice, {**knobs, **({"currency": body["currency"]} if body.get("currency") else {})})
            except HttpError:
                with self.state.lock:
                    self.state.invoices.pop(invoice.id, None)
                raise
        return json_response(201, render_invoice(self.state, invoice))

    # ---- clock, calls, faults -----------------------------------------------------------
    @route("GET", "/clock")
    def get_clock(self, req: Request) -> Response:
        return json_response(200, {"now": iso(self.state.clock.now())})

    @route("POST", "/clock")
    def set_clock(self, req: Request) -> Response:
        body = _object_body(req)
        if "advance_days" in body or "advance_seconds" in body:
            try:
                delta = dt.timedelta(days=float(body.get("advance_days", 0)), seconds=float(body.get("advance_seconds", 0)))
            except (TypeError, ValueError):
                raise _error(400, "advance_days/advance_seconds must be numbers")
            now = self.state.clock.advance(delta)
        elif "now" in body:
            now = self.state.clock.set(self._parse_time(body["now"]))
        else:
            raise _error(400, "send {\"advance_days\": N} or {\"now\": \"<ISO-8601>\"}")
        self.state.advance_lifecycle()  # renewals, EST conversions and expiries that fell due
        return json_response(200, {"now": iso(now)})

    @route("GET", "/calls")
    def calls(self, req: Request) -> Response:
        with self.state.lock:
            view = {key: {"count": c.count, "throttled": c.throttled, "faulted": c.faulted, "statuses": dict(c.statuses)}
                    for key, c in sorted(self.state.calls.items())}
        return json_response(200, view)

    @route("POST", "/calls/reset")
    def reset_calls(self, req: Request) -> Response:
        with self.state.lock:
            self.state.calls.clear()
        return Response(204)

    def _fault_view(self) -> dict:
        return {**self.faults.snapshot(), "rate_limit_per_minute": self.throttle.partner_per_minute,
                "customer_rate_limit_per_minute": self.throttle.customer_per_minute,
                "export_running_polls": self.state.config.export_running_polls,
                "export_retry_after_seconds": self.state.config.export_retry_after_seconds}

    @route("GET", "/faults")
    def get_faults(self, req: Request) -> Response:
        return json_response(200, self._fault_view())

    @route("PUT", "/faults")
    def set_faults(self, req: Request) -> Response:
        body = _body_of_known_keys(req, FAULT_KNOBS, "knobs")
        limits = {k: body.pop(k) for k in ("rate_limit_per_minute", "customer_rate_limit_per_minute") if k in body}
        exports = {k: body.pop(k) for k in ("export_running_polls", "export_retry_after_seconds") if k in body}
        for key, value in {**limits, **exports}.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise _error(400, f"{key} must be a non-negative integer")
        try:
            self.faults.update(body)
        except ValueError as exc:
            raise _error(400, str(exc))
        if limits:
            config = self.state.config
            partner = limits.get("rate_limit_per_minute") or self.throttle.partner_per_minute
            if "customer_rate_limit_per_minute" in limits:
                config.customer_rate_limit_per_minute = limits["customer_rate_limit_per_minute"] or None
            # An unset customer limit follows the partner limit, as at start-up.
            customer = config.customer_rate_limit_per_minute or partner
            if partner < 1 or customer < 1:
                raise _error(400, "rate limits must be >= 1")
            config.rate_limit_per_minute = partner
            self.throttle.configure(partner, customer)
        for key, value in exports.items():
            setattr(self.state.config, key, value)
        return json_response(200, self._fault_view())

    # ---- identities ---------------------------------------------------------------------
    def _user_view(self) -> dict:
        user = self.state.user
        return {"upn": user.upn, "oid": user.oid, "roles": list(user.roles), "mfa_registered": user.mfa_registered}

    @route("GET", "/users/integration")
    def get_user(self, req: Request) -> Response:
        with self.state.lock:
            return json_response(200, self._user_view())

    @route("POST", "/users/integration")
    def set_user(self, req: Request) -> Response:
        body = _object_body(req)
        with self.state.lock:
            if "roles" in body:
                roles = body["roles"]
                if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                    raise _error(400, "roles must be a list of strings")
                unknown = [r for r in roles if r not in KNOWN_ROLES]
                if unknown:
                    raise _error(400, f"unknown roles {unknown}; known: {sorted(KNOWN_ROLES)}")
                self.state.user.roles = list(roles)
            if "mfa_registered" in body:
                if not isinstance(body["mfa_registered"], bool):
                    raise _error(400, "mfa_registered must be a boolean")
                self.state.user.mfa_registered = body["mfa_registered"]
            return json_response(200, self._user_view())

    @route("POST", "/tokens/revoke")
    def revoke_tokens(self, req: Request) -> Response:
        with self.state.lock:
            revoked = 0
            for record in self.state.refresh_tokens.values():
                if record.user_oid == self.state.user.oid and not record.revoked:
                    record.revoked, revoked = True, revoked + 1
        return json_response(200, {"revoked": revoked})

    @route("GET", "/app/permissions")
    def get_permissions(self, req: Request) -> Response:
        with self.state.lock:
            return json_response(200, {"graph_application": list(self.state.app.graph_application_permissions),
                                       "graph_delegated": list(self.state.app.graph_delegated_permissions)})

    @route("POST", "/app/permissions")
    def set_permissions(self, req: Request) -> Response:
        body = _object_body(req)
        with self.state.lock:
            for key, attr in (("graph_application", "graph_application_permissions"),
                              ("graph_delegated", "graph_delegated_permissions")):
                if key in body:
                    value = body[key]
                    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                        raise _error(400, f"{key} must be a list of permission names, e.g. [\"{GRAPH_BILLING_PERMISSION}\"]")
                    setattr(self.state.app, attr, list(value))
        return self.get_permissions(req)

    @route("GET", "/entra/signin")
    def sign_in(self, req: Request) -> Response:
        """Skip the HTML page: complete a sign-in for an msal auth_uri and return the redirect."""
        auth_uri = req.query.get("auth_uri")
        choice = str(req.query.get("mfa", "true")).lower()
        action = {"true": "signin_mfa", "false": "signin_nomfa", "decline": "decline"}.get(choice, choice)
        if not auth_uri or action not in SIGN_IN_ACTIONS:
            raise _error(400, "auth_uri is required and mfa must be true, false or decline")
        try:
            return json_response(200, {"redirect": self.entra.sign_in_redirect(auth_uri, action)})
        except (ValueError, KeyError) as exc:
            raise _error(400, str(exc))

    # ---- webhooks -----------------------------------------------------------------------
    @route("POST", "/webhooks/send")
    def send_webhook(self, req: Request) -> Response:
        body = _object_body(req)
        try:
            record = self.webhooks.send_event(body)
        except ValueError as exc:
            raise _error(400, str(exc))
        except LookupError as exc:
            raise _error(409, str(exc))
        status = 200 if record.get("status") is not None else 502
        return json_response(status, {"delivered": record.get("status") is not None, **record})

    @route("GET", "/webhooks/deliveries")
    def webhook_deliveries(self, req: Request) -> Response:
        with self.state.lock:
            return json_response(200, list(self.state.webhook_deliveries))

    @route("GET", CERT_PATH.removeprefix("/_sim"))
    def webhook_cert(self, req: Request) -> Response:
        return Response(200, self.webhook_cert_pem, [("Content-Type", "application/x-pem-file")])
