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


class AppTokenSource(Protocol):
    """Optional extras of a Partner Center token source (``auth.tokens.TokenProvider`` has them):
    an app-only token for the calls that take one (``shared.token_choice``), and a place to
    record why Partner Center refused the App+User token (MFA, Conditional Access)."""

    def app_access_token(self, *, force_refresh: bool = False) -> str: ...

    def token_refused(self, error: Exception) -> None: ...


class GraphTokenSource(Protocol):
    """App-only Microsoft Graph tokens (the billing reconciliation export)."""

    def graph_token(self, *, force_refresh: bool = False) -> str: ...


__all__ = ["AppTokenSource", "GraphTokenSource", "TokenSource"]
