"""Control API for billing files (/_sim/invoices/{id}/billing, /_sim/unbilled/billing, truth).

Tests plant what the usage checksum must find: a per-subscription mismatch, lines in one file
only, credits and adjustments, a foreign exchange rate or currency, unknown customers and
subscriptions, and a usage file that is not ready yet. Each knob is a BillingPlan field.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from decimal import Decimal

from simulator.billing_plan import BillingPlan, PlanError
from simulator.jsontext import dumps
from simulator.line_items import DAILY_RATED_USAGE, ONETIME_BILLING
from simulator.recon_rows import recon_row, usage_row
from simulator.state import SimulatorState
from simulator.web import HttpError, Request, Response, Router, json_response, route

SERVICE = "control"
UNBILLED_PLAN = "unbilled"     # the plan key the unbilled streams (both periods, every currency) read


def _error(status: int, message: str) -> HttpError:
    return HttpError(json_response(status, {"error": message}))


class BillingControl:
    def __init__(self, state: SimulatorState):
        self.state = state

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE, prefix="/_sim")

    def _invoice(self, invoice_id: str):
        invoice = self.state.invoice(invoice_id)
        if invoice is None:
            raise _error(404, f"unknown invoice {invoice_id}")
        return invoice

    def plant(self, invoice, changes: dict) -> BillingPlan:
        """Apply knobs to an invoice's plan; nothing changes when a knob is refused."""
        changes = dict(changes)
        currency = changes.pop("currency", None)
        if currency is not None and not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
            raise _error(400, "currency must be an ISO 4217 code")
        with self.state.lock:
            plan = copy.deepcopy(self.state.billing_plan(invoice.id))
            try:
                plan.apply(changes, self.state.clock.now())
            except PlanError as exc:
                raise _error(400, str(exc)) from None
            previous = (self.state.billing_plans.get(invoice.id), invoice.currency)
            self.state.billing_plans[invoice.id] = plan
            invoice.currency = currency.upper() if currency else invoice.currency
            try:
                self.state.invoice_stream(invoice, DAILY_RATED_USAGE)   # checks usageMismatch targets
            except KeyError as exc:
                self.state.billing_plans[invoice.id], invoice.currency = previous
                if previous[0] is None:
                    self.state.billing_plans.pop(invoice.id, None)
                raise _error(400, f"subscription {exc.args[0]} has no usage-based line in {invoice.id}") from None
            self.state.invoice_totals.forget(invoice.id)
        return plan

    @route("GET", "/invoices/{invoice_id}/billing")
    def get_plan(self, req: Request) -> Response:
        invoice = self._invoice(req.params["invoice_id"])
        return json_response(200, {"invoice": invoice.id, "currency": invoice.currency,
                                   **self.state.billing_plan(invoice.id).to_json()})

    @route("PATCH", "/invoices/{invoice_id}/billing")
    def patch_plan(self, req: Request) -> Response:
        invoice = self._invoice(req.params["invoice_id"])
        body = req.json() if req.body else {}
        if not isinstance(body, dict):
            raise _error(400, "the request body must be a JSON object")
        plan = self.plant(invoice, body)
        return json_response(200, {"invoice": invoice.id, "currency": invoice.currency, **plan.to_json()})

    @route("GET", "/unbilled/billing")
    def get_unbilled_plan(self, req: Request) -> Response:
        return json_response(200, self.state.billing_plan(UNBILLED_PLAN).to_json())

    @route("PATCH", "/unbilled/billing")
    def patch_unbilled_plan(self, req: Request) -> Response:
        body = req.json() if req.body else {}
        if not isinstance(body, dict) or "usageMismatch" in body or "usage_mismatch" in body:
            raise _error(400, "send a JSON object of knobs (usageMismatch is per invoice only)")
        with self.state.lock:
            plan = copy.deepcopy(self.state.billing_plan(UNBILLED_PLAN))
            try:
                plan.apply(body, self.state.clock.now())
            except PlanError as exc:
                raise _error(400, str(exc)) from None
            self.state.billing_plans[UNBILLED_PLAN] = plan
        return json_response(200, plan.to_json())

    @route("GET", "/truth/invoices/{invoice_id}/usage")
    def usage_truth(self, req: Request) -> Response:
        """What the checksum should find: per subscription, the pre-tax totals of the recon lines
        that carry a usage-based product (ProductCategory Azure) and of the usage rows."""
        invoice = self._invoice(req.params["invoice_id"])
        return Response(200, dumps(usage_truth(self.state, invoice)).encode(),
                        [("Content-Type", "application/json; charset=utf-8")])


def usage_truth(state: SimulatorState, invoice) -> dict:
    recon, usage = state.invoice_stream(invoice, ONETIME_BILLING), state.invoice_stream(invoice, DAILY_RATED_USAGE)
    per_sub: dict[str, dict] = defaultdict(lambda: {"recon": Decimal(0), "usage": Decimal(0), "oneFile": []})
    for index in range(recon.count):
        facts = recon.nce.recon_facts(index)
        if facts["kind"] in ("license", "unknown_customer"):
            continue
        row = recon_row(recon.nce, facts)
        entry = per_sub[row["SubscriptionId"].lower()]
        entry["recon"] += row["Subtotal"]
        if facts["kind"] not in ("usage", "unknown_subscription"):
            entry["oneFile"].append({"file": "recon", "line": index, "kind": facts["kind"],
                                     "amount": row["Subtotal"]})
    for index in range(usage.count):
        facts, day = usage.nce.usage_facts(index)
        row = usage_row(usage.nce, facts, day, index)
        entry = per_sub[row["SubscriptionId"].lower()]
        entry["usage"] += row["BillingPreTaxTotal"]
        if facts.get("kind") == "usage_only":
            entry["oneFile"].append({"file": "usage", "line": index, "kind": "usage_only",
                                     "amount": row["BillingPreTaxTotal"]})
    plan = state.billing_plan(invoice.id)
    subscriptions = {sub: {**totals, "difference": totals["recon"] - totals["usage"],
                           "planted": plan.usage_mismatch.get(sub, Decimal(0))}
                     for sub, totals in sorted(per_sub.items())}
    return {"invoice": invoice.id, "currency": invoice.currency, "exchangeRate": recon.nce.rate,
            "reconLines": recon.count, "usageRows": usage.count, "subscriptions": subscriptions}
