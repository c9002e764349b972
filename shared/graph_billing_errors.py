"""Graph billing export errors, grouped by what the caller can do (``retryable``: may trying
again later help?). Which class a failed request raises is decided by the transport's resolution
table and the client's class table per error type (:mod:`shared.graph_billing`)."""
from __future__ import annotations

from .client_base import ServiceCallError
from .errors import PermissionMissing

NO_DATA_CODE = "5000"


class GraphBillingError(ServiceCallError):
    """A Graph billing export step failed. ``retryable`` says whether trying later may help;
    ``url`` is the one called (never with its query: a blob's query is its SAS)."""

    retryable = False
    url: str | None = None


class ExportFailed(GraphBillingError):
    """The export operation ended ``failed``; ``no_data`` when Graph has no reconciliation data
    for the invoice (code 5000: legacy invoices always, new commerce ones until data is ready)."""

    @property
    def no_data(self) -> bool:
        return self.code == NO_DATA_CODE

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        # Graph's guidance for a failed operation is "restart with a new POST"; 5000 is handled
        # by the caller (fallback or a later run), everything else may succeed on a new export.
        return not self.no_data


class ExportTimedOut(GraphBillingError):
    """The operation was still running when the polling budget ran out."""

    retryable = True


class ExportExpired(GraphBillingError):
    """The operation or manifest link is gone (404/410): start a new export."""

    retryable = True


class GraphServiceError(GraphBillingError):
    """429/5xx/transport failures that persisted through every retry."""

    retryable = True


class GraphPermissionMissing(GraphBillingError, PermissionMissing):
    """403: the app lacks the application permission PartnerBilling.Read.All (admin consent)."""


class BlobFormatError(GraphBillingError):
    """A blob is not gzip JSON Lines of objects (or a line is absurdly long)."""


__all__ = [
    "BlobFormatError", "ExportExpired", "ExportFailed", "ExportTimedOut", "GraphBillingError",
    "GraphPermissionMissing", "GraphServiceError", "NO_DATA_CODE",
]
