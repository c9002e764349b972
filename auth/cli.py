"""CLI commands of auth/: ``pcsync consent-link --provider ID`` and ``pcsync verify --provider ID``.

Both call the same services as the HTTP functions. Typed errors propagate to cli.main, which
prints them and exits with 2.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def consent_link_command(args: argparse.Namespace, services: Any) -> int:
    link = services.consent.create_link(args.provider, login_hint=args.login_hint)
    if args.json:
        print(json.dumps(link.to_json(), indent=2))
        return 0
    console = _console()
    console.print(f"[bold]Consent link for provider {link.provider_id}[/bold]\n")
    # printed plainly so that terminals keep the (long) URL on one line and clickable
    print(link.url)
    console.print("\n[bold]Send this to the partner's admin:[/bold]")
    for number, line in enumerate(link.instructions, start=1):
        console.print(f"  {number}. {line}")
    return 0


def verify_command(args: argparse.Namespace, services: Any) -> int:
    report = services.verify.verify(args.provider)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0 if report.passed else 1
    table = Table(title=f"Verify Connectivity: provider {report.provider_id} ({report.checked_at})")
    for column in ("check", "result", "evidence", "what to do"):
        table.add_column(column)
    for check in report.checks:
        result = "[green]pass[/green]" if check.passed else "[red]FAIL[/red]"
        table.add_row(check.name, result, check.evidence, check.fix)
    console = _console()
    console.print(table)
    console.print("all checks passed" if report.passed else "[red]some checks failed[/red]")
    return 0 if report.passed else 1


def register(subparsers: Any) -> None:
    link = subparsers.add_parser("consent-link", help="make a consent link for the integration user's sign-in")
    link.add_argument("--provider", required=True, help="provider id")
    link.add_argument("--login-hint", help="the integration user's UPN (default: the last one that consented)")
    link.add_argument("--json", action="store_true", help="print JSON")
    link.set_defaults(handler=consent_link_command)

    verify = subparsers.add_parser("verify", help="run Verify Connectivity for a provider")
    verify.add_argument("--provider", required=True, help="provider id")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=verify_command)
