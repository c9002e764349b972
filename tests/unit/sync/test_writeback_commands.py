"""`pcsync writeback` argument handling (the service itself is tested elsewhere)."""
from __future__ import annotations

import argparse

import pytest

from sync.writeback import cli as writeback_commands
from sync.writeback.request import parse_request


def parse(*argv):
    parser = argparse.ArgumentParser(prog="pcsync")
    writeback_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv, expected", [
    (["--quantity", "7"], {"operation": "subscription.quantity", "quantity": 7}),
    (["--suspend"], {"operation": "subscription.suspend"}),
    (["--reactivate"], {"operation": "subscription.reactivate"}),
    (["--cancel"], {"operation": "subscription.cancel"}),
    (["--auto-renew", "off", "--action", "cancel"],
     {"operation": "subscription.autoRenew", "autoRenewEnabled": False, "action": "cancel"}),
    (["--end-of-term", "renew", "--next-quantity", "3", "--next-term", "P1Y"],
     {"operation": "subscription.endOfTerm", "action": "renew", "nextTerm": {"quantity": 3, "termDuration": "P1Y"}}),
    (["--end-of-term", "extendedServiceTerm"], {"operation": "subscription.endOfTerm", "action": "extendedServiceTerm"}),
    (["--friendly-name", "Sales seats"], {"operation": "subscription.friendlyName", "friendlyName": "Sales seats"}),
    (["--quantity", "4", "--at-renewal"], {"operation": "subscription.quantity", "quantity": 4, "atRenewal": True}),
    (["--suspend", "--effective-date", "2027-06-01"], {"operation": "subscription.suspend",
                                                       "effectiveDate": "2027-06-01"}),
])
def test_subscription_changes_become_valid_requests(argv, expected):
    args = parse("writeback", "--provider", "p1", "--customer", "c1", "--subscription", "s1", "--key", "k1", *argv)
    body = writeback_commands.build_body(args)
    assert {k: body[k] for k in expected} == expected and args.handler is writeback_commands.writeback_or_list
    assert parse_request(body).idempotency_key == "k1"


def test_agreement_confirmation_and_generated_key():
    args = parse("writeback", "--provider", "p1", "--customer", "c1", "--agreement", "--contact-first-name", "Ada",
                 "--contact-last-name", "Lovelace", "--contact-email", "ada@example.com", "--date-agreed", "2024-05-01")
    request = parse_request(writeback_commands.build_body(args))
    assert request.operation == "agreement.confirm" and request.idempotency_key.startswith("cli-")
    assert request.contact == {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}


def test_exactly_one_change_is_required():
    with pytest.raises(SystemExit):
        parse("writeback", "--provider", "p1", "--customer", "c1", "--subscription", "s1", "--suspend", "--reactivate")
    show = parse("writeback-show", "k1", "--provider", "p1")
    assert show.handler is writeback_commands.writeback_show


@pytest.mark.parametrize("argv", [
    ["--customer", "c1", "--subscription", "s1"],  # no change option
    ["--subscription", "s1", "--suspend"],  # no customer
])
def test_a_change_needs_a_customer_and_one_change_option(argv, capsys):
    args = parse("writeback", "--provider", "p1", *argv)
    with pytest.raises(SystemExit) as refused:
        args.handler(args, services=None)  # refused before any service is used
    assert refused.value.code == 2 and "required" in capsys.readouterr().err


def test_writeback_list_is_the_listing():
    args = parse("writeback", "list", "--provider", "p1", "--state", "rejected", "--json")
    assert args.action == "list" and args.state == "rejected" and args.json and args.customer is None


def test_auto_renew_off_alone_is_refused_with_the_reason(capsys):
    args = parse("writeback", "--provider", "p1", "--customer", "c1", "--subscription", "s1", "--auto-renew", "off")
    with pytest.raises(Exception) as refused:
        parse_request(writeback_commands.build_body(args))
    assert "Extended Service Term" in str(refused.value) and "cancel" in str(refused.value)


def test_retry_and_dismiss_take_a_key():
    for verb in ("retry", "dismiss"):
        args = parse("writeback", verb, "k-7")
        assert (args.action, args.key_arg, args.provider) == (verb, "k-7", None)
    with pytest.raises(SystemExit):
        args = parse("writeback", "retry")
        args.handler(args, services=None)


def test_preview_and_the_2026_views_parse():
    args = parse("writeback", "--provider", "p1", "--customer", "c1", "--subscription", "s1", "--quantity", "2",
                 "--preview")
    assert args.preview and writeback_commands.build_body(args)["quantity"] == 2
    status = parse("agreements", "status", "--provider", "p1", "--blocked")
    assert status.blocked and status.handler.__name__ == "agreements_status"
