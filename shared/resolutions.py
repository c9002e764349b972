"""The transport's resolution table: what to do with each outcome of an attempt (a status, a
status and service error code, a status class, or a transport exception), and what kind of
error it is when it fails. :mod:`shared.transport` runs the loop; this is the one table it reads.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import requests

from .token_health import CONDITIONAL_ACCESS_CODE, MFA_REQUIRED_CODE


class Action(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: back off with jitter
    RATE_LIMITED = "rate_limited"  # 429: honour Retry-After
    REFRESH_TOKEN = "refresh_token"  # 401: refresh once, then fail
    FAIL = "fail"


class ErrorType(enum.Enum):
    """What went wrong, in terms a caller can act on; each client maps these to its classes."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    GONE = "gone"
    CONFLICT = "conflict"
    THROTTLED = "throttled"
    MFA_REQUIRED = "mfa_required"  # 401 / 900421: an App+User token without mfa in amr
    CONDITIONAL_ACCESS_BLOCKED = "conditional_access_blocked"  # 403 / 900309
    SERVICE = "service"  # the service failed (5xx, 408)
    TRANSPORT = "transport"  # resets, timeouts, cut-short bodies
    UNEXPECTED = "unexpected"  # any status the table does not know


@dataclass(frozen=True)
class Resolution:
    """What to do with one outcome. ``may_have_run`` is False when the service certainly did not
    carry the request out (refused it, or it never left), so that even a write may go again."""

    action: Action
    error_type: ErrorType | None = None
    may_have_run: bool = True


class TruncatedBody(Exception):
    """A 2xx response whose body is not complete JSON."""


class MalformedBody(TruncatedBody):
    """A 2xx response whose JSON is not what the call expects (``Call.expect`` says why): e.g. an
    error envelope, or a collection page without ``items``. Retried like a cut-short body, never
    read as "nothing there"."""


_TRANSIENT = Resolution(Action.RETRY, ErrorType.SERVICE)
_CUT_OFF = Resolution(Action.RETRY, ErrorType.TRANSPORT)

# Keys: ``(status, service error code)``, a status, a status class (``"5xx"``: every status of the
# class not listed on its own), or an exception class (looked up along the exception's MRO, so the
# most specific entry wins). Only exception classes listed here are caught by the loop.
ResolutionKey = Union[int, str, tuple[int, str], type[BaseException]]
RESOLUTIONS: Mapping[ResolutionKey, Resolution] = {
    "2xx": Resolution(Action.SUCCESS),
    400: Resolution(Action.FAIL, ErrorType.BAD_REQUEST),
    401: Resolution(Action.REFRESH_TOKEN, ErrorType.UNAUTHORIZED, may_have_run=False),
    # MFA: a forced refresh may bring a token of a newer (MFA'd) consent; a second 900421 fails as its own type.
    # Partner Center's dialect reads the 2019 form (empty body, "Unauthorized - MFA required") as 900421 too.
    (401, MFA_REQUIRED_CODE): Resolution(Action.REFRESH_TOKEN, ErrorType.MFA_REQUIRED, may_have_run=False),
    (403, CONDITIONAL_ACCESS_CODE): Resolution(Action.FAIL, ErrorType.CONDITIONAL_ACCESS_BLOCKED, may_have_run=False),
    403: Resolution(Action.FAIL, ErrorType.FORBIDDEN),
    404: Resolution(Action.FAIL, ErrorType.NOT_FOUND),
    408: _TRANSIENT,
    409: Resolution(Action.FAIL, ErrorType.CONFLICT),
    410: Resolution(Action.FAIL, ErrorType.GONE),
    429: Resolution(Action.RATE_LIMITED, ErrorType.THROTTLED, may_have_run=False),
    "5xx": _TRANSIENT,
    501: Resolution(Action.FAIL, ErrorType.SERVICE),  # not implemented: asking again cannot help
    505: Resolution(Action.FAIL, ErrorType.SERVICE),  # HTTP version not supported: likewise
    requests.exceptions.ConnectTimeout: Resolution(Action.RETRY, ErrorType.TRANSPORT, may_have_run=False),
    requests.ConnectionError: _CUT_OFF,  # resets, refused connections
    requests.Timeout: _CUT_OFF,  # read timeouts: the request may have run
    requests.exceptions.ChunkedEncodingError: _CUT_OFF,  # body cut short
    requests.exceptions.ContentDecodingError: _CUT_OFF,
    TruncatedBody: _CUT_OFF,
    MalformedBody: _CUT_OFF,
}
UNRESOLVED = Resolution(Action.FAIL, ErrorType.UNEXPECTED)

# Exceptions worth another attempt; also what a client streaming a body catches mid-stream.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = tuple(
    key for key, resolution in RESOLUTIONS.items() if isinstance(key, type) and resolution.action is Action.RETRY
)
# the only exceptions the loop catches
CAUGHT_EXCEPTIONS = tuple(key for key in RESOLUTIONS if isinstance(key, type))


def resolve(
    outcome: requests.Response | BaseException,
    *,
    code: str | None = None,
    table: Mapping[Any, Resolution] = RESOLUTIONS,
) -> Resolution:
    """The table's entry for a response (by status and error code, status, status class) or an
    exception (by class, most specific first); :data:`UNRESOLVED` when none applies."""
    if isinstance(outcome, BaseException):
        keys: Sequence[Any] = type(outcome).__mro__
    else:
        status = outcome.status_code
        keys = ((status, code), status, f"{status // 100}xx")
    for key in keys:
        if key in table:
            return table[key]
    return UNRESOLVED


__all__ = [
    "Action", "CAUGHT_EXCEPTIONS", "ErrorType", "MalformedBody", "RESOLUTIONS", "Resolution", "TRANSIENT_EXCEPTIONS", "TruncatedBody",
    "UNRESOLVED", "resolve",
]
