"""Control API for changes made upstream (as a partner or Microsoft would), each with a chosen
trace, and the ground truth of every change made this way.

`POST /_sim/upstream/changes` with `{"kind", "customerId", "subscriptionId"?, "trace"?, ...}`:

* kinds: `subscription_quantity` (`quantity`, default +1), `subscription_suspend`,
  `customer_profile` (a new company name), `agreement` (a new MCA confirmation), `renewal` (term
  end moves one term on, Microsoft-side), `est_conversion` (an expired, non-renewing license moves
  into an Extended Service Term, Microsoft-side);
* trace: `audit` (an activity-log record; the default for partner changes), `webhook` (only a
  signed `subscription-updated` event to the registered callback, no record; subscription kinds
  only), `none` (no trace at all; the default for `renewal` and `est_conversion`).

`GET /_sim/upstream/changes` lists every change (`id`, `kind`, `customerId`, `subscriptionId`,
`resourceType`, `trace`, `cause`, `at`); `GET /_sim/truth/auditrecords` every activity-log record.
"""
from __future__ import annotations

import datetime as dt
import uuid

from simulator.audit import all_records, audit
from simulator.clock import iso
from simulator.data import MCA_TEMPLATE_ID, Agreement
from simulator.partner_center import render_agreement, render_customer, render_subscription
from simulator.state import SimulatorState
from simulator.web import HttpError, Request, Response, Router, json_response, route
from simulator.webhooks import Webhooks

SERVICE = "control"
TRACES = ("audit", "webhook", "none")
# kind -> (resource type, audit operation type, cause when Microsoft makes the change)
KINDS = {
    "subscription_quantity": ("subscription", "update_subscription", None),
    "subscription_suspend": ("subscription", "update_subscription", None),
    "customer_profile": ("customer", "update_customer", None),
    "agreement": ("agreement", "create_customer_agreement", None),
    "renewal": ("subscription", "update_subscription", "renewal"),
    "est_conversion": ("subscription", "update_subscription", "est_conversion"),
}
EST_SUFFIX = " (Extended Service Term)"
FAR_FUTURE = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)  # usage-based subscriptions have no term end


def _error(status: int, message: str) -> HttpError:
    return HttpError(json_response(status, {"error": message}))


class Upstream:
    def __init__(self, state: SimulatorState, webhooks: Webhooks, base_url: str):
        self.state, self.webhooks, self.base_url = state, webhooks, base_url
        self.changes: list[dict] = []

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE, prefix="/_sim")

    @route("GET", "/upstream/changes")
    def list_changes(self, req: Request) -> Response:
        with self.state.lock:
            return json_response(200, {"totalCount": len(self.changes), "items": list(self.changes)})

    @route("GET", "/truth/auditrecords")
    def truth_audit_records(self, req: Request) -> Response:
        items = all_records(self.state)
        return json_response(200, {"totalCount": len(items), "items": items})

    @route("POST", "/upstream/changes")
    def make_change(self, req: Request) -> Response:
        body = req.json() if req.body else {}
        if not isinstance(body, dict):
            raise _error(400, "the request body must be a JSON object")
        kind = body.get("kind")
        if kind not in KINDS:
            raise _error(400, f"kind must be one of {sorted(KINDS)}")
        resource_type, operation, cause = KINDS[kind]
        trace = body.get("trace") or ("none" if cause else "audit")
        if trace not in TRACES:
            raise _error(400, f"trace must be one of {list(TRACES)}")
        if trace == "webhook" and resource_type != "subscription":
            raise _error(400, "only subscription changes have a webhook event (subscription-updated)")
        customer_id = str(body.get("customerId") or "").lower()
        with self.state.lock:
            if trace == "webhook" and self.state.webhook_registration is None:
                raise _error(409, "no webhook registration: register a callback before a webhook-only change")
            if customer_id not in self.state.customers:
                raise _error(404, f"unknown customer {customer_id!r}")
            target, subscription_id = self._apply(kind, customer_id, body)
            change = {"id": str(uuid.uuid4()), "kind": kind, "customerId": customer_id,
                      "subscriptionId": subscription_id, "resourceType": resource_type, "trace": trace,
                      "cause": cause, "at": iso(self.state.clock.now())}
            self.changes.append(change)
            if trace == "audit":
                audit(self.state, customer_id, resource_type, operation, target,
                      **({"SubscriptionId": subscription_id} if subscription_id else {}))
        if trace == "webhook":
            # outside the lock: the callback may read from the simulator while it is answered
            change["delivery"] = self.webhooks.deliver({
                "EventName": "subscription-updated",
                "ResourceUri": f"{self.base_url}/webhooks/v1/customers/{customer_id}/subscriptions/{subscription_id}",
                "ResourceName": "subscription", "AuditUri": None,
                "ResourceChangeUtcDate": iso(self.state.clock.now())}).get("status")
        return json_response(201, change)

    def _apply(self, kind: str, customer_id: str, body: dict) -> tuple[dict, str | None]:
        """Make the change (state lock held); returns the resource's new value and subscription id."""
        if kind == "customer_profile":
            customer = self.state.customers[customer_id]
            customer.company_name = str(body.get("companyName") or f"{customer.company_name} Renamed")
            return render_customer(customer), None
        if kind == "agreement":
            agreement = Agreement(customer_id=customer_id, type="MicrosoftCustomerAgreement", template_id=MCA_TEMPLATE_ID,
                                  date_agreed=iso(self.state.clock.now())[:10], first_name="Upstream",
                                  last_name=f"Signer{len(self.changes)}", email=f"signer{len(self.changes)}@example.com",
                                  phone="4255550199", user_id=self.state.user.oid)
            self.state.agreements.setdefault(customer_id, []).append(agreement)
            return render_agreement(agreement), None
        sub = self._subscription(customer_id, body.get("subscriptionId"), kind)
        if kind == "subscription_quantity":
            quantity = body.get("quantity", sub.quantity + 1)
            if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
                raise _error(400, "quantity must be a positive integer")
            sub.quantity = quantity
        elif kind == "subscription_suspend":
            sub.status, sub.suspension_reasons = "suspended", ["CustomerCancellation"]
        elif kind == "renewal":
            term = sub.commitment_end - sub.effective_start
            sub.effective_start, sub.commitment_end = sub.commitment_end, sub.commitment_end + term
        else:  # est_conversion: same id, one month at a time, no renewal
            sub.offer_name += EST_SUFFIX
            sub.term_duration, sub.billing_cycle, sub.auto_renew = "P1M", "monthly", False
            sub.commitment_end += dt.timedelta(days=30)
        sub.version += 1
        return render_subscription(sub, self.state.clock.now()), sub.id

    def _subscription(self, customer_id: str, subscription_id, kind: str):
        subs = self.state.subscriptions.get(customer_id, {})
        if subscription_id:
            sub = subs.get(str(subscription_id).lower())
        else:  # the customer's first active subscription with a term end (a license-based one for EST)
            any_term = kind not in ("renewal", "est_conversion")
            active = [s for s in subs.values() if s.status == "active" and (any_term or s.commitment_end < FAR_FUTURE)]
            sub = next((s for s in active if kind != "est_conversion" or (s.nce and s.billing_type == "license")),
                       active[0] if active else None)
        if sub is None:
            raise _error(404, f"no subscription for a {kind} change of customer {customer_id}")
        return sub
