"""`pcsync writeback ...` and `pcsync writeback-show ...`: the write-back service from the CLI.

    pcsync writeback --provider P --customer C --subscription S --quantity 12
    pcsync writeback --provider P --customer C --subscription S --suspend | --reactivate | --cancel
    pcsync writeback --provider P --customer C --subscription S --auto-renew on|off
    pcsync writeback --provider P --customer C --agreement --contact-first-name ... --contact-last-name ...
                     --contact-email ... [--contact-phone ...] [--date-agreed 2024-05-01]
    pcsync writeback-show KEY [--provider P]

By default the change is applied now, in this process, and the final record is printed;
``--queue`` puts it on queue ``writebacks`` for the function app instead. Exit codes: 0 succeeded
(or queued), 1 rejected/failed/unconfirmed/conflict (or held by another delivery), 2 invalid
request, 3 consent needed.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from shared.errors import ValidationFailed

from ..views import add_output_options
from .inspect_cli import writeback_list
from .record import WritebackRecord, WritebackState
from .request import AUTO_RENEW, CANCEL, CONFIRM_AGREEMENT, QUANTITY, REACTIVATE, SUSPEND


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser("writeback", help="change a subscription or confirm an agreement in Partner Center; "
                                               "'writeback list' shows the log")
    # `writeback list ...` lists the log (the same command as writeback-list); without it the
    # options describe one change, and --customer plus one change option are required then
    cmd.add_argument("action", nargs="?", choices=["list"], help="list: the provider's write-back records")
    cmd.add_argument("--provider", required=True, help="provider id")
    cmd.add_argument("--customer", help="customer tenant id (required for a change; a filter for list)")
    cmd.add_argument("--subscription", help="subscription id (subscription changes; a filter for list)")
    change = cmd.add_mutually_exclusive_group()
    change.add_argument("--quantity", type=int, help="new quantity (new-commerce decreases only inside the window)")
    change.add_argument("--suspend", action="store_true")
    change.add_argument("--reactivate", action="store_true")
    change.add_argument("--cancel", action="store_true", help="new-commerce only, inside the cancellation window")
    change.add_argument("--auto-renew", choices=["on", "off"])
    change.add_argument("--agreement", action="store_true",
                        help="confirm the customer's acceptance of the Microsoft Customer Agreement")
    cmd.add_argument("--contact-first-name")
    cmd.add_argument("--contact-last-name")
    cmd.add_argument("--contact-email")
    cmd.add_argument("--contact-phone")
    cmd.add_argument("--date-agreed", help="ISO date the customer accepted (default: now)")
    cmd.add_argument("--key", help="idempotency key (default: a new one); the same key never applies twice")
    cmd.add_argument("--queue", action="store_true", help="enqueue for the function app instead of applying now")
    cmd.add_argument("--state", choices=[s.value for s in WritebackState], help="list: only records in this state")
    add_output_options(cmd, paged=True)
    cmd.set_defaults(handler=writeback_or_list, parser=cmd)

    show = subparsers.add_parser("writeback-show", help="show a write-back record")
    show.add_argument("key", help="idempotency key")
    show.add_argument("--provider", help="provider id (only needed when two providers used the key)")
    show.set_defaults(handler=writeback_show)


CHANGE_OPTIONS = ("quantity", "suspend", "reactivate", "cancel", "auto_renew", "agreement")


def writeback_or_list(args: argparse.Namespace, services: Any) -> int:
    changes = [name for name in CHANGE_OPTIONS if getattr(args, name) not in (None, False)]
    if args.action == "list":
        if changes:
            args.parser.error("'writeback list' takes filters, not a change: drop --" + changes[0].replace("_", "-"))
        return writeback_list(args, services)
    if not args.customer:
        args.parser.error("the following arguments are required: --customer")
    if not changes:
        args.parser.error("one of the arguments --quantity --suspend --reactivate --cancel --auto-renew --agreement "
                          "is required")
    return writeback_command(args, services)


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"idempotencyKey": args.key or f"cli-{uuid.uuid4()}", "provider": args.provider,
                            "customer": args.customer, "requestedBy": "pcsync cli"}
    if args.agreement:
        body["operation"] = CONFIRM_AGREEMENT
        contact = {"firstName": args.contact_first_name, "lastName": args.contact_last_name,
                   "email": args.contact_email, "phoneNumber": args.contact_phone}
        body["contact"] = {k: v for k, v in contact.items() if v is not None}
        if args.date_agreed:
            body["dateAgreed"] = args.date_agreed
        if args.subscription:
            body["subscription"] = args.subscription  # refused by validation with a clear message
        return body
    if args.subscription is not None:
        body["subscription"] = args.subscription
    if args.quantity is not None:
        body.update(operation=QUANTITY, quantity=args.quantity)
    elif args.suspend:
        body["operation"] = SUSPEND
    elif args.reactivate:
        body["operation"] = REACTIVATE
    elif args.cancel:
        body["operation"] = CANCEL
    else:
        body.update(operation=AUTO_RENEW, autoRenewEnabled=args.auto_renew == "on")
    return body


def _exit_code(record: WritebackRecord) -> int:
    if record.state in (WritebackState.SUCCEEDED, WritebackState.ACCEPTED):
        return 0
    if record.error_code == "consent":
        return 3
    return 1


def writeback_command(args: argparse.Namespace, services: Any) -> int:
    service = services.writeback
    body = build_body(args)
    try:
        if args.queue:
            record = service.submit(body, source="cli").record
        else:
            record = service.run_now(body, source="cli")
    except ValidationFailed as exc:
        print("error: the write-back request is not valid:", file=sys.stderr)
        for name, message in exc.problems.items():
            print(f"  {name}: {message}", file=sys.stderr)
        return 2
    print(json.dumps(record.to_json(), indent=2, default=str))
    print(f"write-back {record.idempotency_key}: {record.state}" + (f" ({record.reason})" if record.reason else ""),
          file=sys.stderr)
    return _exit_code(record)


def writeback_show(args: argparse.Namespace, services: Any) -> int:
    record = services.writeback.get_record(args.key, args.provider)
    print(json.dumps(record.to_json(), indent=2, default=str))
    return 0
