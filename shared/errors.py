"""Typed errors, grouped by what the caller can do about them."""
from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Callable

from .token_health import TokenHealth


class PcsyncError(Exception):
    """Base class for errors raised by pcsync's own code."""


class ValidationFailed(PcsyncError):
    """Input was rejected; ``problems`` maps a field name to one message each."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.problems.items()))


class NotFound(PcsyncError):
    """The named item does not exist."""


class Conflict(PcsyncError):
    """The request cannot proceed in the current state (maps to HTTP 409)."""


class MessageTooLarge(PcsyncError):
    """A queue message would exceed the Storage Queue size limit."""


class ConsentRequired(PcsyncError):
    """The provider's stored consent cannot produce tokens (expired, revoked, missing or MFA
    re-challenge). Work for that provider stops until an admin consents again; never retried."""

    def __init__(self, provider_id: str, status: str, message: str):
        self.provider_id = provider_id
        self.status = status  # "expired" | "revoked" | "none"
        super().__init__(message)


class RefreshTokenExpired(ConsentRequired):
    """The stored refresh token was not used for 90 days (AADSTS700082)."""

    health = TokenHealth.REFRESH_TOKEN_EXPIRED


class RefreshTokenRevoked(ConsentRequired):
    """Entra ID revoked the stored refresh token (AADSTS50173: password reset, sessions revoked)."""

    health = TokenHealth.REFRESH_TOKEN_REVOKED


class MfaChallengeRequired(ConsentRequired):
    """Entra ID wants the integration user to complete MFA again (AADSTS50076/50079)."""

    health = TokenHealth.MFA_CHALLENGE


class SignInBlockedByConditionalAccess(ConsentRequired):
    """Entra ID refuses to issue tokens: a Conditional Access policy blocks them (AADSTS53003)."""

    health = TokenHealth.CONDITIONAL_ACCESS_BLOCKED


class TokenRefused(PcsyncError):
    """Partner Center refused a token it would accept from a healthy consent: an App+User call
    without MFA, or one a Conditional Access policy blocks. App-only calls keep working, so the
    sync degrades (what needs App+User fails) instead of stopping. ``health`` names the cause
    (``shared.token_health.TokenHealth``)."""

    health: TokenHealth | None = None


class MfaRequired(TokenRefused):
    """401 with error 900421 (or the 2019 "Unauthorized - MFA required" form): the App+User
    token has no ``mfa`` in its ``amr`` claim."""

    health = TokenHealth.MFA_REQUIRED


class ConditionalAccessBlocked(TokenRefused):
    """403 with error 900309: "Access has been blocked by Conditional Access policies"."""

    health = TokenHealth.CONDITIONAL_ACCESS_BLOCKED


class PermissionMissing(PcsyncError):
    """Partner Center or Graph refused an operation for lack of a role or permission."""


class InvalidInput(PcsyncError):
    """A request body, queue message or argument that can never succeed as it is (HTTP 400 by
    default; ``status`` may say 413 for a body that is too large)."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, problems: dict[str, str] | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.problems = problems


class NotConfigured(PcsyncError):
    """An app setting the operation needs is missing or malformed."""


class Unavailable(PcsyncError):
    """A dependency (Entra ID, Key Vault, storage, a queue) could not be reached; later may work."""


class UpstreamRefused(PcsyncError):
    """Entra ID or another service refused the request in a way the operator has to fix."""


# -- the one table for the edges -----------------------------------------------------------------
#
# Every blueprint turns a raised error into an answer through this table: the HTTP status for an
# HTTP trigger, and for a queue trigger whether the message is recorded and dropped (a redelivery
# cannot help) or raised again so the host redelivers it (and after maxDequeueCount moves it to
# <queue>-poison). The first row whose type matches wins, so specific types come first. An error
# that matches no row is a bug: HTTP answers 500 without details, a queue redelivers.


class QueueAction(enum.StrEnum):
    DROP = "drop"  # log it with the message id, complete the message
    RETRY = "retry"  # raise: the host redelivers, then poisons


@dataclass(frozen=True)
class EdgeRule:
    matches: Callable[[BaseException], bool]
    status: int
    queue: QueueAction
    public_message: str | None = None  # None: the error's own text (our messages never carry secrets)


def _is(kind: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, kind)


def _is_azure_sdk_error(exc: BaseException) -> bool:
    # looked up only if the SDK is loaded: nothing here imports it (cold start), and an SDK error
    # cannot have been raised without it
    sdk = sys.modules.get("azure.core.exceptions")
    return sdk is not None and isinstance(exc, sdk.AzureError)


EDGE_RULES: tuple[EdgeRule, ...] = (
    EdgeRule(_is(ValidationFailed), 400, QueueAction.DROP),
    EdgeRule(_is(InvalidInput), 400, QueueAction.DROP),
    EdgeRule(_is(MessageTooLarge), 413, QueueAction.DROP),
    EdgeRule(_is(NotFound), 404, QueueAction.DROP),
    EdgeRule(_is(ConsentRequired), 409, QueueAction.DROP),
    EdgeRule(_is(TokenRefused), 409, QueueAction.DROP),
    EdgeRule(_is(Conflict), 409, QueueAction.DROP),
    EdgeRule(_is(PermissionMissing), 403, QueueAction.DROP),
    EdgeRule(_is(UpstreamRefused), 502, QueueAction.DROP),
    EdgeRule(_is(NotConfigured), 500, QueueAction.RETRY),
    EdgeRule(_is(Unavailable), 503, QueueAction.RETRY),
    EdgeRule(_is_azure_sdk_error, 503, QueueAction.RETRY, "a storage or Key Vault request failed; try again later"),
)


def edge_rule(exc: BaseException) -> EdgeRule | None:
    return next((rule for rule in EDGE_RULES if rule.matches(exc)), None)


def edge_status(exc: BaseException, rule: EdgeRule) -> int:
    """The error's own HTTP status when it carries one (413 for a body that is too large, 502 for
    a Key Vault refusal), else the rule's."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else rule.status
