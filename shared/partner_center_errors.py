"""Partner Center errors, grouped by what a caller can do; the ApiFault fields are attributes.

Which class a failed call raises is decided by the transport's resolution table
(:mod:`shared.transport`) and the client's class table (:mod:`shared.partner_center`).
"""
from __future__ import annotations

from .client_base import ServiceCallError
from .errors import ConditionalAccessBlocked, MfaRequired, PermissionMissing


class PartnerCenterError(ServiceCallError):
    """A Partner Center call failed for good. ``status`` is None for transport failures;
    ``description`` is the ApiFault's, ``method`` and ``path`` the call's."""

    description: str | None = None
    correlation_id: str | None = None
    method: str | None = None
    path: str | None = None


class BadRequestError(PartnerCenterError):
    """400: the request is wrong (or an etag is stale); not retried."""


class UnauthorizedError(PartnerCenterError):
    """401 even after a forced token refresh (e.g. MFA required, wrong audience)."""


class ForbiddenError(PartnerCenterError, PermissionMissing):
    """403: the role or token type (app-only vs App+User) does not allow the operation."""


class MfaRequiredError(UnauthorizedError, MfaRequired):
    """401 with 900421 (or the 2019 "Unauthorized - MFA required" form) after a forced refresh:
    Partner Center wants ``mfa`` in the App+User token's ``amr``."""


class ConditionalAccessBlockedError(ForbiddenError, ConditionalAccessBlocked):
    """403 with 900309: a Conditional Access policy blocks the integration user."""


class NotFoundError(PartnerCenterError):
    """404: the resource does not exist (any more)."""


class ConflictError(PartnerCenterError):
    """409: another operation is pending on the resource."""


class ThrottledError(PartnerCenterError):
    """429 persisted through every retry; ``retry_after`` is the server's last hint in seconds."""

    retry_after: float | None = None


class ServiceError(PartnerCenterError):
    """5xx (or an unexpected status) persisted through every retry."""


class TransportError(PartnerCenterError):
    """Connection resets, timeouts or truncated bodies persisted through every retry."""


class PaginationLoopError(PartnerCenterError):
    """The service handed back a next link or continuation token it had already given."""


__all__ = [
    "BadRequestError", "ConditionalAccessBlockedError", "ConflictError", "ForbiddenError", "MfaRequiredError", "NotFoundError", "PaginationLoopError",
    "PartnerCenterError", "ServiceError", "ThrottledError", "TransportError", "UnauthorizedError",
]
