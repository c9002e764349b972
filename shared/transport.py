"""Transport: the one request loop under pcsync's HTTP clients (Partner Center and Graph).

Per attempt: the headers are built (the same request id on every attempt, the token source's
cached token), the call budget is waited on (so that a healthy run is never throttled), the
request is sent, a 2xx JSON body is decoded, and the outcome (a response or a transport
exception) is looked up in one table, :data:`RESOLUTIONS` (:mod:`shared.resolutions`), which says what to do:

* ``RETRY``: back off with jitter (5xx, resets, timeouts, cut-short bodies);
* ``RATE_LIMITED``: wait as ``Retry-After`` says (capped), then go again;
* ``REFRESH_TOKEN``: force one token refresh and go again; a second 401 fails;
* ``FAIL``: raise; the entry's :class:`ErrorType` picks the client's exception class.

A write (``replay_safe=False``) that may have run (a 5xx, a reset, a read timeout, a cut-short
body) is not sent again; one the service refused before running it (429, 401) or that never left
(connect timeout) is. The table says which outcomes those are (``Resolution.may_have_run``).

What differs between the services is a :class:`Dialect`: the name in logs, the request-id header,
the error-body parser, and the client's exception class (and fix hint) per error type. Exceptions
not in the table (e.g. ``ConsentRequired`` from a token source) pass through unchanged.
"""
from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from urllib.parse import urlsplit

import requests

from . import telemetry
from .call_stats import CallStats  # re-exported: the loop counts into it, callers import it from here
from .jsonutil import get_path, loads_json
from .logging import get_logger
# the resolution table and its types live in shared/resolutions.py; re-exported here
from .resolutions import (
    CAUGHT_EXCEPTIONS,
    RESOLUTIONS,
    TRANSIENT_EXCEPTIONS,
    UNRESOLVED,
    Action,
    ErrorType,
    MalformedBody,
    Resolution,
    TruncatedBody,
    resolve,
)

log = get_logger(__name__)


# --------------------------------------------------------------------------------------------
# Retry policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with jittered exponential backoff; Retry-After capped like msal does."""

    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    retry_after_cap: float = 60.0
    retry_after_default: float = 5.0
    max_elapsed: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform(0, min(max, base * 2**(attempt-1))), never below a small floor."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** max(attempt - 1, 0)))
        return max(0.05, (rng or random).uniform(0, ceiling))

    def throttle_wait(self, response: requests.Response, attempt: int, rng: random.Random | None = None) -> float:
        hint = parse_retry_after(response.headers.get("Retry-After"))
        if hint is None:
            return max(self.retry_after_default, self.backoff(attempt, rng))
        # a little jitter so that parallel workers do not come back in the same instant
        return min(self.retry_after_cap, hint) + (rng or random).uniform(0, 0.25)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date. None when absent or unparseable."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------------------------
# Budget hook, bodies (the counters, CallStats, are in shared.call_stats)
# --------------------------------------------------------------------------------------------


class Budget(Protocol):
    """A call limiter (``shared.call_budget``): blocks until a call may go, returns the wait."""

    def acquire(self, customer_id: str | None = None) -> float: ...


def decode_json(response: requests.Response, *, allow_empty: bool = False, exact_numbers: bool = False) -> Any:
    """A 2xx body as JSON (``exact_numbers``: non-integers as Decimal, from the text); empty is
    ``{}`` for a 204 (or when allowed), else :class:`TruncatedBody`."""
    content = response.content
    if not content or not content.strip():
        if response.status_code == 204 or allow_empty:
            return {}
        raise TruncatedBody("empty body")
    try:
        return loads_json(content, exact_numbers=exact_numbers)
    except ValueError as exc:
        raise TruncatedBody(f"body is not complete JSON ({len(content)} bytes)") from exc


def error_fields(
    response: requests.Response,
    code_paths: Sequence[tuple[str, ...]],
    message_paths: Sequence[tuple[str, ...]],
) -> tuple[str | None, str | None]:
    """(code, message) from an error body: the first of each list of JSON paths that is present.
    A body that is not JSON gives its first 300 characters as the message."""
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return None, (response.text or "").strip()[:300] or None
    if not isinstance(body, Mapping):
        return None, None
    code, message = _first(body, code_paths), _first(body, message_paths)
    return (None if code is None else str(code)), (None if message is None else str(message)[:1024])


