"""`pcsync writeback ...` and `pcsync writeback-show ...`: the write-back service from the CLI.

    pcsync writeback --provider P --customer C --subscription S --quantity 12
    pcsync writeback --provider P --customer C --subscription S --suspend | --reactivate | --cancel
    pcsync writeback --provider P --customer C --subscription S --auto-renew on|off [--action cancel|extendedServiceTerm]
    pcsync writeback --provider P --customer C --subscription S --end-of-term renew|cancel|extendedServiceTerm
                     [--next-quantity N] [--next-term P1M|P1Y|P3Y] [--next-billing-cycle monthly|annual|triennial]
    pcsync writeback --provider P --customer C --subscription S --friendly-name NAME
    (any subscription change: [--effective-date DATE] to hold it until then; --quantity with [--at-renewal])
    pcsync writeback --preview ...      would it be accepted now, at renewal or never (nothing is sent)
    pcsync writeback retry|dismiss KEY [--provider P]
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
from . import horizon_cli
from .end_of_term import EndOfTerm
from .inspect_cli import writeback_list
from .record import WritebackRecord, WritebackState
from .request import AUTO_RENEW, CANCEL, CONFIRM_AGREEMENT, END_OF_TERM, FRIENDLY_NAME, QUANTITY, REACTIVATE, SUSPEND


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser("writeback", help="change a subscription or confirm an agreement in Partner Center; "
                                               "'writeback list' shows the log")
    # `writeback list ...` lists the log (the same command as writeback-list); without it the
    # options describe one change, and --customer plus one change option are required then
    cmd.add_argument("action", nargs="?", choices=["list", "retry", "dismiss"],
                     help="list: the provider's write-back records; retry|dismiss KEY: a record that did not succeed")
    cmd.add_argument("key_arg", nargs="?", metavar="KEY", help="retry|dismiss: the write-back's idempotency key")
    cmd.add_argument("--provider", help="provider id (required but for retry|dismiss)")
    cmd.add_argument("--customer", help="customer tenant id (required for a change; a filter for list)")
    cmd.add_argument("--subscription", help="subscription id (subscription changes; a filter for list)")
    change = cmd.add_mutually_exclusive_group()
    change.add_argument("--quantity", type=int, help="new quantity (new-commerce decreases only inside the window)")
    change.add_argument("--suspend", action="store_true")
    change.add_argument("--reactivate", action="store_true")
    change.add_argument("--cancel", action="store_true", help="new-commerce only, inside the cancellation window")
    change.add_argument("--auto-renew", choices=["on", "off"], help="off needs --action cancel|extendedServiceTerm")
    change.add_argument("--end-of-term", choices=[a.value for a in EndOfTerm],
                        help="the end-of-term action (scheduled action with auto-renew consistent)")
    change.add_argument("--friendly-name", help="the subscription's new name")
    change.add_argument("--agreement", action="store_true",
                        help="confirm the customer's acceptance of the Microsoft Customer Agreement")
    cmd.add_argument("--contact-first-name")
    cmd.add_argument("--contact-last-name")
    cmd.add_argument("--contact-email")
    cmd.add_argument("--contact-phone")
    cmd.add_argument("--date-agreed", help="ISO date the customer accepted (default: now)")
    cmd.add_argument("--action", dest="eot_action", choices=[a.value for a in EndOfTerm],
                     help="with --auto-renew off: which end of term is meant")
    cmd.add_argument("--next-quantity", type=int, help="--end-of-term renew: the next term's quantity")
    cmd.add_argument("--next-term", help="--end-of-term renew: the next term (P1M, P1Y, P3Y)")
    cmd.add_argument("--next-billing-cycle", help="--end-of-term renew: monthly, annual, triennial")
    cmd.add_argument("--effective-date", help="hold the change until this ISO date (the write-backs timer applies it)")
    cmd.add_argument("--at-renewal", action="store_true", help="--quantity: as the next term's quantity")
    cmd.add_argument("--preview", action="store_true", help="say whether it would be accepted (now, at renewal "
                                                            "or never) and why; nothing is sent or logged")
    cmd.add_argument("--key", help="idempotency key (default: a new one); the same key never applies twice")
    cmd.add_argument("--queue", action="store_true", help="enqueue for the function app instead of applying now")
    cmd.add_argument("--state", choices=[s.value for s in WritebackState], help="list: only records in this state")
    add_output_options(cmd, paged=True)
    cmd.set_defaults(handler=writeback_or_list, parser=cmd)

    show = subparsers.add_parser("writeback-show", help="show a write-back record")
    show.add_argument("key", help="idempotency key")
    show.add_argument("--provider", help="provider id (only needed when two providers used the key)")
    show.set_defaults(handler=writeback_show)
    horizon_cli.register(subparsers)


CHANGE_OPTIONS = ("quantity", "suspend", "reactivate", "cancel", "auto_renew", "end_of_term", "friendly_name",
                  "agreement")


def writeback_or_list(args: argparse.Namespace, services: Any) -> int:
    changes = [name for name in CHANGE_OPTIONS if getattr(args, name) not in (None, False)]
    if args.action in ("retry", "dismiss"):
        if not args.key_arg:
            args.parser.error(f"'writeback {args.action}' needs the write-back's KEY")
        return operator_action(args, services)
    if not args.provider:
        args.parser.error("the following arguments are required: --provider")
    if args.action == "list":
        if changes:
            args.parser.error("'writeback list' takes filters, not a change: drop --" + changes[0].replace("_", "-"))
        return writeback_list(args, services)
    if not args.customer:
        args.parser.error("the following arguments are required: --customer")
    if not changes:
        args.parser.error("one of the arguments --quantity --suspend --reactivate --cancel --auto-renew "
                          "--end-of-term --friendly-name --agreement is required")
    if args.preview:
        return writeback_preview(args, services)
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
    body.update(_subscription_change(args))
    if args.effective_date:
        body["effectiveDate"] = args.effective_date
    return body


def _subscription_change(args: argparse.Namespace) -> dict[str, Any]:
    if args.quantity is not None:
        return {"operation": QUANTITY, "quantity": args.quantity, **({"atRenewal": True} if args.at_renewal else {})}
    if args.suspend or args.reactivate or args.cancel:
        return {"operation": SUSPEND if args.suspend else REACTIVATE if args.reactivate else CANCEL}
    if args.friendly_name is not None:
        return {"operation": FRIENDLY_NAME, "friendlyName": args.friendly_name}
    if args.end_of_term:
        next_term = {"quantity": args.next_quantity, "termDuration": args.next_term,
                     "billingCycle": args.next_billing_cycle}
        next_term = {k: v for k, v in next_term.items() if v is not None}
        return {"operation": END_OF_TERM, "action": args.end_of_term, **({"nextTerm": next_term} if next_term else {})}
    change = {"operation": AUTO_RENEW, "autoRenewEnabled": args.auto_renew == "on"}
    return {**change, "action": args.eot_action} if args.eot_action else change


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
        return _print_validation(exc)
    print(json.dumps(record.to_json(), indent=2, default=str))
    print(f"write-back {record.idempotency_key}: {record.state}" + (f" ({record.reason})" if record.reason else ""),
          file=sys.stderr)
    return _exit_code(record)


def _print_validation(exc: ValidationFailed) -> int:
    print("error: the write-back request is not valid:", file=sys.stderr)
    for name, message in exc.problems.items():
        print(f"  {name}: {message}", file=sys.stderr)
    return 2


def writeback_preview(args: argparse.Namespace, services: Any) -> int:
    """Exit 0 when it would be accepted (now, scheduled or at renewal), 1 when not."""
    try:
        answer = services.writeback.preview(build_body(args))
    except ValidationFailed as exc:
        return _print_validation(exc)
    print(json.dumps(answer, indent=2, default=str))
    print(f"preview: {'allowed' if answer['allowed'] else 'not allowed'} ({answer['when']}): {answer['reason']}",
          file=sys.stderr)
    return 0 if answer["allowed"] else 1


def operator_action(args: argparse.Namespace, services: Any) -> int:
    """``writeback retry|dismiss KEY``: the updated record (409-like refusals: one error line, exit 1)."""
    service = services.writeback
    do = service.retry if args.action == "retry" else service.dismiss
    record = do(args.key_arg, args.provider)
    print(json.dumps(record.to_json(), indent=2, default=str))
    print(f"write-back {record.idempotency_key}: {record.state}", file=sys.stderr)
    return 0


def writeback_show(args: argparse.Namespace, services: Any) -> int:
    record = services.writeback.get_record(args.key, args.provider)
    print(json.dumps(record.to_json(), indent=2, default=str))
    return 0
