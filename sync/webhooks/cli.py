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
from shared.partner_center import ConflictError, NotFoundError, PartnerCenterClient
from shared.providers import validate_provider_id

from .. import engine
from .service import DEFAULT_EVENTS, service_for

REGISTRATION_PATH = "/webhooks/v1/registration"
CALLBACK_ROUTE = "/api/webhooks/partner-center/"
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


def registration_url(runtime: Any) -> str:
    # the registration API lives outside /v1; an absolute URL on the configured origin is allowed
    return runtime.settings.partner_center_url.rstrip("/") + REGISTRATION_PATH


def _client(runtime: Any, provider_id: str) -> PartnerCenterClient:
    provider = runtime.providers.get_provider(provider_id)
    return engine.service_for(runtime).client_for(provider).bind()


def get_registration(client: PartnerCenterClient, url: str) -> dict[str, Any] | None:
    try:
        return client.get_json(url)
    except NotFoundError:
        return None


def register_webhook(runtime: Any, provider_id: str, callback_url: str, events: list[str]) -> dict[str, Any]:
    """Create or replace the partner's registration; returns Partner Center's answer."""
    client = _client(runtime, provider_id)
    base = registration_url(runtime)
    supported = client.get_json(base + "/events").get("items", [])
    known = {str(e).lower(): str(e) for e in supported}
    unknown = [e for e in events if e.lower() not in known]
    if unknown:
        raise ValidationFailed({"events": f"not offered by Partner Center: {', '.join(unknown)}; "
                                          f"supported: {', '.join(known.values())}"})
    body = {"WebhookUrl": callback_url, "WebhookEvents": [known[e.lower()] for e in events]}
    method = "PUT" if get_registration(client, base) is not None else "POST"
    try:
        # POST is safe to replay (a second create is refused with 409), PUT replaces
        return client.send_json(method, base, body, replay_safe=True).body
    except ConflictError:
        return client.send_json("PUT", base, body, replay_safe=True).body


def _printable(registration: dict[str, Any]) -> dict[str, Any]:
    shown = dict(registration)
    for key in list(shown):
        if key.lower() == "webhookurl":
            shown[key] = redact_url(str(shown[key]))
    return shown


def register_command(args: argparse.Namespace, runtime: Any) -> int:
    validate_provider_id(args.provider)
    events = args.events or list(DEFAULT_EVENTS)
    for warning in validate_callback_url(args.url, args.provider):
        print(f"warning: {warning}", file=sys.stderr)
    registration = register_webhook(runtime, args.provider, args.url, events)
    print(json.dumps(_printable(registration), indent=2))
    print(f"webhook registered for provider {args.provider}", file=sys.stderr)
    return 0


def status_command(args: argparse.Namespace, runtime: Any) -> int:
    validate_provider_id(args.provider)
    registration = get_registration(_client(runtime, args.provider), registration_url(runtime))
    events = service_for(runtime).list_events(args.provider, limit=args.limit)
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