def _first(body: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> Any:
    for path in paths:
        value = get_path(body, *path)
        if value is not None and value != "":
            return value
    return None


def _new_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # this machine sets REQUESTS_CA_BUNDLE and proxies; only settings apply
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


# --------------------------------------------------------------------------------------------
# Calls, dialects, failures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One logical call; every attempt sends the same headers and ``request_id``."""

    method: str
    url: str
    target: str  # what logs and errors show: a path, or a URL without its query (a SAS)
    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None  # sent as JSON unless None
    token: Callable[..., str] | None = None  # token(force_refresh=...); None: no Authorization
    customer_id: str | None = None  # the budget's per-customer scope
    replay_safe: bool = True  # False: a write that must not run twice
    stream: bool = False  # leave the body unread; the caller streams it
    allow_empty: bool = False  # an empty 2xx body is {} (otherwise only a 204's may be empty)
    exact_numbers: bool = False  # money: the body's non-integer numbers as Decimal, never a float
    # the decoded 2xx body's problem (None: it is what the caller expects); a problem is retried
    expect: Callable[[Any], str | None] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)  # for logs and errors, e.g. a correlation id


@dataclass(frozen=True)
class Answer:
    """What the service answered to an attempt that failed; all None when nothing came back."""

    status: int | None = None
    reason: str | None = None
    code: str | None = None  # and message: from the error body, by the dialect's parser
    message: str | None = None
    retry_after: float | None = None


NO_ANSWER = Answer()


@dataclass(frozen=True)
class Failure:
    """A call that failed for good: what the client needs to build its exception. A transport
    failure has ``NO_ANSWER`` and its exception as ``cause``."""

    call: Call
    error_type: ErrorType
    attempts: int
    answer: Answer = NO_ANSWER
    cause: BaseException | None = None


@dataclass(frozen=True)
class Dialect:
    """What one service does its own way; ``make_error(cls, text, failure)`` fills the fields of
    the client's exception classes, ``hints`` say how to fix an error type (added to the text)."""

    name: str
    request_id_header: str
    parse_error: Callable[[requests.Response], tuple[str | None, str | None]]
    errors: Mapping[ErrorType, type[Exception]]
    default_error: type[Exception]
    make_error: Callable[[type[Exception], str, Failure], Exception]
    hints: Mapping[ErrorType, str] = field(default_factory=dict)

    def error(self, failure: Failure) -> Exception:
        call, answer = failure.call, failure.answer
        if answer.status is None:
            text = f"{call.method} {call.target} failed after {failure.attempts} attempt(s): {type(failure.cause).__name__}"
            if isinstance(failure.cause, TruncatedBody):
                text += f" ({failure.cause})"  # what was wrong with the answer
        else:
            code = f" (code {answer.code})" if answer.code is not None else ""
            detail = answer.message or answer.reason or "no description"
            text = f"{call.method} {call.target} -> HTTP {answer.status}{code}: {detail}"
            if failure.attempts > 1:
                text += f" after {failure.attempts} attempt(s)"
        hint = self.hints.get(failure.error_type)
        text += (f". {hint}" if hint else "") + f" [{self.request_id_header} {call.request_id}]"
        error = self.make_error(self.errors.get(failure.error_type, self.default_error), text, failure)
        if failure.cause is not None:
            error.__cause__ = failure.cause
        return error


