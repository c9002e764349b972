"""`pcsync webhook register|status`: the Partner Center webhook registration API for a provider.

    pcsync webhook register --provider ID --url https://APP.azurewebsites.net/api/webhooks/partner-center/ID?code=KEY
                            [--events subscription-updated invoice-ready test-created]
    pcsync webhook status --provider ID [--json]

Partner Center keeps one registration per partner tenant. ``register`` creates it (POST) or
replaces it (PUT) with the given URL and events, checking the events against the list Partner
Center supports. The URL must carry the function key (``?code=``): Partner Center cannot send a
key header. ``status`` shows the registration and the newest events recorded in ``webhookevents``.
Function keys are never printed.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ValidationFailed
from shared.providers import validate_provider_id

from .registration import CALLBACK_ROUTE
from .events import DEFAULT_EVENTS

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def redact_url(url: str) -> str:
    """The URL with the function key (``code=``) masked, for printing."""
    return re.sub(r"(?i)([?&]code=)[^&#]+", r"\1***", url or "")


def validate_callback_url(url: str, provider_id: str) -> list[str]:
    """Raises ValidationFailed for an unusable URL; returns warnings for a doubtful one."""
    parts = urlsplit(url)
    local = (parts.hostname or "") in LOCAL_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ValidationFailed({"url": "must be an https URL (http only for localhost)"})
    warnings = []
    if not re.search(r"(?:^|&)code=[^&]+", parts.query):
        warnings.append("the URL has no ?code=<function key>; the function (FUNCTION auth) will answer 401")
    if not parts.path.rstrip("/").endswith(CALLBACK_ROUTE + provider_id):
        warnings.append(f"the URL path does not end in {CALLBACK_ROUTE}{provider_id}")
    return warnings


def _printable(registration: dict[str, Any]) -> dict[str, Any]:
    shown = dict(registration)
    for key in list(shown):
        if key.lower() == "webhookurl":
            shown[key] = redact_url(str(shown[key]))
    return shown


def register_command(args: argparse.Namespace, services: Any) -> int:
    validate_provider_id(args.provider)
    events = args.events or list(DEFAULT_EVENTS)
    for warning in validate_callback_url(args.url, args.provider):
        print(f"warning: {warning}", file=sys.stderr)
    registration = services.webhook_registrations.register(args.provider, args.url, events)
    print(json.dumps(_printable(registration), indent=2))
    print(f"webhook registered for provider {args.provider}", file=sys.stderr)
    return 0


def status_command(args: argparse.Namespace, services: Any) -> int:
    validate_provider_id(args.provider)
    registration = services.webhook_registrations.get(args.provider)
    events = services.webhooks.list_events(args.provider, limit=args.limit)
    report = {"provider": args.provider, "registered": registration is not None,
              "registration": _printable(registration) if registration else None, "recentEvents": events}
    print(json.dumps(report, indent=2, default=str))
    return 0 if registration is not None else 1


def register(subparsers: Any) -> None:
    webhook = subparsers.add_parser("webhook", help="Partner Center webhook registration")
    actions = webhook.add_subparsers(dest="action", required=True)

    reg = actions.add_parser("register", help="create or replace the provider's webhook registration")
    reg.add_argument("--provider", required=True, help="provider id")
    reg.add_argument("--url", required=True,
                     help="callback URL: https://<app>/api/webhooks/partner-center/<provider>?code=<function key>")
    reg.add_argument("--events", nargs="+", metavar="EVENT",
                     help=f"events to receive (default: {' '.join(DEFAULT_EVENTS)})")
    reg.set_defaults(handler=register_command)

    status = actions.add_parser("status", help="show the registration and recently received events")
    status.add_argument("--provider", required=True, help="provider id")
    status.add_argument("--limit", type=int, default=10, help="recent events to show (default 10)")
    status.set_defaults(handler=status_command)
