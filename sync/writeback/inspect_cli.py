"""`pcsync writeback list` (also `pcsync writeback-list`): a provider's write-back records,
filtered and a page at a time.

    pcsync writeback list --provider P [--customer C] [--subscription S] [--state rejected] [--json]

``--json`` prints each record as ``writeback-show`` does.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..views import View, add_output_options, field, print_items
from .queries import WritebackFilter, writeback_page
from .record import WritebackState

# The table's columns, read from WritebackRecord.to_json() (the JSON form is that dict, whole).
WRITEBACK_VIEW = View("write-back", (
    field("idempotencyKey", header="key"), field("operation", header="operation"),
    field("customer", header="customer"), field("subscription", header="subscription"),
    field("state", header="state"), field("blockedBy", header="blocked by"), field("attempts", header="attempts"),
    field("updatedAt", header="updated"),
    field("reason", header="reason"),
))


def writeback_list(args: argparse.Namespace, services: Any) -> int:
    where = WritebackFilter(customer_id=args.customer, subscription_id=args.subscription, state=args.state)
    records, token = writeback_page(services.tables, args.provider, where, limit=args.limit, token=args.page_token)
    items = [record.to_json() for record in records]
    if not args.json:
        items = [WRITEBACK_VIEW.item(item) for item in items]
    return print_items(WRITEBACK_VIEW, items, as_json=args.json, title=f"write-backs of {args.provider}",
                       next_token=token)


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser("writeback-list", help="list a provider's write-back records")
    cmd.add_argument("--provider", required=True, help="provider id")
    cmd.add_argument("--customer", help="only this customer's")
    cmd.add_argument("--subscription", help="only this subscription's")
    cmd.add_argument("--state", choices=[s.value for s in WritebackState], help="only records in this state")
    add_output_options(cmd, paged=True)
    cmd.set_defaults(handler=writeback_list)


__all__ = ["WRITEBACK_VIEW", "register"]
