"""In-memory fakes for testing auth/ and its callers without Entra, Key Vault or storage.

Fakes, not mocks: each keeps real state (secret versions, provider rows, table rows) so that
tests assert on outcomes. Tokens are real JWTs (HS256, unverifiable by design) with the claims
auth/ reads.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlencode

import jwt

from shared.errors import NotFound
from shared.providers import ProviderConnection

TENANT_ID = "8f2c7b1e-4c55-4a0e-9d1b-3a6f0f1c2d3e"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
USER_UPN = "integration@partner.example"
USER_OID = "0b6c0a4e-2f41-4a8e-8f0c-5c8ad1f2e001"
REDIRECT_URI = "https://pcsync.example/api/consent/callback"


def make_jwt(**claims: Any) -> str:
    """A JWT with the given claims (plus a unique id so no two tokens are equal)."""
    body = {"uti": uuid.uuid4().hex, "exp": int(time.time()) + 3600} | claims
    return jwt.encode(body, "not-a-real-key-just-for-tests-0123456789", algorithm="HS256")


def user_access_token(*, mfa: bool = True, tenant_id: str = TENANT_ID) -> str:
    return make_jwt(aud="https://api.partnercenter.microsoft.com", tid=tenant_id, oid=USER_OID, upn=USER_UPN,
                    amr=["pwd", "mfa"] if mfa else ["pwd"], scp="user_impersonation")


def token_result(*, mfa: bool = True, refresh_token: str | None = "new", expires_in: int = 3600,
                 tenant_id: str = TENANT_ID) -> dict[str, Any]:
    """An msal-shaped success result. refresh_token="new" makes a fresh random one."""
    result: dict[str, Any] = {
        "token_type": "Bearer",
        "access_token": user_access_token(mfa=mfa, tenant_id=tenant_id),
        "expires_in": expires_in,
        "id_token_claims": {"preferred_username": USER_UPN, "oid": USER_OID, "tid": tenant_id},
    }
    if refresh_token == "new":
        refresh_token = "rt-" + secrets.token_urlsafe(24)
    if refresh_token:
        result["refresh_token"] = refresh_token
    return result


def error_result(error: str, code: int, message: str = "") -> dict[str, Any]:
    return {
        "error": error,
        "error_codes": [code],
        "error_description": f"AADSTS{code}: {message or error}\r\nTrace ID: {uuid.uuid4()}",
    }


def provider(**overrides: Any) -> ProviderConnection:
    values = dict(id="contoso", name="Contoso Partner Center", country_code="US", currency_code="USD",
                  tenant_id=TENANT_ID)
    values.update(overrides)
    return ProviderConnection(**values)


class FakeSecrets:
    """SecretStore verbs over versions kept in memory."""

    def __init__(self, initial: Mapping[str, str] | None = None):
        self.versions: dict[str, list[str]] = {k: [v] for k, v in (initial or {}).items()}
        self.reads = 0
        self._lock = threading.Lock()

    def get_secret(self, name: str) -> str:
        with self._lock:
            self.reads += 1
            if not self.versions.get(name):
                raise NotFound(f"Key Vault secret {name!r} does not exist")
            return self.versions[name][-1]

    def find_secret(self, name: str) -> str | None:
        try:
            return self.get_secret(name)
        except NotFound:
            return None

    def set_secret(self, name: str, value: str, *, content_type: str | None = None) -> str:
        with self._lock:
            self.versions.setdefault(name, []).append(value)
            return str(len(self.versions[name]))


class FakeProviders:
    """ProviderRepository verbs over rows kept in memory; ``status_updates`` records each merge."""

    def __init__(self, *providers: ProviderConnection):
        self.rows = {p.id: p for p in providers}
        self.status_updates: list[dict[str, Any]] = []

    def get_provider(self, provider_id: str) -> ProviderConnection:
        if provider_id not in self.rows:
            raise NotFound(f"provider {provider_id!r} does not exist")
        return self.rows[provider_id]

    def find_provider(self, provider_id: str) -> ProviderConnection | None:
        return self.rows.get(provider_id)

    def update_status(self, provider_id: str, **changes: Any) -> ProviderConnection:
        known = {f.name for f in fields(ProviderConnection)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"not status fields: {sorted(unknown)}")
        self.status_updates.append({"id": provider_id, **changes})
        self.rows[provider_id] = replace(self.get_provider(provider_id), **changes)
        return self.rows[provider_id]


class FakeTable:
    """TableRepository verbs in memory; list_entities understands ``<field> lt @<param>``."""

    def __init__(self, name: str = "fake"):
        self.name = name
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def upsert_entity(self, entity: Mapping[str, Any], *, replace: bool = False) -> None:
        key = (entity["PartitionKey"], entity["RowKey"])
        if replace or key not in self.rows:
            self.rows[key] = dict(entity)
        else:
            self.rows[key].update(entity)

    def find_entity(self, partition_key: str, row_key: str) -> dict[str, Any] | None:
        row = self.rows.get((partition_key, row_key))
        return dict(row) if row else None

    def list_entities(self, *, partition_key: str | None = None, query: str | None = None,
                      parameters: Mapping[str, Any] | None = None, select: Any = None) -> Iterator[dict[str, Any]]:
        condition: Callable[[dict[str, Any]], bool] = lambda row: True
        if query:
            match = re.fullmatch(r"\s*(\w+) lt @(\w+)\s*", query)
            if not match:
                raise NotImplementedError(query)
            field, param = match.groups()
            limit = (parameters or {})[param]
            condition = lambda row: field in row and row[field] < limit  # noqa: E731
        for (pk, _), row in list(self.rows.items()):
            if (partition_key is None or pk == partition_key) and condition(row):
                yield dict(row)

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        self.rows.pop((partition_key, row_key), None)


class FakeConfidentialClient:
    """The msal calls auth/ makes, answered from scripts.

    ``refresh_results`` / ``code_results`` are consumed in order (an Exception instance is
    raised instead of returned); when empty, a fresh success result is produced.
    """

    def __init__(self, *, tenant_id: str = TENANT_ID):
        self.tenant_id = tenant_id
        self.refresh_results: list[Any] = []
        self.code_results: list[Any] = []
        self.client_results: list[Any] = []
        self.refresh_calls: list[tuple[str, list[str]]] = []
        self.code_calls: list[tuple[dict, dict]] = []
        self.client_calls: list[list[str]] = []
        self.flows: list[dict[str, Any]] = []
        self.delay = 0.0
        self._lock = threading.Lock()

    def initiate_auth_code_flow(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]:
        state = secrets.token_urlsafe(16)
        query = {"client_id": CLIENT_ID, "response_type": "code", "scope": " ".join(scopes + ["offline_access"]),
                 "state": state, "code_challenge": "x", "code_challenge_method": "S256",
                 **{k: v for k, v in kwargs.items() if isinstance(v, str)}}
        flow = {"state": state, "redirect_uri": kwargs.get("redirect_uri"), "scope": scopes,
                "code_verifier": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(8),
                "auth_uri": f"https://login.example/{self.tenant_id}/oauth2/v2.0/authorize?{urlencode(query)}",
                "kwargs": kwargs}
        self.flows.append(flow)
        return flow

    def acquire_token_by_auth_code_flow(self, auth_code_flow: dict, auth_response: dict, **kwargs: Any) -> dict:
        self.code_calls.append((auth_code_flow, auth_response))
        if auth_code_flow.get("state") != auth_response.get("state"):
            raise ValueError("state mismatch")
        if auth_response.get("error"):
            return {"error": auth_response["error"], "error_description": auth_response.get("error_description")}
        return self._next(self.code_results, token_result)

    def acquire_token_by_refresh_token(self, refresh_token: str, scopes: list[str], **kwargs: Any) -> dict:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.refresh_calls.append((refresh_token, scopes))
            return self._next(self.refresh_results, token_result)

    def acquire_token_for_client(self, scopes: list[str], **kwargs: Any) -> dict:
        self.client_calls.append(scopes)
        return self._next(self.client_results, lambda: {
            "access_token": make_jwt(aud="https://graph.microsoft.com", tid=self.tenant_id,
                                     roles=["PartnerBilling.Read.All"]),
            "expires_in": 3600, "token_type": "Bearer"})

    @staticmethod
    def _next(script: list[Any], default: Callable[[], dict]) -> dict:
        item = script.pop(0) if script else default()
        if isinstance(item, BaseException):
            raise item
        return item


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2025, 1, 15, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class FakeTokenProvider:
    """Stands in for auth.tokens.TokenProvider in callers' tests (sync, verify)."""

    def __init__(self, token: str | None = None, *, graph: str | None = None, error: Exception | None = None):
        self.token = token or user_access_token()
        self.graph = graph or make_jwt(roles=["PartnerBilling.Read.All"], tid=TENANT_ID)
        self.error = error
        self.calls: list[bool] = []
        self.app: str | BaseException = make_jwt(roles=[], tid=TENANT_ID, appid=CLIENT_ID)
        self.refusals: list[Exception] = []

    def access_token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        if self.error:
            raise self.error
        return self.token

    def graph_token(self, *, force_refresh: bool = False) -> str:
        if isinstance(self.graph, BaseException):
            raise self.graph
        return self.graph

    def app_access_token(self, *, force_refresh: bool = False) -> str:
        """The app-only Partner Center token (no user, no amr)."""
        if isinstance(self.app, BaseException):
            raise self.app
        return self.app

    def token_refused(self, error: Exception) -> None:
        self.refusals.append(error)


def make_settings(**overrides: Any) -> Any:
    """A Settings object for unit tests (storage never contacted)."""
    from shared.settings import Settings, StorageSettings

    values: dict[str, Any] = dict(storage=StorageSettings(connection_string="UseDevelopmentStorage=true"), key_vault_url="https://kv.example",
                                  client_id=CLIENT_ID, redirect_uri=REDIRECT_URI)
    values.update(overrides)
    return Settings(**values)

