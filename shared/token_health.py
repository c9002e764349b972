"""Why a provider's tokens stopped working, and what fixes it (partner-center-2026.md §1.2).

One :class:`TokenHealth` value per cause, stored in the provider row's ``token_health`` column
and shown with the consent status; the sync's typed errors (``shared.errors``), the transport's
resolution table, Verify Connectivity and ``pcsync doctor`` all name the cause and the fix from
the tables here, so they say the same thing.
"""
from __future__ import annotations

import enum

# Partner Center's error codes for the two token refusals (ApiFault ``code``)
MFA_REQUIRED_CODE = "900421"  # 401: App+User call without "mfa" in the token's amr claim (2026)
CONDITIONAL_ACCESS_CODE = "900309"  # 403: "Access has been blocked by Conditional Access policies"
# the 2019 form of the MFA refusal: status 401 with this reason phrase and an empty body
LEGACY_MFA_REASON = "mfa required"

# Entra ID's AADSTS codes for a refresh token that no longer works
AADSTS_EXPIRED = 700082  # unused for 90 days
AADSTS_REVOKED = 50173  # revoked: password reset, sessions revoked
AADSTS_MFA_AGAIN = (50076, 50079)  # MFA or Conditional Access re-challenge
AADSTS_CONDITIONAL_ACCESS = 53003  # blocked by Conditional Access


class TokenHealth(enum.StrEnum):
    """A provider's token problem (str-valued: stored values are these strings)."""

    MFA_REQUIRED = "mfa_required"  # Partner Center refuses App+User calls: 401 / 900421
    CONDITIONAL_ACCESS_BLOCKED = "conditional_access_blocked"  # 403 / 900309, or AADSTS53003 at sign-in
    REFRESH_TOKEN_EXPIRED = "refresh_token_expired"  # AADSTS700082
    REFRESH_TOKEN_REVOKED = "refresh_token_revoked"  # AADSTS50173
    MFA_CHALLENGE = "mfa_challenge"  # AADSTS50076/50079: Entra wants MFA again before it issues tokens
    CONSENT_REFUSED = "consent_refused"  # another invalid_grant: the consent is not accepted any more


# why a sign-in "with MFA" still gives a token without it, and what to do (consent says it too)
MFA_CLAIM_MISSING = ("A Conditional Access trusted-location (named location or IP) exemption skips the MFA prompt "
                     "and issues tokens without 'mfa' in amr: sign in from outside that location (e.g. a phone "
                     "hotspot) or remove the exemption for this user. Third-party MFA (Okta, Duo, OneLogin) must "
                     "send the amr claim with 'mfa'.")
_MFA_FIX = "Make MFA happen on the integration user's sign-in, then consent again. " + MFA_CLAIM_MISSING
_RECONSENT = "An administrator must open a new consent link and sign in as the integration user (with MFA)."

CAUSES: dict[TokenHealth, str] = {
    TokenHealth.MFA_REQUIRED: ("Partner Center refused App+User calls because the token carries no MFA claim "
                               f"(401, error {MFA_REQUIRED_CODE})."),
    TokenHealth.CONDITIONAL_ACCESS_BLOCKED: "A Conditional Access policy blocks the integration user's access "
                                            f"(403 {CONDITIONAL_ACCESS_CODE} or AADSTS{AADSTS_CONDITIONAL_ACCESS}).",
    TokenHealth.REFRESH_TOKEN_EXPIRED: f"The stored refresh token expired: unused for 90 days (AADSTS{AADSTS_EXPIRED}).",
    TokenHealth.REFRESH_TOKEN_REVOKED: ("The stored refresh token was revoked, e.g. after the integration user's "
                                        f"password was reset or their sessions were revoked (AADSTS{AADSTS_REVOKED})."),
    TokenHealth.MFA_CHALLENGE: "Entra ID requires the integration user to complete MFA again "
                               f"(AADSTS{AADSTS_MFA_AGAIN[0]}/{AADSTS_MFA_AGAIN[1]}).",
    TokenHealth.CONSENT_REFUSED: "Entra ID no longer accepts the stored consent.",
}

FIXES: dict[TokenHealth, str] = {
    TokenHealth.MFA_REQUIRED: _MFA_FIX,
    TokenHealth.CONDITIONAL_ACCESS_BLOCKED: ("Ask the Entra ID administrator which Conditional Access policy blocks "
                                             "the integration user (Entra sign-in logs), allow this app and user, "
                                             "then consent again."),
    TokenHealth.REFRESH_TOKEN_EXPIRED: _RECONSENT + " Syncs that run at least every few weeks keep it alive.",
    TokenHealth.REFRESH_TOKEN_REVOKED: _RECONSENT,
    TokenHealth.MFA_CHALLENGE: _RECONSENT,
    TokenHealth.CONSENT_REFUSED: _RECONSENT,
}


def describe(health: TokenHealth | str | None) -> tuple[str | None, str | None]:
    """(cause, fix) for a stored value; (None, None) for none or an unknown value."""
    try:
        known = TokenHealth(health) if health else None
    except ValueError:
        return None, None
    return (CAUSES[known], FIXES[known]) if known else (None, None)


def token_health_json(health: str | None, seen_at: str | None) -> dict[str, str | None]:
    """The consent status's ``tokenHealth``, ``cause``, ``fix`` and ``tokenHealthAt`` keys."""
    cause, fix = describe(health)
    return {"tokenHealth": health if cause else None, "cause": cause, "fix": fix, "tokenHealthAt": seen_at}


def partner_center_code(status: int, code: str | None, reason: str | None) -> str | None:
    """The ApiFault code, with the 2019 MFA refusal (401, reason "Unauthorized - MFA required",
    no body) read as 900421 so both forms are one error."""
    if code is None and status == 401 and LEGACY_MFA_REASON in (reason or "").lower():
        return MFA_REQUIRED_CODE
    return code


__all__ = [
    "AADSTS_CONDITIONAL_ACCESS", "AADSTS_EXPIRED", "AADSTS_MFA_AGAIN", "AADSTS_REVOKED", "CAUSES",
    "CONDITIONAL_ACCESS_CODE", "FIXES", "LEGACY_MFA_REASON", "MFA_CLAIM_MISSING", "MFA_REQUIRED_CODE", "TokenHealth", "describe",
    "partner_center_code", "token_health_json",
]
