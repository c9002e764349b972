"""Which token a Partner Center call sends: App+User only where Partner Center requires it.

Since 2026 every App+User call needs MFA (401 / 900421), and the App+User surface keeps
shrinking (partner-center-2026.md §1.2). So a call that Partner Center accepts app-only is sent
app-only: an MFA or Conditional Access problem then fails only the few App+User calls (the sync
degrades) instead of every call (the sync stops). README "Tokens per call" lists the same table.

A token source without ``app_access_token`` (e.g. a test fake) is used for every call. If
Partner Center refuses the app-only token (401 after a forced refresh: e.g. the app is not
registered in Partner Center's App management for app-only access), the client falls back to the
App+User token for the rest of the process and logs a warning once.
"""
from __future__ import annotations

import re
import threading
from typing import Callable

from .logging import get_logger

log = get_logger(__name__)

# (method or "*", path pattern under /v1, lower case): documented "App+User only"
APP_USER_ONLY: tuple[tuple[str, str], ...] = (
    ("GET", r"/profiles/(organization|billing|support|mpn)"),
    ("*", r"/agreements"),  # MCA template metadata
    ("*", r"/customers/[^/]+/agreements"),  # MCA confirmation read (and create)
    ("GET", r"/invoices/(?!unbilled$|estimates$)[^/]+"),  # invoice by id
    ("GET", r"/invoices/[^/]+/documents/statement"),  # invoice statement PDF
    ("GET", r"/invoices/summaries"),
    ("GET", r"/customers/relationshiprequests"),
    ("GET", r"/applicationmfaadoptionstatus"),
    ("GET", r"/nonmfacompliantpartnerprincipals"),
)
_COMPILED = tuple((method, re.compile(pattern + r"$")) for method, pattern in APP_USER_ONLY)


def _normal_path(path: str) -> str:
    path = path.split("?", 1)[0].strip().lower()
    if "://" in path:
        path = "/" + path.split("://", 1)[1].split("/", 1)[-1]
    if path.startswith("/v1/") or path == "/v1":
        path = path[3:]
    return "/" + path.strip("/")


def needs_app_user(method: str, path: str) -> bool:
    """True when Partner Center serves the call to App+User tokens only."""
    normal = _normal_path(path)
    return any(wanted in ("*", method.upper()) and pattern.match(normal) for wanted, pattern in _COMPILED)


class TokenChoice:
    """Per client: the token function for a call (``token(force_refresh=...)``)."""

    def __init__(self, source):
        self._source = source
        self._app_only = getattr(source, "app_access_token", None)
        self._app_only_refused = False
        self._lock = threading.Lock()

    def for_call(self, method: str, path: str) -> Callable[..., str]:
        if self._app_only is None or needs_app_user(method, path):
            return self._source.access_token
        return self._app_only_first

    def _app_only_first(self, *, force_refresh: bool = False) -> str:
        if self._app_only_refused:
            return self._source.access_token(force_refresh=force_refresh)
        if force_refresh:
            # asked after a 401 to the app-only token: send the App+User token from now on
            with self._lock:
                if not self._app_only_refused:
                    self._app_only_refused = True
                    log.warning("Partner Center refused the app-only token; using the App+User token instead. "
                                "Register the app in Partner Center (Account settings > App management) for "
                                "app-only access so MFA problems stop only the App+User calls.")
            return self._source.access_token(force_refresh=False)
        return self._app_only(force_refresh=False)

    @property
    def app_only_refused(self) -> bool:
        return self._app_only_refused


__all__ = ["APP_USER_ONLY", "TokenChoice", "needs_app_user"]
