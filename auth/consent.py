"""Consent: the one-time sign-in of the partner's integration user (Secure Application Model).

``ConsentService.create_link`` starts an msal auth-code flow (PKCE S256, random state, nonce)
and keeps the flow dict server-side in table ``consentflows`` keyed by its state: single use,
15 minutes. ``ConsentService.complete`` is what the callback runs: it looks the state up,
spends it, redeems the code, refuses sign-ins whose token has no ``mfa`` in ``amr``, stores the
refresh token in Key Vault (and nowhere else) and records who consented on the provider row.

Every refusal is a ``ConsentOutcome`` with a page for the admin; nothing is stored on failure.
"""
from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, NoReturn
from urllib.parse import urlparse

from shared import telemetry
from shared.clock import Clock, parse_iso, to_iso, utc_now
from shared.errors import Conflict
from shared.logging import get_logger, register_secret
from shared.providers import (
    EDITABLE_FIELDS,
    REQUIRED_FIELDS,
    ConsentStatus,
    ProviderConnection,
    ProviderRepository,
    validate_provider_id,
)
from shared.tables import TableRepository, escape_key
from shared.token_health import MFA_CLAIM_MISSING

from .entra import (
    ClientFactory,
    IdentityProviderUnavailable,
    describe_error,
    partner_center_scope,
    register_token_result,
    unverified_claims,
)
from .tokens import REFRESH_TOKEN_LIFETIME

log = get_logger(__name__)

CONSENT_FLOWS_TABLE = "consentflows"
FLOW_PARTITION = "flow"
FLOW_LIFETIME = timedelta(minutes=15)
# Spent and expired flows are kept a day (so a replay is told "already used", not "unknown")
# and then removed whenever a new link is made.
FLOW_RETENTION = timedelta(days=1)
MAX_STATE_LENGTH = 256


class ProviderIncomplete(Conflict):
    """The provider lacks fields consent needs (maps to HTTP 409 with one message per field)."""

    def __init__(self, provider_id: str, problems: dict[str, str]):
        self.problems = problems
        super().__init__(
            f"provider {provider_id!r} is not ready for consent: fill in "
            + ", ".join(problems)
            + f" (PUT /api/providers/{provider_id} or `pcsync provider set`)"
        )


def consent_instructions(*, login_hint: str | None, expires_at: datetime) -> tuple[str, ...]:
    user = f" ({login_hint})" if login_hint else ""
    return (
        "Open the link in a private (incognito) browser window, so that no other signed-in account is used.",
        f"Sign in as the integration user{user}: the dedicated Partner Center service account, not a personal admin.",
        "The integration user must have multi-factor authentication (MFA) enabled, and MFA must trigger on "
        "every sign-in (for example a Conditional Access policy requiring MFA for all sign-ins). "
        "A sign-in without MFA is refused.",
        "In Partner Center (Account settings > User management) the integration user needs the roles "
        "Sales Agent and Billing Admin.",
        f"The link works once and expires at {to_iso(expires_at)} (15 minutes after it was made).",
        "After signing in you see a confirmation page; then run Verify Connectivity.",
    )


@dataclass(frozen=True)
class ConsentLink:
    provider_id: str
    url: str
    expires_at: datetime
    login_hint: str | None
    instructions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "providerId": self.provider_id,
            "consentUrl": self.url,
            "expiresAt": to_iso(self.expires_at),
            "loginHint": self.login_hint,
            "instructions": list(self.instructions),
        }


class ConsentReason(enum.StrEnum):
    """Why the callback page says what it says: stable, for tests and logs."""

    OK = "ok"
    UNKNOWN_STATE = "unknown_state"  # no state, or one this app never issued
    USED_STATE = "used_state"  # the link was already used
    EXPIRED_STATE = "expired_state"  # the link is older than 15 minutes
    REDIRECT_MISMATCH = "redirect_mismatch"  # came back to another address than the link was made for
    DECLINED = "declined"  # Entra reported an error (the user cancelled, consent denied)
    UNKNOWN_PROVIDER = "unknown_provider"  # the provider was deleted meanwhile
    TENANT_CHANGED = "tenant_changed"  # the provider's tenant id changed meanwhile
    TAMPERED_STATE = "tampered_state"  # msal: the response does not match its flow
    ENTRA_UNAVAILABLE = "entra_unavailable"
    TOKEN_ERROR = "token_error"  # Entra refused to redeem the code
    MFA_MISSING = "mfa_missing"  # the sign-in did not use MFA
    NO_REFRESH_TOKEN = "no_refresh_token"  # offline access not granted


