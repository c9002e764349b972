"""Tokens for Partner Center (App+User, from the stored refresh token) and Graph (app-only).

Concurrency and the newest refresh token
----------------------------------------
Entra ID rotates the refresh token on every redemption but does not revoke the one that was
redeemed (it stays valid until its own 90-day inactivity window ends). So the danger is not two
workers redeeming the same token; it is a worker redeeming, or writing back, an *older* token
than the newest one, which would let the newest one idle out. We therefore:

* serialize refreshes per provider inside a process with a lock (one TokenProvider per provider
  per process, see ``TokenProviders``), so threads share one access token and one rotation;
* never keep a refresh token in memory between refreshes: every refresh reads the latest Key
  Vault version right before redeeming it and writes the rotated token as a new version right
  after, so across processes the token redeemed is always the newest one stored;
* if Entra refuses the token we read, re-read Key Vault once: when a newer version appeared
  meanwhile (another worker rotated it, or an admin consented again) we redeem that instead of
  declaring the consent lost.

A cross-process lock (blob lease) would add a storage round trip to every refresh and a failure
mode of its own, for no gain given the rotation semantics above.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, NamedTuple

import requests
from msal.exceptions import MsalServiceError

from shared.clock import Clock, to_iso, utc_now
from shared.errors import (
    ConsentRequired,
    MfaChallengeRequired,
    RefreshTokenExpired,
    RefreshTokenRevoked,
    SignInBlockedByConditionalAccess,
    TokenRefused,
)
from shared.logging import get_logger, redact, register_secret
from shared.providers import ConsentStatus, ProviderConnection
from shared.token_health import (
    AADSTS_CONDITIONAL_ACCESS,
    AADSTS_EXPIRED,
    AADSTS_MFA_AGAIN,
    AADSTS_REVOKED,
    FIXES,
    TokenHealth,
)

from .entra import (
    ClientFactory,
    ConfidentialClient,
    IdentityProviderUnavailable,
    TokenRequestFailed,
    describe_error,
    error_codes,
    graph_scope,
    partner_center_scope,
    register_token_result,
)

log = get_logger(__name__)

REFRESH_TOKEN_LIFETIME = timedelta(days=90)  # Entra's inactivity window for refresh tokens
ACCESS_TOKEN_MARGIN = timedelta(minutes=5)  # refresh this long before the access token expires

RECONSENT = "An administrator must open a new consent link and sign in as the integration user (with MFA)."


class ConsentProblem(NamedTuple):
    """Why the stored consent cannot produce tokens: the consent status to store, the message,
    the :class:`ConsentRequired` subclass to raise and the cause (``token_health``) to record."""

    status: ConsentStatus
    message: str
    error: type[ConsentRequired]
    health: TokenHealth


_ERROR_FOR_HEALTH: dict[str, type[ConsentRequired]] = {
    TokenHealth.REFRESH_TOKEN_EXPIRED: RefreshTokenExpired,
    TokenHealth.REFRESH_TOKEN_REVOKED: RefreshTokenRevoked,
    TokenHealth.MFA_CHALLENGE: MfaChallengeRequired,
    TokenHealth.CONDITIONAL_ACCESS_BLOCKED: SignInBlockedByConditionalAccess,
}


def classify_token_error(result: dict[str, Any]) -> ConsentProblem | None:
    """The :class:`ConsentProblem` when an msal error result means the stored consent is unusable,
    ``None`` when it is some other failure (configuration, transient)."""
    error = result.get("error")
    if error not in ("invalid_grant", "interaction_required"):
        return None
    codes = set(error_codes(result))
    if AADSTS_EXPIRED in codes:
        return ConsentProblem(ConsentStatus.EXPIRED, "The stored consent expired: its refresh token was not used "
                              f"for 90 days (AADSTS{AADSTS_EXPIRED}). " + RECONSENT, RefreshTokenExpired,
                              TokenHealth.REFRESH_TOKEN_EXPIRED)
    if AADSTS_REVOKED in codes:
        return ConsentProblem(ConsentStatus.REVOKED, "The stored consent was revoked by Entra ID, for example after "
                              "the integration user's password was reset or their sessions revoked "
                              f"(AADSTS{AADSTS_REVOKED}). " + RECONSENT, RefreshTokenRevoked,
                              TokenHealth.REFRESH_TOKEN_REVOKED)
    challenged = codes.intersection(AADSTS_MFA_AGAIN)
    if challenged:
        return ConsentProblem(ConsentStatus.EXPIRED, "Entra ID requires the integration user to complete "
                              f"multi-factor authentication again (AADSTS{min(challenged)}). " + RECONSENT,
                              MfaChallengeRequired, TokenHealth.MFA_CHALLENGE)
    if AADSTS_CONDITIONAL_ACCESS in codes:
        return ConsentProblem(ConsentStatus.REVOKED, "Entra ID refuses tokens for the integration user: a "
                              f"Conditional Access policy blocks them (AADSTS{AADSTS_CONDITIONAL_ACCESS}). "
                              + FIXES[TokenHealth.CONDITIONAL_ACCESS_BLOCKED], SignInBlockedByConditionalAccess,
                              TokenHealth.CONDITIONAL_ACCESS_BLOCKED)
    return ConsentProblem(ConsentStatus.REVOKED, f"Entra ID no longer accepts the stored consent "
                          f"({describe_error(result)}). " + RECONSENT, ConsentRequired, TokenHealth.CONSENT_REFUSED)


@dataclass(frozen=True)
class _CachedToken:
    value: str
    expires_at: datetime


class TokenProvider:
    """Access tokens for one provider connection. Thread-safe; keep one per provider per process."""

    def __init__(
        self,
        *,
        provider: ProviderConnection,
        settings: Any,
        providers: Any,
        secrets: Any,
        client_for_tenant: ClientFactory,
        clock: Clock = utc_now,
    ):
        self.provider_id = provider.id
        self.tenant_id = provider.tenant_id
        self.secret_name = provider.refresh_token_secret_name
        self._settings = settings
        self._providers = providers
        self._secrets = secrets
        self._client_for_tenant = client_for_tenant
        self._clock = clock
        self._client: ConfidentialClient | None = None
        self._cached: _CachedToken | None = None
        self._lock = threading.Lock()  # one refresh at a time
        self._client_lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A Partner Center App+User access token, refreshed ~5 minutes before it expires.

        Raises ConsentRequired when the stored consent is unusable (without calling Entra when
        the provider is already marked expired or revoked), IdentityProviderUnavailable when
        Entra keeps failing, TokenRequestFailed for configuration problems.
        """
        if not force_refresh:
            cached = self._usable_cached()
            if cached:
                return cached
        with self._lock:
            if not force_refresh:
                cached = self._usable_cached()  # another thread may have refreshed meanwhile
                if cached:
                    return cached
            return self._refresh()

    def graph_token(self, *, force_refresh: bool = False) -> str:
        """An app-only Microsoft Graph token (``/.default``: the app's granted application
        permissions, e.g. PartnerBilling.Read.All). msal caches it until shortly before expiry;
        ``force_refresh`` asks Entra through a new client (so newly granted roles show up)."""
        return self._app_token(graph_scope(self._settings), "Graph", force_refresh)

    def app_access_token(self, *, force_refresh: bool = False) -> str:
        """An app-only Partner Center token (client credentials, ``/.default``): no user and no
        MFA, so it keeps working when App+User calls are refused for MFA. Partner Center takes it
        for the calls documented "App-only and App+User" (see ``shared.token_choice``)."""
        resource = partner_center_scope(self._settings).rsplit("/", 1)[0]
        return self._app_token(f"{resource}/.default", "Partner Center", force_refresh)

    def token_refused(self, error: TokenRefused) -> None:
        """Partner Center refused an App+User token (MFA, Conditional Access): record the cause on
        the provider (``token_health``) so its consent status names it and the fix."""
        try:
            self._providers.update_status(self.provider_id, token_health=error.health,
                                          token_health_at=to_iso(self._clock()))
        except Exception:  # noqa: BLE001 - recording the cause must never hide the refusal itself
            log.warning("could not record token health for provider %s", self.provider_id, exc_info=True)

    def _app_token(self, scope: str, service: str, force_refresh: bool) -> str:
        scopes = [scope]
        if force_refresh:
            result = self._call(lambda _: self._client_for_tenant(self.tenant_id).acquire_token_for_client(scopes))
        else:
            result = self._call(lambda client: client.acquire_token_for_client(scopes))
        if "access_token" not in result:
            raise TokenRequestFailed(
                f"Entra ID refused an app-only {service} token for provider {self.provider_id} "
                f"({describe_error(result)}): check the app's client secret or certificate.",
                error=result.get("error"), codes=error_codes(result),
            )
        register_secret(result["access_token"])
        return result["access_token"]

    def invalidate(self) -> None:
        """Drop the cached access token (e.g. after Partner Center answered 401)."""
        with self._lock:
            self._cached = None

    # -- internals ------------------------------------------------------------------------

    def _usable_cached(self) -> str | None:
        cached = self._cached
        if cached and self._clock() < cached.expires_at - ACCESS_TOKEN_MARGIN:
            return cached.value
        return None

    def _client_instance(self) -> ConfidentialClient:
        with self._client_lock:
            if self._client is None:
                self._client = self._client_for_tenant(self.tenant_id)
            return self._client

    def _call(self, request: Callable[[ConfidentialClient], dict[str, Any]]) -> dict[str, Any]:
        """One msal call; transport retries already happened in the session (auth/entra.py)."""
        try:
            return request(self._client_instance())
        except (requests.RequestException, MsalServiceError) as exc:
            log.warning("token endpoint unavailable for provider %s: %s", self.provider_id, type(exc).__name__)
            raise IdentityProviderUnavailable(
                f"Entra ID token endpoint failed for provider {self.provider_id} ({type(exc).__name__}); "
                "try again later"
            ) from None

    def _refresh(self) -> str:
        provider: ProviderConnection = self._providers.get_provider(self.provider_id)
        blocked = provider.consent_blocked
        if blocked:
            # Marked once by whoever saw invalid_grant; do not ask Entra again until re-consent.
            raise _ERROR_FOR_HEALTH.get(provider.token_health or "", ConsentRequired)(self.provider_id, blocked,
                                  provider.consent_error or f"Consent for provider {self.provider_id} is "
                                  f"{blocked}. " + RECONSENT)
        refresh_token = self._read_refresh_token()
        result = self._redeem(refresh_token)
        if "access_token" not in result and classify_token_error(result):
            newer = self._read_refresh_token()
            if newer != refresh_token:
                log.info("refresh token for provider %s changed in Key Vault meanwhile; using the newest",
                         self.provider_id)
                refresh_token, result = newer, self._redeem(newer)
        if "access_token" not in result:
            self._fail(result)

        now = self._clock()
        rotated = result.get("refresh_token")
        if rotated and rotated != refresh_token:  # an identical token would only add a version
            self._secrets.set_secret(self.secret_name, rotated)
        self._providers.update_status(
            self.provider_id,
            last_token_refresh=to_iso(now),
            refresh_token_expires_at=to_iso(now + REFRESH_TOKEN_LIFETIME),
        )
        token = result["access_token"]
        expires_in = int(result.get("expires_in") or 3600)
        self._cached = _CachedToken(token, now + timedelta(seconds=expires_in))
        log.debug("access token refreshed for provider %s, valid %s s", self.provider_id, expires_in)
        return token

    def _read_refresh_token(self) -> str:
        refresh_token = self._secrets.find_secret(self.secret_name)
        if not refresh_token:
            raise ConsentRequired(self.provider_id, ConsentStatus.NONE,
                                  f"No consent is stored for provider {self.provider_id}. " + RECONSENT)
        register_secret(refresh_token)
        return refresh_token

    def _redeem(self, refresh_token: str) -> dict[str, Any]:
        scopes = [partner_center_scope(self._settings)]
        result = self._call(lambda client: client.acquire_token_by_refresh_token(refresh_token, scopes))
        register_token_result(result)
        return result

    def _fail(self, result: dict[str, Any]) -> None:
        self._cached = None
        consent = classify_token_error(result)
        if consent is None:
            log.warning("token refresh failed for provider %s: %s", self.provider_id, describe_error(result))
            raise TokenRequestFailed(
                f"Entra ID refused the token request for provider {self.provider_id} ({describe_error(result)}). "
                "Check the app registration's client id and its secret or certificate.",
                error=result.get("error"), codes=error_codes(result),
            )
        log.warning("consent for provider %s is %s: %s", self.provider_id, consent.status, describe_error(result))
        self._providers.update_status(self.provider_id, consent_status=consent.status,
                                      consent_error=redact(consent.message), token_health=consent.health,
                                      token_health_at=to_iso(self._clock()))
        raise consent.error(self.provider_id, consent.status, consent.message)


