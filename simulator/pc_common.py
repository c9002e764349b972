"""Shared Partner Center plumbing: ApiFault bodies, links, collections, authorization."""
from __future__ import annotations

import base64
import json
import zlib

from simulator.data import PARTNER_CENTER_RESOURCE
from simulator.state import SimulatorState
from simulator.tokens import Principal, TokenIssuer
from simulator.web import HttpError, Request, Response, json_response

SERVICE = "partner_center"
SALES_ROLES = frozenset({"salesagent", "adminagent"})
BILLING_ROLES = frozenset({"billingadmin", "adminagent"})


def api_fault(status: int, code: int, description: str, data: list | None = None, source: str = "PartnerFD",
              headers=()) -> Response:
    return json_response(status, {"code": code, "description": description, "data": data or [], "source": source},
                         headers=headers)


def fail(status: int, code: int, description: str, data: list | None = None) -> HttpError:
    return HttpError(api_fault(status, code, description, data))


def link(uri: str, method: str = "GET", headers: list | None = None) -> dict:
    return {"uri": uri, "method": method, "headers": headers or []}


def collection(items: list, self_uri: str | None = None, next_link: dict | None = None,
               continuation_token: str | None = None) -> dict:
    """Partner Center collection envelope; totalCount is the number of items in this page."""
    envelope: dict = {"totalCount": len(items), "items": items}
    if continuation_token is not None:
        envelope = {"continuationToken": continuation_token, **envelope}
    links = {}
    if self_uri:
        links["self"] = link(self_uri)
    if next_link:
        links["next"] = next_link
    if links:
        envelope["links"] = links
    envelope["attributes"] = {"objectType": "Collection"}
    return envelope


def encode_token(payload: dict) -> str:
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def decode_token(token: str | None, required_keys: tuple[str, ...]) -> dict:
    """Continuation tokens are opaque to clients; a damaged one is a 400, not a crash."""
    if not token:
        raise fail(400, 2000, "The MS-ContinuationToken header is required when seekOperation=Next.")
    try:
        payload = json.loads(base64.b64decode(token.encode(), validate=True))
        if not isinstance(payload, dict) or any(k not in payload for k in required_keys):
            raise ValueError
        return payload
    except (ValueError, TypeError):
        raise fail(400, 2000, "The continuation token is invalid or has expired.")


def parse_size(req: Request, default: int, maximum: int) -> int:
    raw = req.query.get("size")
    if raw in (None, ""):
        return default
    try:
        size = int(raw)
    except ValueError:
        raise fail(400, 2000, f"The size parameter must be an integer between 1 and {maximum}.")
    if size < 1:
        raise fail(400, 2000, f"The size parameter must be an integer between 1 and {maximum}.")
    return min(size, maximum)


def parse_offset(req: Request) -> int:
    raw = req.query.get("offset")
    if raw in (None, ""):
        return 0
    try:
        offset = int(raw)
    except ValueError:
        raise fail(400, 2000, "The offset parameter must be a non-negative integer.")
    if offset < 0:
        raise fail(400, 2000, "The offset parameter must be a non-negative integer.")
    return offset


def read_json(req: Request):
    """The request body as JSON; malformed input is a 400 ApiFault like Partner Center's."""
    try:
        return json.loads(req.body) if req.body else None
    except (ValueError, UnicodeDecodeError):
        raise fail(400, 2000, "The request body is not valid JSON.")


def stable_etag(text: str) -> str:
    """Deterministic across processes (str hash() is randomised per interpreter)."""
    return str(zlib.crc32(text.encode()) * 2654435761 % 10**18)


def lower_keys(value):
    """Requests are parsed case-insensitively (Microsoft's own PATCH samples are PascalCase)."""
    if isinstance(value, dict):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


class PartnerCenterAuth:
    def __init__(self, state: SimulatorState, issuer: TokenIssuer):
        from simulator.mfa import MfaGate  # mfa -> pc_common
        self.state, self.issuer = state, issuer
        self.mfa = MfaGate(state)

    def require(self, req: Request, *, app_user_only: bool = False, roles: frozenset[str] | None = None) -> Principal:
        token = req.bearer_token()
        principal = self.issuer.validate(token, [PARTNER_CENTER_RESOURCE, PARTNER_CENTER_RESOURCE + "/"]) \
            if token else None
        if principal is None:
            raise HttpError(api_fault(401, 400, "Access denied: the bearer token is missing, invalid, expired or "
                                                "not issued for https://api.partnercenter.microsoft.com.",
                                      headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')]))
        refusal = self.mfa.refusal(principal)  # 401 / 900421 (or the 2019 form), 403 / 900309
        if refusal is not None:
            raise HttpError(refusal)
        if app_user_only and principal.app_only:
            raise fail(403, 900329, "This resource doesn't support application-only authentication.")
        if roles is not None and not principal.app_only:
            with self.state.lock:
                user_roles = {r.lower() for r in self.state.user.roles} if principal.oid == self.state.user.oid \
                    else set()
            if not user_roles & roles:
                raise fail(403, 900150, "The supplied role does not have the rights to perform the requested "
                                        "operation")
        return principal