@dataclass(frozen=True)
class ConsentOutcome:
    """What the callback page says. ``reason`` is stable, for tests and logs."""

    succeeded: bool
    reason: ConsentReason
    status: int
    title: str
    message: str
    provider_id: str | None = None


class _Refusal(Exception):
    """Ends the callback early with a refusal page (caught in ``ConsentService.complete``)."""

    def __init__(self, outcome: ConsentOutcome):
        super().__init__(outcome.reason.value)
        self.outcome = outcome


def _refuse(reason: ConsentReason, status: int, message: str, provider_id: str | None = None) -> NoReturn:
    telemetry.annotate(provider=provider_id, outcome=reason, status=status)
    raise _Refusal(ConsentOutcome(False, reason, status, "Consent not completed", message, provider_id))


NEW_LINK = "Ask the pcsync administrator for a new consent link and try again."


class ConsentFlowStore:
    """Pending auth-code flows in table ``consentflows``, RowKey = state."""

    def __init__(self, table: TableRepository):
        self._table = table

    def save(self, flow: Mapping[str, Any], *, provider_id: str, tenant_id: str, created_at: datetime) -> datetime:
        expires_at = created_at + FLOW_LIFETIME
        self._table.upsert_entity(
            {
                "PartitionKey": FLOW_PARTITION,
                "RowKey": escape_key(flow["state"]),
                "provider_id": provider_id,
                "tenant_id": tenant_id,
                "flow": json.dumps(dict(flow)),
                "created_at": to_iso(created_at),
                "expires_at": to_iso(expires_at),
            },
            replace=True,
        )
        return expires_at

    def find(self, state: str) -> dict[str, Any] | None:
        return self._table.find_entity(FLOW_PARTITION, escape_key(state))

    def spend(self, state: str, *, at: datetime) -> None:
        """Mark the flow used and drop its PKCE verifier and nonce.

        Not atomic: two callbacks racing with one state could both read it unspent. The auth
        code inside is itself single use at Entra, so at most one of them can redeem it.
        """
        self._table.upsert_entity(
            {"PartitionKey": FLOW_PARTITION, "RowKey": escape_key(state), "used_at": to_iso(at), "flow": ""}
        )

    def purge(self, *, before: datetime) -> int:
        stale = list(
            self._table.list_entities(
                partition_key=FLOW_PARTITION, query="expires_at lt @cutoff", parameters={"cutoff": to_iso(before)}
            )
        )
        for row in stale:
            self._table.delete_entity(FLOW_PARTITION, row["RowKey"])
        return len(stale)


def missing_consent_fields(provider: ProviderConnection) -> dict[str, str]:
    problems = {
        name: "is required before consent"
        for name in REQUIRED_FIELDS
        if not getattr(provider, EDITABLE_FIELDS[name], None)
    }
    if "tenantId" not in problems:
        try:
            uuid.UUID(str(provider.tenant_id))
        except ValueError:
            problems["tenantId"] = "must be the partner tenant id (Microsoft ID), a GUID"
    return problems


