"""Typed errors, grouped by what the caller can do about them."""
from __future__ import annotations


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


class PermissionMissing(PcsyncError):
    """Partner Center or Graph refused an operation for lack of a role or permission."""