class TokenProviders:
    """One :class:`TokenProvider` per provider for the process (rebuilt when the provider's
    tenant changes), so threads share one access token and one refresh-token rotation. Built once
    by the composition root; ``for_provider`` is the token source factory the clients use."""

    def __init__(self, *, settings: Any, providers: Any, secrets: Any, client_for_tenant: ClientFactory,
                 clock: Clock = utc_now):
        self._settings = settings
        self._providers = providers
        self._secrets = secrets
        self._client_for_tenant = client_for_tenant
        self._clock = clock
        self._by_provider: dict[str, TokenProvider] = {}
        self._lock = threading.Lock()

    def for_provider(self, provider: ProviderConnection) -> TokenProvider:
        with self._lock:
            existing = self._by_provider.get(provider.id)
            if existing is not None and existing.tenant_id == provider.tenant_id:
                return existing
            created = TokenProvider(provider=provider, settings=self._settings, providers=self._providers,
                                    secrets=self._secrets, client_for_tenant=self._client_for_tenant, clock=self._clock)
            self._by_provider[provider.id] = created
            return created

    def __contains__(self, provider_id: object) -> bool:
        """Whether a TokenProvider of the provider is kept (after a purge it must not be)."""
        with self._lock:
            return provider_id in self._by_provider

    def forget(self, provider_id: str) -> None:
        """Drop the provider's TokenProvider (after a new consent or a purge, so no stale state survives)."""
        with self._lock:
            self._by_provider.pop(provider_id, None)
