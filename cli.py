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

PROVIDER_OPTIONS = {
    # option -> JSON field of the provider API
    "name": "name",
    "country_code": "countryCode",
    "currency_code": "currencyCode",
    "tenant_id": "tenantId",
    "billing_start_day": "billingStartDay",
    "reseller_relationship_url": "resellerRelationshipUrl",
    "delegated_admin_authorize_url": "delegatedAdminAuthorizeUrl",
    "cost_management": "costManagement",
    "usage_mismatch_tolerance": "usageMismatchTolerance",
    "azure_specialization": "azureSpecializations",
    "enabled": "enabled",
}


def load_environment(settings_file: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if settings_file:
        with open(settings_file, encoding="utf-8") as fh:
            values = json.load(fh).get("Values", {})
        env.update({k: str(v) for k, v in values.items() if k not in os.environ})
    return env


def build_runtime(args: argparse.Namespace):
    from shared.runtime import Runtime, set_runtime

    runtime = Runtime.from_settings(Settings.from_environment(load_environment(args.settings)))
    set_runtime(runtime)
    return runtime


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def provider_set(args: argparse.Namespace, runtime) -> int:
    from admin import providers as providers_service

    existing = runtime.providers.find_provider(args.id)
    body: dict[str, Any] = {}
    if existing:
        current = existing.to_json()
        body = {field: current[field] for field in PROVIDER_OPTIONS.values()}
    for option, field in PROVIDER_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            body[field] = value
    provider, created = providers_service.put_provider(runtime.providers, args.id, body)
    print_json(provider.to_json())
    print(f"provider {args.id} {'created' if created else 'updated'}", file=sys.stderr)
    return 0


def provider_show(args: argparse.Namespace, runtime) -> int:
    print_json(runtime.providers.get_provider(args.id).to_json())
    return 0


def provider_list(args: argparse.Namespace, runtime) -> int:
    print_json([p.to_json() for p in runtime.providers.list_providers()])
    return 0


def provider_disable(args: argparse.Namespace, runtime) -> int:
    from admin import providers as providers_service

    secrets = providers_service.refresh_token_store(runtime) if args.purge else None
    print_json(providers_service.remove_provider(runtime.tables, args.id, purge=args.purge, secrets=secrets))
    return 0


def _register_provider_commands(subparsers) -> None:
    provider = subparsers.add_parser("provider", help="manage provider connections")
    actions = provider.add_subparsers(dest="action", required=True)

    set_cmd = actions.add_parser("set", help="create or update a provider connection")
    set_cmd.add_argument("id", help="provider id: lower-case letters, digits and '-'")
    set_cmd.add_argument("--name")
    set_cmd.add_argument("--country-code", help="ISO 3166-1 alpha-2, e.g. US")
    set_cmd.add_argument("--currency-code", help="ISO 4217, e.g. USD")
    set_cmd.add_argument("--tenant-id", help="partner tenant id (Microsoft ID), a GUID")
    set_cmd.add_argument("--billing-start-day", help="1..31, legacy (D) invoice Azure billing only")
    set_cmd.add_argument("--reseller-relationship-url")
    set_cmd.add_argument("--delegated-admin-authorize-url")
    set_cmd.add_argument("--cost-management", choices=["true", "false"])
    set_cmd.add_argument("--usage-mismatch-tolerance", help="amount (e.g. 5) or percentage (e.g. 0.5%%)")
    set_cmd.add_argument("--azure-specialization", action="append", help="repeat for several")
    set_cmd.add_argument("--enabled", choices=["true", "false"])
    set_cmd.set_defaults(handler=provider_set)

    show = actions.add_parser("show", help="show one provider connection")
    show.add_argument("id")
    show.set_defaults(handler=provider_show)

    list_cmd = actions.add_parser("list", help="list provider connections")
    list_cmd.set_defaults(handler=provider_list)

    disable = actions.add_parser("disable", help="disable a provider (keeps synced data)")
    disable.add_argument("id")
    disable.add_argument("--purge", action="store_true", help="delete the provider, its synced data and its refresh token in Key Vault")
    disable.set_defaults(handler=provider_disable)


def _optional_registrars() -> list[Callable]:
    """Command groups of the other layers; each module exposes register(subparsers)."""
    registrars = []
    for module_name in ("auth.cli", "sync.cli", "sync.writeback.cli", "sync.webhooks.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name not in (module_name, module_name.split(".")[0]):
                raise
            continue
        registrars.append(module.register)
    return registrars


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsync", description="Partner Center sync: operator commands")
    parser.add_argument("--settings", help="read app settings from this local.settings.json")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _register_provider_commands(subparsers)
    for register in _optional_registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runtime = build_runtime(args)
        return args.handler(args, runtime)
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
