"""`pcsync doctor`: is this deployment ready? One line per check with the fix, exit code 1 when
any check fails.

Unlike the other commands it reads the settings itself (a malformed setting is one of its
findings, not the end of the command), so cli.py hands it the settings reader, the Services
builder and auth's credential checks (admin does not import auth).
"""
from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from typing import Any, Callable

from shared.clock import utc_now

from .doctor import AppChecks, examine

EXIT_FAILED = 1


def doctor(args: argparse.Namespace, _services: Any, *, environment: Callable[[str | None], dict[str, str]],
           build_services: Callable[[argparse.Namespace, Any], Any], app_checks: AppChecks) -> int:
    report = examine(environment(args.settings), lambda settings: build_services(args, settings), app_checks,
                     now=utc_now())
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for check in report.checks:
            print(check.line())
    failed = sum(c.failed for c in report.checks)
    print(f"doctor: {len(report.checks)} checks, {failed} failed", file=sys.stderr)
    return EXIT_FAILED if report.failed else 0


def register(subparsers: Any, *, environment: Callable[[str | None], dict[str, str]],
             build_services: Callable[[argparse.Namespace, Any], Any], app_checks: AppChecks) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check the settings, storage, Key Vault, the Entra app and each provider's consent")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    # reads_settings: cli.main passes no Services; the command builds them once its settings check passed
    parser.set_defaults(handler=partial(doctor, environment=environment, build_services=build_services,
                                        app_checks=app_checks), reads_settings=True)