class ConsentService:
    def __init__(
        self,
        *,
        settings: Any,
        providers: ProviderRepository,
        secrets: Any,
        flows: ConsentFlowStore,
        client_for_tenant: ClientFactory,
        on_consented: Callable[[str], None] = lambda provider_id: None,
        clock: Clock = utc_now,
    ):
        """``client_for_tenant`` should build a fresh msal client per call: consent is rare, and a
        throwaway token cache means the refresh token from the code redemption does not linger in
        process memory. ``on_consented`` drops the process's cached tokens and clients for the
        provider once a new consent is stored."""
        self._on_consented = on_consented
        self._settings = settings
        self._providers = providers
        self._secrets = secrets
        self._flows = flows
        self._client_for_tenant = client_for_tenant
        self._clock = clock

    # -- the link ---------------------------------------------------------------------------

    def create_link(self, provider_id: str, *, login_hint: str | None = None) -> ConsentLink:
        validate_provider_id(provider_id)
        provider = self._providers.get_provider(provider_id)  # NotFound -> 404
        problems = missing_consent_fields(provider)
        if problems:
            raise ProviderIncomplete(provider_id, problems)
        self._settings.require("client_id", "redirect_uri")
        login_hint = (login_hint or provider.consented_upn or "").strip() or None

        client = self._client_for_tenant(provider.tenant_id)
        flow = client.initiate_auth_code_flow(
            [partner_center_scope(self._settings)],
            redirect_uri=self._settings.redirect_uri,
            prompt="select_account",
            login_hint=login_hint,
            # The code comes back in a POST body, not in a URL that browsers, proxies and
            # access logs keep; the callback accepts both.
            response_mode="form_post",
        )
        register_secret(flow.get("code_verifier"))
        now = self._clock()
        expires_at = self._flows.save(flow, provider_id=provider_id, tenant_id=provider.tenant_id, created_at=now)
        self._flows.purge(before=now - FLOW_RETENTION)
        self._record_link(provider, now)
        log.info("consent link created for provider %s, expires %s", provider_id, to_iso(expires_at))
        return ConsentLink(
            provider_id=provider_id,
            url=flow["auth_uri"],
            expires_at=expires_at,
            login_hint=login_hint,
            instructions=consent_instructions(login_hint=login_hint, expires_at=expires_at),
        )

    def _record_link(self, provider: ProviderConnection, now: datetime) -> None:
        """A link does not end the consent in force: a provider whose consent works stays
        ``active`` (and keeps syncing) until the new consent completes; only the link's time is
        recorded. Any other provider is ``pending`` (keeping its consent error, so it stays blocked)."""
        if provider.consent_active:
            self._providers.update_status(provider.id, consent_pending_since=to_iso(now))
        else:
            self._providers.update_status(provider.id, consent_status=ConsentStatus.PENDING,
                                          consent_pending_since=to_iso(now))

    # -- the callback -----------------------------------------------------------------------

    def complete(self, auth_response: Mapping[str, str], *, callback_url: str | None = None) -> ConsentOutcome:
        """Finish a consent from Entra's answer; every refusal is an outcome, and stores nothing."""
        with telemetry.span("pcsync.consent.complete"):
            response = {str(k): str(v) for k, v in auth_response.items()}
            # The auth code is a credential until redeemed; msal logs it at DEBUG in its cache events.
            register_secret(response.get("code"))
            try:
                now = self._clock()
                row, flow = self._spend_flow(response.get("state", ""), now)
                provider = self._check_answer(row, flow, response, callback_url)
                result = self._redeem(row, flow, response)
                return self._store_consent(provider, result, now)
            except _Refusal as refusal:
                return refusal.outcome

    def _spend_flow(self, state: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pending flow of ``state``, spent: a state works once and for 15 minutes."""
        if not state or len(state) > MAX_STATE_LENGTH:
            _refuse(ConsentReason.UNKNOWN_STATE, 400, "This sign-in response has no valid state. " + NEW_LINK)
        row = self._flows.find(state)
        if row is None:
            log.warning("consent callback with an unknown state")
            _refuse(ConsentReason.UNKNOWN_STATE, 400, "This sign-in response does not belong to a consent link "
                    "issued here (the link is unknown or was altered). " + NEW_LINK)
        provider_id = row["provider_id"]
        if row.get("used_at"):
            log.warning("consent callback replayed a used state for provider %s", provider_id)
            _refuse(ConsentReason.USED_STATE, 400, "This consent link was already used; each link works once. "
                    + NEW_LINK, provider_id)
        # Spend the state before anything else can fail, so it can never be presented twice.
        self._flows.spend(state, at=now)
        if now >= parse_iso(row["expires_at"]):
            log.warning("consent callback after the link expired for provider %s", provider_id)
            _refuse(ConsentReason.EXPIRED_STATE, 400, "This consent link has expired (links work for 15 minutes). "
                    + NEW_LINK, provider_id)
        # our own row, written by ConsentFlowStore.save: not outside input
        flow = json.loads(row["flow"])
        register_secret(flow.get("code_verifier"))
        return row, flow

    def _check_answer(self, row: Mapping[str, Any], flow: Mapping[str, Any], response: Mapping[str, str],
                      callback_url: str | None) -> ProviderConnection:
        """The provider the flow was made for, when the answer came back where and as expected."""
        provider_id = row["provider_id"]
        if not self._redirect_matches(flow.get("redirect_uri"), callback_url):
            log.warning("consent callback redirect mismatch for provider %s", provider_id)
            _refuse(ConsentReason.REDIRECT_MISMATCH, 400, "This sign-in came back to a different address than the "
                    "consent link was made for (the redirect URI setting changed). " + NEW_LINK, provider_id)
        if response.get("error"):
            log.warning("consent declined for provider %s: %s", provider_id, response.get("error"))
            _refuse(ConsentReason.DECLINED, 400, "The sign-in did not complete: Entra ID reported "
                    f"'{response['error']}'. Nothing was stored. " + NEW_LINK, provider_id)
        provider = self._providers.find_provider(provider_id)
        if provider is None:
            _refuse(ConsentReason.UNKNOWN_PROVIDER, 404, "The provider this link was made for no longer exists.")
        if provider.tenant_id != row.get("tenant_id"):
            _refuse(ConsentReason.TENANT_CHANGED, 409, "The provider's tenant id changed after this link was made. "
                    + NEW_LINK, provider_id)
        return provider

    def _redeem(self, row: Mapping[str, Any], flow: dict[str, Any], response: dict[str, str]) -> dict[str, Any]:
        """Entra's token result for the auth code, with MFA and a refresh token."""
        provider_id = row["provider_id"]
        try:
            client = self._client_for_tenant(row["tenant_id"])
            result = client.acquire_token_by_auth_code_flow(flow, response)
        except ValueError:  # msal: state/scope mismatch between the flow and the response
            log.warning("msal refused the auth response for provider %s", provider_id)
            _refuse(ConsentReason.TAMPERED_STATE, 400, "The sign-in response does not match its consent link. "
                    + NEW_LINK, provider_id)
        except IdentityProviderUnavailable:
            _refuse(ConsentReason.ENTRA_UNAVAILABLE, 503, "Entra ID could not be reached to finish the sign-in. "
                    + NEW_LINK, provider_id)
        register_token_result(result)
        if "error" in result:
            log.warning("consent code redemption failed for provider %s: %s", provider_id, describe_error(result))
            _refuse(ConsentReason.TOKEN_ERROR, 400, f"Entra ID refused the sign-in ({describe_error(result)}). "
                    + NEW_LINK, provider_id)
        if "mfa" not in (unverified_claims(result.get("access_token")).get("amr") or []):
            log.warning("consent refused for provider %s: no mfa in amr", provider_id)
            _refuse(ConsentReason.MFA_MISSING, 403, "The sign-in did not use multi-factor authentication, so "
                    "consent was refused and nothing was stored. MFA must be enabled for the integration user "
                    "and must trigger on every sign-in (for example a Conditional Access policy that requires "
                    "MFA for all sign-ins). " + MFA_CLAIM_MISSING + " " + NEW_LINK, provider_id)
        if not result.get("refresh_token"):
            _refuse(ConsentReason.NO_REFRESH_TOKEN, 400, "Entra ID returned no refresh token (offline access was "
                    "not granted to the app). " + NEW_LINK, provider_id)
        return result

    def _store_consent(self, provider: ProviderConnection, result: Mapping[str, Any], now: datetime) -> ConsentOutcome:
        """The refresh token into Key Vault (and nowhere else), who consented onto the provider row."""
        claims = unverified_claims(result.get("access_token"))
        id_claims = result.get("id_token_claims") or {}
        upn = (id_claims.get("preferred_username") or claims.get("upn") or claims.get("unique_name")
               or id_claims.get("upn"))
        oid = id_claims.get("oid") or claims.get("oid")
        self._secrets.set_secret(provider.refresh_token_secret_name, result["refresh_token"])
        self._providers.update_status(
            provider.id,
            consent_status=ConsentStatus.ACTIVE,
            consented_upn=upn,
            consented_oid=oid,
            consented_at=to_iso(now),
            last_token_refresh=to_iso(now),
            refresh_token_expires_at=to_iso(now + REFRESH_TOKEN_LIFETIME),
            consent_error=None,
            consent_pending_since=None,
            token_health=None,  # a new MFA'd consent: an earlier MFA or token problem is gone
            token_health_at=None,
        )
        self._on_consented(provider.id)
        log.info("consent completed for provider %s by %s", provider.id, upn)
        telemetry.annotate(provider=provider.id, outcome=ConsentReason.OK, status=200)
        who = f" as {upn}" if upn else ""
        return ConsentOutcome(True, ConsentReason.OK, 200, "Consent complete",
                              f"pcsync can now reach Partner Center for provider '{provider.id}'{who}. "
                              "You can close this window and run Verify Connectivity.", provider.id)

    def _redirect_matches(self, flow_redirect: str | None, callback_url: str | None) -> bool:
        if not flow_redirect or flow_redirect != self._settings.redirect_uri:
            return False
        if callback_url:
            # Only the path is compared: behind a proxy or custom domain the host the function
            # sees may differ from the public one registered on the app.
            expected = urlparse(flow_redirect).path.rstrip("/").lower()
            actual = urlparse(callback_url).path.rstrip("/").lower()
            return expected == actual
        return True

