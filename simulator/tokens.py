"""Issue and validate the simulator's RS256 JWTs (access tokens and id_tokens)."""
from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import jwt
from jwt.algorithms import RSAAlgorithm

from simulator.data import GRAPH_RESOURCE, KEY_VAULT_RESOURCE, PARTNER_CENTER_RESOURCE
from simulator.state import SimulatorState

# Resource -> delegated scope names the app may be granted (".default" expands to these).
KNOWN_RESOURCES = {
    PARTNER_CENTER_RESOURCE: ["user_impersonation"],
    GRAPH_RESOURCE: ["User.Read"],
    KEY_VAULT_RESOURCE: ["user_impersonation"],
}
RESOURCE_ALIASES = {
    "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd": PARTNER_CENTER_RESOURCE,   # Partner Center first-party app id
    "00000003-0000-0000-c000-000000000000": GRAPH_RESOURCE,
    "https://graph.microsoft.com/": GRAPH_RESOURCE,
    "https://api.partnercenter.microsoft.com/": PARTNER_CENTER_RESOURCE,
    "https://vault.azure.net/": KEY_VAULT_RESOURCE,
}
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}


class ScopeError(ValueError):
    pass


def split_scopes(scope_text: str) -> tuple[str, list[str], set[str]]:
    """'https://api.partnercenter.microsoft.com/user_impersonation offline_access openid' ->
    (resource, [scope names], {oidc scopes}). Entra allows one resource per request."""
    resources: dict[str, list[str]] = {}
    oidc = set()
    for scope in scope_text.split():
        if scope.lower() in OIDC_SCOPES:
            oidc.add(scope.lower())
            continue
        if "/" in scope:
            resource, _, name = scope.rpartition("/")
        else:
            resource, name = GRAPH_RESOURCE, scope   # bare scopes (User.Read) are Graph's
        resource = RESOURCE_ALIASES.get(resource.lower(), RESOURCE_ALIASES.get(resource.lower() + "/", resource))
        resource = resource.rstrip("/")
        if resource not in KNOWN_RESOURCES:
            raise ScopeError(f"AADSTS500011: The resource principal named {resource} was not found in the "
                             f"tenant. This can happen if the application has not been installed by the "
                             f"administrator of the tenant.")
        resources.setdefault(resource, []).append(name)
    if len(resources) > 1:
        raise ScopeError("AADSTS28000: Provided value for the input parameter scope is not valid because it "
                         "contains more than one resource.")
    if not resources:
        return GRAPH_RESOURCE, ["User.Read"], oidc
    resource, names = next(iter(resources.items()))
    return resource, names, oidc


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass
class Principal:
    """The caller behind a validated bearer token."""
    claims: dict

    @property
    def app_only(self) -> bool:
        return "scp" not in self.claims

    @property
    def oid(self) -> str:
        return self.claims.get("oid", "")

    @property
    def has_mfa(self) -> bool:
        return "mfa" in self.claims.get("amr", [])

    @property
    def scopes(self) -> set[str]:
        return set(self.claims.get("scp", "").split())

    @property
    def roles(self) -> set[str]:
        return set(self.claims.get("roles", []))


class TokenIssuer:
    def __init__(self, state: SimulatorState, private_key, base_url: str):
        self.state = state
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.base_url = base_url
        self.kid = hashlib.sha256(RSAAlgorithm.to_jwk(self.public_key).encode()).hexdigest()[:16]

    @property
    def tenant_id(self) -> str:
        return self.state.partner.tenant_id

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    def jwks(self) -> dict:
        key = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        key.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [key]}

    def _sign(self, claims: dict) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def _times(self) -> dict:
        # Real time, not the simulator clock: client libraries check these against their clock.
        now = int(time.time())
        return {"iat": now, "nbf": now, "exp": now + self.state.config.access_token_lifetime_seconds}

    def delegated_access_token(self, resource: str, scope_names: list[str], mfa: bool) -> tuple[str, str]:
        """Returns (token, granted scope string)."""
        granted = self._granted_delegated(resource, scope_names)
        user = self.state.user
        claims = {
            "aud": resource, "iss": self.issuer, **self._times(), "tid": self.tenant_id, "oid": user.oid,
            "sub": hashlib.sha256(f"{user.oid}|{self.state.app.client_id}".encode()).hexdigest()[:43],
            "upn": user.upn, "unique_name": user.upn, "preferred_username": user.upn, "name": user.display_name,
            "scp": " ".join(granted), "amr": ["pwd", "mfa"] if mfa else ["pwd"], "appid": self.state.app.client_id,
            "azp": self.state.app.client_id, "idtyp": "user", "ver": "2.0", "uti": uuid.uuid4().hex[:22],
        }
        scope_string = " ".join(granted if resource == GRAPH_RESOURCE else [f"{resource}/{s}" for s in granted])
        return self._sign(claims), scope_string

    def _granted_delegated(self, resource: str, names: list[str]) -> list[str]:
        if resource == GRAPH_RESOURCE:
            available = ["User.Read", *self.state.app.graph_delegated_permissions]
        else:
            available = KNOWN_RESOURCES[resource]
        if ".default" in names:
            return list(available)
        return [n for n in names if n in available] or list(available[:1])

    def app_access_token(self, resource: str) -> str:
        roles = list(self.state.app.graph_application_permissions) if resource == GRAPH_RESOURCE else []
        claims = {
            "aud": resource, "iss": self.issuer, **self._times(), "tid": self.tenant_id,
            "oid": self.state.app.service_principal_oid, "sub": self.state.app.service_principal_oid,
            "appid": self.state.app.client_id, "azp": self.state.app.client_id, "idtyp": "app",
            "roles": roles, "ver": "2.0", "uti": uuid.uuid4().hex[:22],
        }
        return self._sign(claims)

    def id_token(self, nonce: str | None) -> str:
        user = self.state.user
        claims = {
            "aud": self.state.app.client_id, "iss": self.issuer, **self._times(), "tid": self.tenant_id,
            "oid": user.oid, "sub": hashlib.sha256(f"{user.oid}|{self.state.app.client_id}".encode()).hexdigest()[:43],
            "preferred_username": user.upn, "name": user.display_name, "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        return self._sign(claims)

    def client_info(self) -> str:
        return b64url(json.dumps({"uid": self.state.user.oid, "utid": self.tenant_id}).encode())

    def validate(self, token: str, audiences: list[str]) -> Principal | None:
        """None when the token is not one of ours, expired, or for another audience."""
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], audience=audiences,
                                issuer=self.issuer, options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.PyJWTError:
            return None
        return Principal(claims)
