"""`pcsync subscriptions est|renewals` and `pcsync agreements status`: the 2026 end-of-term and
agreement questions, from the synced tables.

    pcsync subscriptions est --provider P [--json]
    pcsync subscriptions renewals --provider P [--days 30] [--all] [--json]
    pcsync agreements status --provider P [--blocked] [--json]
"""
from __future__ import annotations

import argparse
from typing import Any

from shared.clock import utc_now

from ..views import View, field, print_items
from .alerts import AlertKind, end_of_term_findings
from .horizon import agreement_status, renewals

EST_VIEW = View("subscription in EST", (
    field("subscription", header="subscription"), field("customer", header="customer"),
    field("offerName", header="offer"), field("commitmentEndDate", header="term end"),
    field("chosen", header="chosen"), field("message", header="why listed"),
))
RENEWAL_VIEW = View("renewal", (
    field("id", header="subscription"), field("customer", header="customer"), field("offerName", header="offer"),
    field("quantity", header="qty"), field("termEnd", header="term end"), field("endOfTerm", header="end of term"),
    field("lastReductionDay", header="last reduction/cancel"), field("priceBasis", header="price basis"),
))
AGREEMENT_VIEW = View("customer", (
    field("customer", header="customer"), field("companyName", header="company"), field("state", header="state"),
    field("blocked", header="blocked"), field("since", header="since"), field("evidence", header="evidence"),
))


def _print(view: View, items: list[dict[str, Any]], args: argparse.Namespace, title: str) -> int:
    shown = items if args.json else [view.item(item) for item in items]
    return print_items(view, shown, as_json=args.json, title=title, next_token=None)


def subscriptions_est(args: argparse.Namespace, services: Any) -> int:
    """Subscriptions in EST that nobody chose EST for (the alert rows the timer raises)."""
    findings = [f for f in end_of_term_findings(services.tables, args.provider, utc_now)
                if f["kind"] == AlertKind.EST_WITHOUT_CHOICE]
    return _print(EST_VIEW, findings, args, f"subscriptions of {args.provider} in EST without EST chosen")


def subscriptions_renewals(args: argparse.Namespace, services: Any) -> int:
    if not 1 <= args.days <= 1100:
        args.parser.error("--days must be 1..1100")
    items = renewals(services.tables, args.provider, days=args.days, now=utc_now(), include_all=args.all)
    return _print(RENEWAL_VIEW, items, args, f"terms of {args.provider} ending within {args.days} days")


def agreements_status(args: argparse.Namespace, services: Any) -> int:
    items = agreement_status(services.tables, args.provider, blocked_only=args.blocked)
    return _print(AGREEMENT_VIEW, items, args, f"agreement state of {args.provider}'s customers")


def register_subscription_actions(actions: Any) -> None:
    """``est`` and ``renewals`` under ``pcsync subscriptions`` (sync/inspect_cli.py's group)."""
    est = actions.add_parser("est", help="subscriptions that entered Extended Service Term without EST chosen")
    est.add_argument("--provider", required=True, help="provider id")
    est.add_argument("--json", action="store_true", help="print JSON (a list of objects)")
    est.set_defaults(handler=subscriptions_est)
    horizon = actions.add_parser("renewals", help="terms ending soon: end-of-term action, last reduction day, "
                                                  "price basis")
    horizon.add_argument("--provider", required=True, help="provider id")
    horizon.add_argument("--days", type=int, default=30, help="terms ending within this many days (default 30)")
    horizon.add_argument("--all", action="store_true", help="also monthly terms that renew unchanged")
    horizon.add_argument("--json", action="store_true", help="print JSON (a list of objects)")
    horizon.set_defaults(handler=subscriptions_renewals, parser=horizon)


def register(subparsers: Any) -> None:
    actions = subparsers.add_parser("agreements", help="customers' Microsoft Customer Agreement state") \
        .add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="which customers are blocked from ordering (attestation state)")
    status.add_argument("--provider", required=True, help="provider id")
    status.add_argument("--blocked", action="store_true", help="only customers blocked from ordering")
    status.add_argument("--json", action="store_true", help="print JSON (a list of objects)")
    status.set_defaults(handler=agreements_status)


__all__ = ["AGREEMENT_VIEW", "EST_VIEW", "RENEWAL_VIEW", "register", "register_subscription_actions"]
