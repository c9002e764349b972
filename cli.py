"""pcsync: the operator's command line; the same services the functions use.

    pcsync provider set ID --name ... --country-code US --currency-code USD --tenant-id GUID
    pcsync provider show ID | list | disable ID [--purge]

Settings come from the environment, or from a local.settings.json given with --settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from shared.errors import NotFound, PcsyncError, ValidationFailed
from shared.settings import Settings, SettingsError


def load_environment(settings_file: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if settings_file:
        with open(settings_file, encoding="utf-8") as fh:
            values = json.load(fh).get("Values", {})
        env.update({k: str(v) for k, v in values.items() if k not in os.environ})
    return env


def build_services(args: argparse.Namespace):
    from bootstrap import Services, install_services

    services = Services(Settings.from_environment(load_environment(args.settings)))
    install_services(services)
    return services


def _command_groups() -> list[Callable[[Any], None]]:
    """Each feature package's command group: its cli module's register(subparsers)."""
    from admin import cli as admin_cli
    from auth import cli as auth_cli
    from sync import cli as sync_cli
    from sync.webhooks import cli as webhooks_cli
    from sync.writeback import cli as writeback_cli

    return [admin_cli.register, auth_cli.register, sync_cli.register, writeback_cli.register, webhooks_cli.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsync", description="Partner Center sync: operator commands")
    parser.add_argument("--settings", help="read app settings from this local.settings.json")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in _command_groups():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        services = build_services(args)
        return args.handler(args, services)
    except ValidationFailed as exc:
        print("error: the provider connection is not valid:", file=sys.stderr)
        for field, message in exc.problems.items():
            print(f"  {field}: {message}", file=sys.stderr)
        return 2
    except (NotFound, SettingsError, PcsyncError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
