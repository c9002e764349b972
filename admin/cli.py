"""`pcsync provider set|show|list|disable`: provider connections from the command line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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
    "specialization_mode": "azureSpecialization",
    "enabled": "enabled",
}


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def provider_set(args: argparse.Namespace, services: Any) -> int:
    existing = services.providers.find_provider(args.id)
    body: dict[str, Any] = {}
    if existing:
        current = existing.to_json()
        body = {field: current[field] for field in PROVIDER_OPTIONS.values()}
    for option, field in PROVIDER_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            body[field] = value
    provider, created = services.provider_admin.put(args.id, body)
    print_json(provider.to_json())
    print(f"provider {args.id} {'created' if created else 'updated'}", file=sys.stderr)
    return 0


def provider_show(args: argparse.Namespace, services: Any) -> int:
    print_json(services.providers.get_provider(args.id).to_json())
    return 0


def provider_list(args: argparse.Namespace, services: Any) -> int:
    print_json([p.to_json() for p in services.providers.list_providers()])
    return 0


def confirm_purge(provider_id: str) -> str | None:
    """Why the purge must not go ahead (None: confirmed). Only an operator at a terminal can
    confirm by typing the provider id; a script must say --yes, so a stray --purge in a pipeline
    never deletes on its own."""
    if not sys.stdin.isatty():
        return f"--purge deletes provider {provider_id}'s synced data and refresh token: add --yes to confirm"
    print(f"--purge deletes provider {provider_id}, its consent flows, synced rows and refresh token in Key Vault.\n"
          f"Type the provider id to confirm: ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip() != provider_id:
        return f"purge of provider {provider_id} not confirmed; nothing was deleted"
    return None


def provider_disable(args: argparse.Namespace, services: Any) -> int:
    if args.purge and not args.yes:
        services.providers.get_provider(args.id)  # an unknown id fails before the question
        refused = confirm_purge(args.id)
        if refused:
            print(f"error: {refused}", file=sys.stderr)
            return 2
    print_json(services.provider_admin.remove(args.id, purge=args.purge))
    return 0


def register(subparsers: Any) -> None:
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
    set_cmd.add_argument("--cost-management", help="'do not update' or 'from the provider invoice' (true/false "
                                                    "still read as those two)")
    set_cmd.add_argument("--usage-mismatch-tolerance", help="amount (e.g. 5) or percentage (e.g. 0.5%%)")
    set_cmd.add_argument("--azure-specialization", action="append", help="a specialization held; repeat for several")
    set_cmd.add_argument("--specialization-mode", choices=["none", "pass-through", "retain"],
                         help="Azure specialization discounts: none, pass to the customer, or retain as margin")
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
    disable.add_argument("--yes", action="store_true", help="confirm --purge without asking (needed when not at a terminal)")
    disable.set_defaults(handler=provider_disable)
