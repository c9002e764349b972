"""What the HTTP clients need from ``auth/``: token sources, as protocols.

The clients depend on these and nothing else from ``auth``, so they are tested with fakes and
work with whatever hands out tokens (``auth.tokens.TokenProvider`` implements both). A source
caches its token and renews it before expiry; ``force_refresh=True`` is asked for once, after a
401, and may raise ``ConsentRequired``, which the clients let through unchanged.
"""
from __future__ import annotations

from typing import Protocol


class TokenSource(Protocol):
    """Partner Center access tokens (delegated or app-only)."""

    def access_token(self, *, force_refresh: bool = False) -> str: ...


class GraphTokenSource(Protocol):
    """App-only Microsoft Graph tokens (the billing reconciliation export)."""

    def graph_token(self, *, force_refresh: bool = False) -> str: ...


__all__ = ["GraphTokenSource", "TokenSource"]
