"""All mutable simulator state behind one re-entrant lock (the server is threaded)."""
from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from simulator.billing_plan import BillingPlan
from simulator.audit_log import AuditLog
from simulator.clock import SimulatorClock
from simulator.config import SimulatorConfig
from simulator.data import Agreement, Customer, Invoice, Subscription, World, WorldFactory
from simulator.line_items import NCE_KINDS, InvoiceTotals, LineItemStream, StreamContext, invoice_stream_counts


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    mfa: bool
    issued_at: dt.datetime
    redeemed: bool = False


@dataclass
class RefreshTokenRecord:
    client_id: str
    user_oid: str
    mfa: bool
    issued_at: dt.datetime
    last_used: dt.datetime
    revoked: bool = False


@dataclass
class CallCounter:
    count: int = 0
    throttled: int = 0
    faulted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class SimulatorState:
    def __init__(self, config: SimulatorConfig, clock: SimulatorClock):
        self.lock = threading.RLock()
        self.config = config
        self.clock = clock
        self.factory = WorldFactory(config, clock.now())
        world: World = self.factory.build()
        self.partner = world.partner
        self.app = world.app
        self.user = world.user
        self.customers: "OrderedDict[str, Customer]" = OrderedDict((c.id, c) for c in world.customers)
        self.subscriptions: dict[str, "OrderedDict[str, Subscription]"] = {c.id: OrderedDict() for c in world.customers}
        from simulator.lifecycle import seed_end_of_term  # lifecycle -> pc_common -> state
        for sub in world.subscriptions:
            seed_end_of_term(sub)
            self.subscriptions[sub.customer_id][sub.id.lower()] = sub
        self.agreements: dict[str, list[Agreement]] = {}
        for agreement in world.agreements:
            self.agreements.setdefault(agreement.customer_id, []).append(agreement)
        self.invoices: "OrderedDict[str, Invoice]" = OrderedDict((i.id, i) for i in world.invoices)
        # Line items reference the seeded customers and subscriptions only, so they never change
        # when tests add or remove customers later (keeps invoice totals stable).
        self.line_item_customers = tuple(world.customers)
        self.line_item_subscriptions = tuple(world.subscriptions)
        self.invoice_totals = InvoiceTotals()
        self.billing_plans: dict[str, BillingPlan] = {}   # invoice id -> what a test planted

        self.auth_codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshTokenRecord] = {}
        self.refresh_failure: str | None = None  # POST /_sim/tokens/fail: expired|revoked|mfa|conditional_access
        self.secrets: dict[str, list[dict]] = {}
        # soft-deleted secrets (the vault has purge protection): {name.lower(): {"versions", "deletedDate", ...}}
        self.deleted_secrets: dict[str, dict] = {}
        self.webhook_registration: dict | None = None
        self.webhook_deliveries: list[dict] = []
        self.webhook_validations: dict[str, dict] = {}
        self.export_operations: dict[str, dict] = {}
        self.export_manifests: dict[str, dict] = {}
        self.calls: dict[str, CallCounter] = {}
        self.mfa_requests: dict[tuple[str, str], list[int]] = {}  # (day, app id) -> [MFA-compliant, total]
        self.non_mfa_principals: dict[tuple[str, str], dict] = {}  # (user oid, app id) -> count, last, upn
        self.attestations: dict = {}  # id -> simulator.attestation.Attestation
        self.lifecycle_events: list[dict] = []  # renewals, EST entries, expiries (GET /_sim/truth/lifecycle)
        self.audit = AuditLog()  # the activity log (simulator/audit.py)

    # ---- lookups (callers hold no lock; these take it) ----------------------------------
    def customer(self, customer_id: str) -> Customer | None:
        with self.lock:
            return self.customers.get(customer_id.lower())

    def subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        with self.lock:
            return self.subscriptions.get(customer_id.lower(), {}).get(subscription_id.lower())

    def all_subscriptions(self) -> list[Subscription]:
        with self.lock:
            return [sub for subs in self.subscriptions.values() for sub in subs.values()]

    def advance_lifecycle(self, subs: list[Subscription] | None = None) -> None:
        """Apply the end-of-term events that fell due on the simulator clock (simulator/lifecycle.py)."""
        from simulator import lifecycle  # lifecycle -> pc_common -> state
        from simulator.clock import iso
        with self.lock:
            now = self.clock.now()
            for sub, what, when in lifecycle.advance(self.all_subscriptions() if subs is None else subs, now,
                                                     self.config.nce_cancellation_days):
                self.lifecycle_events.append({"at": iso(when), "customerId": sub.customer_id.lower(),
                                              "subscriptionId": sub.id, "event": what})

    def invoice(self, invoice_id: str) -> Invoice | None:
        # Partner Center also accepts the "OneTime-"/"Recurring-" prefixed ids its links use.
        for prefix in ("OneTime-", "Recurring-"):
            if invoice_id.lower().startswith(prefix.lower()):
                invoice_id = invoice_id[len(prefix):]
        with self.lock:
            return self.invoices.get(invoice_id.upper())

    # ---- line items ---------------------------------------------------------------------
    def billing_plan(self, invoice_id: str) -> BillingPlan:
        with self.lock:
            return self.billing_plans.get(invoice_id) or BillingPlan()

    def invoice_stream(self, invoice: Invoice, kind: str) -> LineItemStream:
        ctx = StreamContext(seed=self.config.seed, key=invoice.id, invoice_number=invoice.id,
                            partner=self.partner, customers=self.line_item_customers,
                            subscriptions=self.line_item_subscriptions, period_start=invoice.period_start,
                            period_end=invoice.period_end, currency=invoice.currency,
                            plan=self.billing_plan(invoice.id))
        new_commerce_file = kind in NCE_KINDS and invoice.is_new_commerce
        regular = invoice.line_items if new_commerce_file else invoice_stream_counts(invoice).get(kind, 0)
        return LineItemStream(kind, regular, ctx)

    def unbilled_stream(self, kind: str, period: str, currency: str) -> LineItemStream:
        today = self.clock.now()
        start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if period == "previous":
            start = (start - dt.timedelta(days=1)).replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(seconds=1)
        ctx = StreamContext(seed=self.config.seed, key=f"unbilled-{period}-{currency.upper()}", invoice_number="",
                            partner=self.partner, customers=self.line_item_customers,
                            subscriptions=self.line_item_subscriptions, period_start=start, period_end=end,
                            currency=currency.upper(), plan=self.billing_plan("unbilled"))
        return LineItemStream(kind, self.config.line_items_per_invoice, ctx)

    def invoice_total_cents(self, invoice: Invoice) -> int:
        return self.invoice_totals.total_cents(invoice, self.invoice_stream)

    # ---- call accounting ----------------------------------------------------------------
    def record_call(self, key: str, status: int, throttled: bool = False, faulted: bool = False) -> None:
        with self.lock:
            counter = self.calls.setdefault(key, CallCounter())
            counter.count += 1
            counter.throttled += int(throttled)
            counter.faulted += int(faulted)
            counter.statuses[str(status)] = counter.statuses.get(str(status), 0) + 1
