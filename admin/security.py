"""Who may use the admin page, and the headers every one of its answers carries.

Two modes (``PCSYNC_ADMIN_AUTH``):

- ``function_key`` (default): the page's HTML and assets hold no data and no secret; the admin
  types the function key once per browser session, the page keeps it in sessionStorage and sends
  it as ``x-functions-key`` to the JSON routes, where the Functions host checks it. A request
  that carries an ``X-MS-CLIENT-PRINCIPAL`` header here is refused outright: without App Service
  Authentication in front nothing strips or signs that header, so anyone could write it.
- ``app_service``: App Service Authentication (Entra ID) is in front. It removes any such header
  a client sends and adds its own for a signed-in user; the claims must hold ``PCSYNC_ADMIN_ROLE``.

State-changing requests through the page's gateway need the ``X-PCSYNC-Admin`` header (a
cross-site form cannot send one, and a cross-site fetch with it needs a CORS preflight this app
never grants) and a same-origin ``Sec-Fetch-Site`` or ``Origin``.
"""
from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from shared.settings import AdminAuth

PRINCIPAL_HEADER = "x-ms-client-principal"
CSRF_HEADER = "x-pcsync-admin"
MAX_PRINCIPAL_BYTES = 16 * 1024
ROLE_CLAIM_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
NAME_CLAIM_TYPES = ("preferred_username", "name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
SAFE_METHODS = ("GET", "HEAD")

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "form-action 'self'", "base-uri 'none'", "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Refusal(enum.StrEnum):
    """Why a request was refused (stable: tests and the page's message)."""

    FORGED_PRINCIPAL = "forged_principal"  # a principal header while App Service Authentication is off
    NOT_SIGNED_IN = "not_signed_in"
    BAD_PRINCIPAL = "bad_principal"
    MISSING_ROLE = "missing_role"
    GATEWAY_OFF = "gateway_off"  # the gateway serves App Service Authentication only
    CROSS_SITE = "cross_site"
    UNCONFIGURED = "unconfigured"  # the app settings cannot be read: nobody is let in


REFUSAL_STATUS = {Refusal.MISSING_ROLE: 403, Refusal.CROSS_SITE: 403, Refusal.GATEWAY_OFF: 404,
                  Refusal.UNCONFIGURED: 500}
REFUSAL_MESSAGE = {
    Refusal.FORGED_PRINCIPAL: "X-MS-CLIENT-PRINCIPAL is not accepted: App Service Authentication is not in "
                              "front of this app (PCSYNC_ADMIN_AUTH=function_key)",
    Refusal.NOT_SIGNED_IN: "sign in through App Service Authentication first",
    Refusal.BAD_PRINCIPAL: "the signed-in principal could not be read",
    Refusal.MISSING_ROLE: "the signed-in user lacks the admin app role",
    Refusal.GATEWAY_OFF: "not found",
    Refusal.CROSS_SITE: "cross-site request refused",
    Refusal.UNCONFIGURED: "pcsync's app settings cannot be used; the log names the setting to fix",
}


@dataclass(frozen=True)
class Denied(Exception):
    reason: Refusal

    @property
    def status(self) -> int:
        return REFUSAL_STATUS.get(self.reason, 401)

    @property
    def message(self) -> str:
        return REFUSAL_MESSAGE[self.reason]


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # azure.functions headers are case-insensitive; a plain dict may not be
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def parse_principal(encoded: str) -> Principal:
    """App Service Authentication's ``X-MS-CLIENT-PRINCIPAL``: base64 JSON with ``claims``."""
    if len(encoded) > MAX_PRINCIPAL_BYTES:
        raise Denied(Refusal.BAD_PRINCIPAL)
    try:
        body = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Denied(Refusal.BAD_PRINCIPAL) from None
    claims = body.get("claims") if isinstance(body, dict) else None
    if not isinstance(claims, list):
        raise Denied(Refusal.BAD_PRINCIPAL)
    role_types = {*ROLE_CLAIM_TYPES, str(body.get("role_typ") or "roles")}
    pairs = [(c.get("typ"), c.get("val")) for c in claims if isinstance(c, dict)]
    roles = frozenset(str(v) for t, v in pairs if t in role_types and isinstance(v, str))
    name = next((str(v) for t, v in pairs if t in NAME_CLAIM_TYPES and v), "")
    return Principal(name=name, roles=roles)


def authenticate(headers: Mapping[str, str], mode: AdminAuth, role: str) -> Principal | None:
    """The signed-in admin (app_service), or None (function_key: the host checks the key on the
    JSON routes). Raises :class:`Denied`."""
    encoded = _header(headers, PRINCIPAL_HEADER)
    if mode is not AdminAuth.APP_SERVICE:
        if encoded is not None or any(k.lower().startswith(PRINCIPAL_HEADER) for k in headers):
            raise Denied(Refusal.FORGED_PRINCIPAL)
        return None
    if not encoded:
        raise Denied(Refusal.NOT_SIGNED_IN)
    principal = parse_principal(encoded.strip())
    if role not in principal.roles:
        raise Denied(Refusal.MISSING_ROLE)
    return principal


def check_same_origin(method: str, headers: Mapping[str, str], url: str) -> None:
    """CSRF: the page's header on every gateway call; a same-origin request for changes."""
    if not _header(headers, CSRF_HEADER):
        raise Denied(Refusal.CROSS_SITE)
    if method.upper() in SAFE_METHODS:
        return
    site = (_header(headers, "sec-fetch-site") or "").lower()
    if site and site not in ("same-origin", "none"):
        raise Denied(Refusal.CROSS_SITE)
    origin = _header(headers, "origin")
    own_host = (_header(headers, "host") or urlsplit(url).netloc).lower()
    if origin is not None and urlsplit(origin).netloc.lower() != own_host:
        raise Denied(Refusal.CROSS_SITE)
    if not site and origin is None:  # a browser sends at least one of them with a POST
        raise Denied(Refusal.CROSS_SITE)


def with_security_headers(headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {**SECURITY_HEADERS, **(headers or {})}


__all__ = ["CONTENT_SECURITY_POLICY", "CSRF_HEADER", "Denied", "PRINCIPAL_HEADER", "Principal", "Refusal",
           "SECURITY_HEADERS", "authenticate", "check_same_origin", "parse_principal", "with_security_headers"]
