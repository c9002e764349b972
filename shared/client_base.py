"""What the Partner Center and the Graph billing clients share (and their errors' base).

Both hold a token source and one :class:`~shared.transport.Transport` (session and connection
pool, retry policy, call budget), and both hand out per-run views that share those and count
their calls in their own :class:`~shared.transport.CallStats`. The transport options are
azure-core style keywords passed through to ``Transport`` (``session``, ``pool_size``, ``retry``,
``budget``, ``timeout``, ``ca_bundle``, ``sleep``, ``rng``), so their names and defaults are
written once, there, and not again in each client's signature.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from .errors import PcsyncError
from .transport import CallStats, Transport

View = TypeVar("View", bound="HttpClient")


class HttpClient:
    """Base of the service clients; a subclass says its default pool size."""

    default_pool_size: ClassVar[int] = 8

    def __init__(self, base_url: str, token_source: Any, *, stats: CallStats | None = None, **transport_options: Any):
        transport_options.setdefault("pool_size", self.default_pool_size)
        self._base_url = base_url.rstrip("/")
        self._token_source = token_source
        self._transport = Transport(**transport_options)
        self.stats = stats or CallStats()

    def _view(self: View, stats: CallStats | None) -> View:
        """A shallow copy: the same transport and token source, its own counters."""
        view = copy.copy(self)
        view.stats = stats or CallStats()
        return view

    def close(self) -> None:
        self._transport.close()

    def _on_origin(self, url: str) -> bool:
        """Whether ``url`` is on the configured origin, the only one our bearer token goes to."""
        parts, root = urlsplit(url), urlsplit(self._base_url)
        return (parts.scheme, parts.netloc.lower()) == (root.scheme, root.netloc.lower())


class ServiceCallError(PcsyncError):
    """Base of each client's errors: a call that failed for good. Its fields are the annotated
    class attributes of the class and its bases (None until given), and the constructor takes
    any of them by keyword; ``status`` is None for a transport failure, ``code`` is the
    service's error code, ``request_id`` what a Microsoft support case asks for."""

    status: int | None = None
    code: str | None = None
    request_id: str | None = None

    def __init__(self, message: str, **fields: Any):
        known = {name for klass in type(self).__mro__ for name in vars(klass).get("__annotations__", {})}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown[0]!r}")
        vars(self).update(fields)
        super().__init__(message)


__all__ = ["HttpClient", "ServiceCallError"]