@dataclass(frozen=True)
class _Attempt:
    outcome: requests.Response | BaseException
    resolution: Resolution
    body: Any = None
    answer: Answer = NO_ANSWER  # when the outcome is an error response


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class Transport:
    """Session, retry policy and budget shared by every bound view of a client. Without a
    ``session`` it opens its own pool of ``pool_size`` connections; ``ca_bundle`` is the CA file
    to verify servers against (default: the system's)."""

    def __init__(
        self,
        session: Any | None = None,
        *,
        pool_size: int = 8,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        ca_bundle: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.session = session if session is not None else _new_session(pool_size)
        self.retry = retry or RetryPolicy()
        self.budget = budget
        self.timeout = timeout
        self.verify: Any = ca_bundle or True
        self.sleep = sleep
        self.rng = rng or random.Random()

    def close(self) -> None:
        self.session.close()

    def send(self, call: Call, dialect: Dialect, stats: CallStats) -> tuple[requests.Response, Any]:
        """Send until the table says success (returns the response and its decoded body, None
        when streamed) or failure (raises the dialect's exception)."""
        payload: dict[str, Any] = {}
        if call.body is not None:  # compact JSON bytes; values JSON lacks (e.g. Decimal) as text
            payload["data"] = json.dumps(call.body, separators=(",", ":"), default=str).encode("utf-8")
        started = time.monotonic()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            tried = self._traced_attempt(call, payload, dialect, stats, attempt)
            resolution = tried.resolution
            if resolution.action is Action.SUCCESS:
                return tried.outcome, tried.body  # type: ignore[return-value]
            if call.stream and isinstance(tried.outcome, requests.Response):
                tried.outcome.close()
            if resolution.action is Action.REFRESH_TOKEN and call.token is not None and not refreshed:
                refreshed = True
                stats.add(token_refreshes=1)
                log.info("%s 401; refreshing the access token once", dialect.name,
                         extra={"request_id": call.request_id, "path": call.target})
                call.token(force_refresh=True)
                continue
            if resolution.action is Action.RATE_LIMITED:
                stats.add(throttled=1)
            if not self._may_retry(call, resolution, attempt, started):
                raise dialect.error(self._failure(call, tried, attempt))
            if resolution.action is Action.RATE_LIMITED:
                delay = self.retry.throttle_wait(tried.outcome, attempt, self.rng)  # type: ignore[arg-type]
            else:
                delay = self.retry.backoff(attempt, self.rng)
            stats.add(retries=1)
            status = getattr(tried.outcome, "status_code", None) or type(tried.outcome).__name__
            log.warning("%s %s %s: %s; retry %d/%d in %.2fs", dialect.name, call.method, call.target, status,
                        attempt, self.retry.max_attempts - 1, delay,
                        extra={"request_id": call.request_id, **call.context})
            self.sleep(delay)

    def _traced_attempt(self, call: Call, payload: Mapping[str, Any], dialect: Dialect, stats: CallStats,
                        attempt: int) -> _Attempt:
        """One attempt as a CLIENT span (a child of the run's span) carrying the request ids a
        Microsoft support case asks for."""
        if not telemetry.enabled():
            return self._attempt(call, payload, dialect, stats)
        named = {"http.request.method": call.method, "url.path": call.target,
                 "server.address": urlsplit(call.url).hostname, "http.request.resend_count": attempt - 1 or None,
                 **telemetry.header_attributes("request", call.headers)}
        with telemetry.span(f"{dialect.name} {call.method}", named, client=True, customer=call.customer_id) as span:
            tried = self._attempt(call, payload, dialect, stats)
            if isinstance(tried.outcome, requests.Response):
                span.set({"http.response.status_code": tried.outcome.status_code,
                          **telemetry.header_attributes("response", tried.outcome.headers)})
            if tried.resolution.action is not Action.SUCCESS:
                span.set({"error.type": type(tried.outcome).__name__ if isinstance(tried.outcome, BaseException)
                          else str(tried.outcome.status_code)}, code=tried.answer.code)
            span.set(outcome=tried.resolution.action)
            return tried

    def _attempt(self, call: Call, payload: Mapping[str, Any], dialect: Dialect, stats: CallStats) -> _Attempt:
        headers = dict(call.headers)
        if "data" in payload:
            headers["Content-Type"] = "application/json"
        if call.token is not None:
            # the token source caches and renews before expiry; ConsentRequired propagates unchanged
            headers["Authorization"] = f"Bearer {call.token(force_refresh=False)}"
        waited = self.budget.acquire(call.customer_id) if self.budget is not None else 0.0
        stats.add(calls=1, budget_wait_s=waited)
        try:
            response = self.session.request(
                call.method, call.url, params=list(call.params) or None, headers=headers, timeout=self.timeout,
                verify=self.verify, allow_redirects=False, stream=call.stream, **payload,
            )
        except CAUGHT_EXCEPTIONS as exc:
            return _Attempt(exc, resolve(exc))
        resolution = resolve(response)
        if resolution.action is Action.SUCCESS:
            if call.stream:
                return _Attempt(response, resolution)
            try:
                body = decode_json(response, allow_empty=call.allow_empty, exact_numbers=call.exact_numbers)
                problem = call.expect(body) if call.expect is not None else None
                if problem:
                    raise MalformedBody(problem)
                return _Attempt(response, resolution, body)
            except TruncatedBody as exc:
                return _Attempt(exc, resolve(exc))
        code, message = dialect.parse_error(response)
        answer = Answer(response.status_code, response.reason, code, message,
                        parse_retry_after(response.headers.get("Retry-After")))
        return _Attempt(response, resolve(response, code=code), answer=answer)

    def _may_retry(self, call: Call, resolution: Resolution, attempt: int, started: float) -> bool:
        if resolution.action not in (Action.RETRY, Action.RATE_LIMITED):
            return False
        # a write that may have run is replayed only when the caller says that is harmless
        if resolution.may_have_run and not call.replay_safe:
            return False
        return attempt < self.retry.max_attempts and time.monotonic() - started <= self.retry.max_elapsed

    @staticmethod
    def _failure(call: Call, tried: _Attempt, attempts: int) -> Failure:
        error_type = tried.resolution.error_type or ErrorType.UNEXPECTED
        cause = tried.outcome if isinstance(tried.outcome, BaseException) else None
        return Failure(call, error_type, attempts, tried.answer, cause)


__all__ = [
    "Action", "Answer", "Budget", "Call", "CallStats", "Dialect", "ErrorType", "Failure", "MalformedBody", "NO_ANSWER",
    "RESOLUTIONS", "Resolution", "RetryPolicy", "TRANSIENT_EXCEPTIONS", "Transport", "TruncatedBody", "UNRESOLVED", "decode_json",
    "error_fields", "parse_retry_after", "resolve",
]
