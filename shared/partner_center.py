"""PartnerCenterClient: the one way pcsync talks to the Partner Center REST API.

What lives here, and nowhere else:

* headers: ``Authorization`` from an injected token source, ``MS-RequestId`` per logical call
  (reused by its retries), ``MS-CorrelationId`` per sync run, ``Accept``, ``X-Locale``;
* paging: paginator objects for the three collection styles (none, size/offset, seek with
  ``MS-ContinuationToken``), each with a loop guard; items are yielded page by page and a
  whole collection is never held;
* the single retry layer: 429 honours ``Retry-After`` (capped), 5xx / timeouts / connection
  resets / truncated bodies back off with jitter, 401 refreshes the token once; everything else
  becomes a typed :class:`PartnerCenterError` carrying the ApiFault fields;
* the call budget: a sliding-window limiter per partner tenant and per partner+customer that
  waits *before* sending, so a healthy run is never throttled;
* writes (``send_json``: PATCH/POST/PUT) go through the same loop, but a write that may have run
  (5xx, reset, timeout, cut-short body) is replayed only when the caller says that is safe;
  429, 401 and connect timeouts are always retried, always with the same ``MS-RequestId``.

The client depends only on a token source protocol (``access_token(*, force_refresh=False)``),
so it is tested with fakes and works with whatever ``auth/`` provides.
"""
from __future__ import annotations

import collections
import email.utils
import enum
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol
from urllib.parse import urlsplit

import requests

from .errors import PcsyncError, PermissionMissing
from .logging import get_logger

log = get_logger(__name__)

API_VERSION_PREFIX = "/v1"
DEFAULT_CALLS_PER_MINUTE = 450  # documented limit is 500/minute per tenant identifier; keep a margin
CONTINUATION_HEADER = "MS-ContinuationToken"


# --------------------------------------------------------------------------------------------
# Token source protocol
# --------------------------------------------------------------------------------------------


class TokenSource(Protocol):
    """Anything that hands out Partner Center access tokens (``auth.tokens.TokenProvider``)."""

    def access_token(self, *, force_refresh: bool = False) -> str: ...


# --------------------------------------------------------------------------------------------
# Errors (grouped by what a caller can do; ApiFault fields kept as attributes)
# --------------------------------------------------------------------------------------------


class PartnerCenterError(PcsyncError):
    """A Partner Center call failed for good. ``status`` is None for transport failures."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        description: str | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ):
        self.status = status
        self.code = code
        self.description = description
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.method = method
        self.path = path
        super().__init__(message)


class BadRequestError(PartnerCenterError):
    """400: the request is wrong (or an etag is stale); not retried."""


class UnauthorizedError(PartnerCenterError):
    """401 even after a forced token refresh (e.g. MFA required, wrong audience)."""


class ForbiddenError(PartnerCenterError, PermissionMissing):
    """403: the role or token type (app-only vs App+User) does not allow the operation."""


class NotFoundError(PartnerCenterError):
    """404: the resource does not exist (any more)."""


class ConflictError(PartnerCenterError):
    """409: another operation is pending on the resource."""


class ThrottledError(PartnerCenterError):
    """429 persisted through every retry; ``retry_after`` is the server's last hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServiceError(PartnerCenterError):
    """5xx (or an unexpected status) persisted through every retry."""


class TransportError(PartnerCenterError):
    """Connection resets, timeouts or truncated bodies persisted through every retry."""


class PaginationLoopError(PartnerCenterError):
    """The service handed back a next link or continuation token it had already given."""


_STATUS_ERRORS: dict[int, type[PartnerCenterError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    429: ThrottledError,
}


# --------------------------------------------------------------------------------------------
# Error resolution: one table from outcome to action
# --------------------------------------------------------------------------------------------


class Action(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: back off with jitter
    RATE_LIMITED = "rate_limited"  # 429: honour Retry-After
    REFRESH_TOKEN = "refresh_token"  # 401: refresh once, then fail
    FAIL = "fail"


RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({400, 403, 404, 405, 406, 409, 412, 417})
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,  # includes resets and connect timeouts
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # body cut short
    requests.exceptions.ContentDecodingError,
)


class TruncatedBody(Exception):
    """A 2xx response whose body is not complete JSON."""


def resolve(outcome: requests.Response | BaseException) -> Action:
    """Decide what to do with a response or a transport exception."""
    if isinstance(outcome, BaseException):
        return Action.RETRY if isinstance(outcome, TRANSIENT_EXCEPTIONS + (TruncatedBody,)) else Action.FAIL
    status = outcome.status_code
    if 200 <= status < 300:
        return Action.SUCCESS
    if status == 429:
        return Action.RATE_LIMITED
    if status == 401:
        return Action.REFRESH_TOKEN
    if status in RETRYABLE_STATUSES or (status >= 500 and status not in (501, 505)):
        return Action.RETRY
    return Action.FAIL


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
# Call budget
# --------------------------------------------------------------------------------------------


class CallBudget:
    """Sliding-window call limiter for one partner tenant: at most ``partner_limit`` calls in any
    ``window`` seconds for the tenant, and ``customer_limit`` for each partner+customer pair.

    ``acquire`` waits (outside the lock) until both windows have room, then records the call.
    One object per partner tenant, shared by every stream and thread syncing that tenant.
    """

    def __init__(
        self,
        *,
        partner_limit: int = DEFAULT_CALLS_PER_MINUTE,
        customer_limit: int | None = None,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if partner_limit < 1 or (customer_limit is not None and customer_limit < 1):
            raise ValueError("call budget limits must be >= 1")
        self.partner_limit = partner_limit
        self.customer_limit = customer_limit or partner_limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._partner: collections.deque[float] = collections.deque()
        self._customers: dict[str, collections.deque[float]] = {}
        self.waited_seconds = 0.0

    def _prune(self, calls: collections.deque[float], now: float) -> None:
        horizon = now - self.window
        while calls and calls[0] <= horizon:
            calls.popleft()

    def _wait_for(self, calls: collections.deque[float], limit: int, now: float) -> float:
        self._prune(calls, now)
        if len(calls) < limit:
            return 0.0
        return calls[len(calls) - limit] + self.window - now

    def acquire(self, customer_id: str | None = None) -> float:
        """Block until a call may be sent; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_for(self._partner, self.partner_limit, now)
                customer_calls = None
                if customer_id is not None:
                    customer_calls = self._customers.get(customer_id)
                    if customer_calls is None:
                        customer_calls = self._customers[customer_id] = collections.deque()
                    wait = max(wait, self._wait_for(customer_calls, self.customer_limit, now))
                if wait <= 0:
                    self._partner.append(now)
                    if customer_calls is not None:
                        customer_calls.append(now)
                    self._forget_idle_customers(now)
                    self.waited_seconds += waited
                    return waited
            self._sleep(wait)
            waited += wait

    def _forget_idle_customers(self, now: float) -> None:
        if len(self._customers) > 256:
            for key in [k for k, calls in self._customers.items() if not calls or calls[-1] <= now - self.window]:
                del self._customers[key]

    def in_window(self, customer_id: str | None = None) -> int:
        with self._lock:
            calls = self._partner if customer_id is None else self._customers.get(customer_id, collections.deque())
            self._prune(calls, self._clock())
            return len(calls)


# --------------------------------------------------------------------------------------------
# Requests and paginators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRequest:
    """One GET: a path relative to the API root (with or without ``/v1``) or an absolute URL."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> "PageRequest":
        return cls(
            path,
            tuple((k, str(v)) for k, v in (params or {}).items() if v is not None),
            tuple((k, str(v)) for k, v in (headers or {}).items()),
        )


class Paginator:
    """Holds the current request and decides the next one from each page (Singer-style).

    Subclasses implement ``get_next(page)``; ``advance`` applies the loop guard (a next request
    seen before raises :class:`PaginationLoopError`) and stops when there is no next request.
    """

    def __init__(self, first: PageRequest):
        self.current: PageRequest = first
        self.finished = False
        self.count = 0
        self._seen: set[tuple[Any, ...]] = {self._fingerprint(first)}

    @staticmethod
    def _fingerprint(request: PageRequest) -> tuple[Any, ...]:
        return (request.path, request.params, tuple(sorted((k.lower(), v) for k, v in request.headers)))

    def get_next(self, page: Mapping[str, Any]) -> PageRequest | None:
        raise NotImplementedError

    def advance(self, page: Mapping[str, Any]) -> None:
        self.count += 1
        nxt = self.get_next(page)
        if nxt is None:
            self.finished = True
            return
        fingerprint = self._fingerprint(nxt)
        if fingerprint in self._seen:
            raise PaginationLoopError(
                f"pagination loop detected after page {self.count}: {nxt.path} was already requested"
                " with the same continuation",
                path=nxt.path,
            )
        self._seen.add(fingerprint)
        self.current = nxt


class SinglePagePaginator(Paginator):
    """Collections returned whole (e.g. a customer's subscriptions)."""

    def get_next(self, page: Mapping[str, Any]) -> PageRequest | None:
        return None


class NextLinkPaginator(Paginator):
    """Follows ``links.next`` verbatim (size/offset and seek collections alike), adding every
    ``links.next.headers[]`` entry (e.g. ``MS-ContinuationToken``) to the next request. A seek
    page whose next link lacks the token header gets the top-level ``continuationToken``."""

    def get_next(self, page: Mapping[str, Any]) -> PageRequest | None:
        nxt = get_path(page, "links", "next")
        if not isinstance(nxt, Mapping):
            return None
        uri = get_path(nxt, "uri")
        if not isinstance(uri, str) or not uri.strip():
            return None
        headers: list[tuple[str, str]] = []
        for entry in get_path(nxt, "headers") or []:
            if isinstance(entry, Mapping):
                key, value = get_path(entry, "key"), get_path(entry, "value")
                if key and value is not None:
                    headers.append((str(key), str(value)))
        token = get_path(page, "continuationToken")
        if token and not any(k.lower() == CONTINUATION_HEADER.lower() for k, _ in headers):
            headers.append((CONTINUATION_HEADER, str(token)))
        return PageRequest(uri.strip(), (), tuple(headers))


class OffsetPaginator(NextLinkPaginator):
    """size/offset collections: the next link carries the new offset; the first request sets it."""


class SeekPaginator(NextLinkPaginator):
    """Continuation-token collections (customers, line items)."""


# --------------------------------------------------------------------------------------------
# Defensive JSON helpers
# --------------------------------------------------------------------------------------------


def get_path(obj: Any, *keys: str) -> Any:
    """Nested lookup tolerant of key case (``companyProfile`` / ``CompanyProfile``)."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        if key in obj:
            obj = obj[key]
            continue
        lowered = key.lower()
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() == lowered:
                obj = v
                break
        else:
            return None
    return obj


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def as_enum(value: Any) -> str | None:
    """Enum values as the service spells them today (lower snake case); unknown values pass through."""
    if value is None:
        return None
    return str(value).strip().lower() or None


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


WRITE_METHODS = frozenset({"PATCH", "POST", "PUT"})


@dataclass(frozen=True)
class WriteResponse:
    """A successful write: ``status`` 200/201/202/204, the decoded body (``{}`` when empty),
    the ``Location`` header (202 answers point at the resource to poll) and the MS-RequestId."""

    status: int
    body: dict[str, Any]
    location: str | None
    request_id: str


@dataclass
class CallStats:
    """Counters for one sync run (or any scope that binds its own)."""

    calls: int = 0
    throttled: int = 0
    retries: int = 0
    token_refreshes: int = 0
    budget_wait_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


class _Shared:
    """What every bound view of a client shares: session, token source, budget, policy."""

    def __init__(self, base_url, token_source, session, budget, retry, timeout, sleep, rng, verify):
        self.base_url = base_url
        self.token_source = token_source
        self.session = session
        self.budget = budget
        self.retry = retry
        self.timeout = timeout
        self.sleep = sleep
        self.rng = rng
        self.verify = verify


class PartnerCenterClient:
    """Partner Center REST client for one partner tenant.

    Immutable: ``bind(correlation_id=..., stats=...)`` returns a view for one sync run that shares
    the session (connection pool), token source and call budget.
    """

    def __init__(
        self,
        base_url: str,
        token_source: TokenSource,
        *,
        budget: CallBudget | None = None,
        ca_bundle: str | None = None,
        session: Any | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        pool_size: int = 16,
        correlation_id: str | None = None,
        stats: CallStats | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        root = base_url.rstrip("/")
        if root.endswith(API_VERSION_PREFIX):
            root = root[: -len(API_VERSION_PREFIX)]
        if session is None:
            session = requests.Session()
            session.trust_env = False  # this machine sets REQUESTS_CA_BUNDLE and proxies
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._shared = _Shared(
            root,
            token_source,
            session,
            budget or CallBudget(),
            retry or RetryPolicy(),
            timeout,
            sleep,
            rng or random.Random(),
            ca_bundle or True,
        )
        self.correlation_id = correlation_id or str(uuid.uuid4())
        self.stats = stats or CallStats()

    @classmethod
    def from_settings(cls, settings: Any, token_source: TokenSource, **kwargs: Any) -> "PartnerCenterClient":
        return cls(settings.partner_center_url, token_source, ca_bundle=settings.ca_bundle, **kwargs)

    def bind(self, *, correlation_id: str | None = None, stats: CallStats | None = None) -> "PartnerCenterClient":
        view = object.__new__(PartnerCenterClient)
        view._shared = self._shared
        view.correlation_id = correlation_id or self.correlation_id
        view.stats = stats or CallStats()
        return view

    @property
    def budget(self) -> CallBudget:
        return self._shared.budget

    @property
    def api_root(self) -> str:
        return self._shared.base_url + API_VERSION_PREFIX

    def close(self) -> None:
        self._shared.session.close()

    # -- URLs --------------------------------------------------------------------------------

    def url_for(self, path: str) -> str:
        """Absolute URL for a path relative to the API root, with or without ``/v1``.

        Absolute URLs are accepted only on the configured origin, so a next link can never
        send our bearer token elsewhere.
        """
        path = path.strip()
        if "://" in path:
            parts, root = urlsplit(path), urlsplit(self._shared.base_url)
            if (parts.scheme, parts.netloc.lower()) != (root.scheme, root.netloc.lower()):
                raise PartnerCenterError(f"refusing to follow a link to another origin: {parts.scheme}://{parts.netloc}")
            return path
        if not path.startswith("/"):
            path = "/" + path
        if not (path == API_VERSION_PREFIX or path.startswith(API_VERSION_PREFIX + "/") or path.startswith(API_VERSION_PREFIX + "?")):
            path = API_VERSION_PREFIX + path
        return self._shared.base_url + path

    # -- tokens ------------------------------------------------------------------------------

    def _token(self, *, force_refresh: bool = False) -> str:
        # the token source caches and renews before expiry; ConsentRequired propagates unchanged
        return self._shared.token_source.access_token(force_refresh=force_refresh)

    # -- the one request loop ----------------------------------------------------------------

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        """GET one resource or page and return its JSON object."""
        return self.request_json(PageRequest.of(path, params, headers), customer_id=customer_id)

    def request_json(self, request: PageRequest, *, customer_id: str | None = None) -> dict[str, Any]:
        _, body = self._exchange("GET", request, customer_id=customer_id, replay_safe=True)
        return body if isinstance(body, dict) else {"items": body} if isinstance(body, list) else {}

    def send_json(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        customer_id: str | None = None,
        replay_safe: bool = False,
        request_id: str | None = None,
    ) -> "WriteResponse":
        """PATCH/POST/PUT a JSON body; 2xx answers come back as a :class:`WriteResponse`
        (status, decoded body or ``{}``, ``Location``, the ``MS-RequestId`` sent).

        Writes go through the same retry loop as reads, with one difference: a write may have
        been applied when the answer is a 5xx, a reset, a timeout or a cut-short body, so those
        are retried only when the caller says a replay is harmless (``replay_safe``: e.g. a PATCH
        guarded by ``If-Match``, or a create the service refuses as a duplicate). 429 and 401
        are always retried (the request was refused before it ran), and so are connect timeouts
        (it never left). Every retry reuses the ``MS-RequestId``, which Partner Center uses for
        idempotency; pass ``request_id`` to reuse one across invocations too.
        """
        method = method.upper()
        if method not in WRITE_METHODS:
            raise ValueError(f"send_json is for {sorted(WRITE_METHODS)}; use get_json for reads")
        request = PageRequest.of(path, None, headers)
        request_id = request_id or str(uuid.uuid4())
        response, decoded = self._exchange(method, request, customer_id=customer_id, replay_safe=replay_safe,
                                           body=body, request_id=request_id)
        return WriteResponse(
            status=response.status_code,
            body=decoded if isinstance(decoded, dict) else {},
            location=response.headers.get("Location"),
            request_id=request_id,
        )

    def _exchange(
        self,
        method: str,
        request: PageRequest,
        *,
        customer_id: str | None,
        replay_safe: bool,
        body: Any = None,
        request_id: str | None = None,
    ) -> tuple[requests.Response, Any]:
        """The one request loop: budget, headers, retries, token refresh, typed errors."""
        shared = self._shared
        url = self.url_for(request.path)
        request_id = request_id or str(uuid.uuid4())
        policy = shared.retry
        started = time.monotonic()
        refreshed = False
        attempt = 0
        is_write = method != "GET"
        payload = None if body is None else json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
        while True:
            attempt += 1
            headers = {
                "Accept": "application/json",
                "X-Locale": "en-US",
                "MS-RequestId": request_id,
                "MS-CorrelationId": self.correlation_id,
                **dict(request.headers),
            }
            if payload is not None:
                headers["Content-Type"] = "application/json"
            headers["Authorization"] = f"Bearer {self._token(force_refresh=False)}"
            waited = shared.budget.acquire(customer_id)
            self.stats.add(calls=1, budget_wait_s=waited)
            outcome: requests.Response | BaseException
            decoded: Any = None
            try:
                kwargs: dict[str, Any] = {}
                if payload is not None:
                    kwargs["data"] = payload
                outcome = shared.session.request(
                    method, url, params=list(request.params) or None, headers=headers,
                    timeout=shared.timeout, verify=shared.verify, allow_redirects=False, **kwargs,
                )
                if 200 <= outcome.status_code < 300:
                    decoded = _decode_json(outcome, allow_empty=is_write)
            except (TruncatedBody, *TRANSIENT_EXCEPTIONS) as exc:
                outcome = exc
            action = resolve(outcome)
            if action is Action.SUCCESS:
                return outcome, decoded  # type: ignore[return-value]
            out_of_time = time.monotonic() - started > policy.max_elapsed
            status = outcome.status_code if isinstance(outcome, requests.Response) else None
            if action is Action.REFRESH_TOKEN and not refreshed:
                refreshed = True
                self.stats.add(token_refreshes=1)
                log.info("partner center 401; refreshing the access token once",
                         extra={"request_id": request_id, "path": request.path})
                self._token(force_refresh=True)
                continue
            if action is Action.RATE_LIMITED:
                self.stats.add(throttled=1)
            may_replay = not is_write or replay_safe or action is Action.RATE_LIMITED or _never_sent(outcome)
            if (action in (Action.RETRY, Action.RATE_LIMITED) and may_replay and attempt < policy.max_attempts
                    and not out_of_time):
                if action is Action.RATE_LIMITED:
                    delay = policy.throttle_wait(outcome, attempt, shared.rng)  # type: ignore[arg-type]
                else:
                    delay = policy.backoff(attempt, shared.rng)
                self.stats.add(retries=1)
                log.warning(
                    "partner center %s %s: %s; retry %d/%d in %.2fs",
                    method, request.path, status or type(outcome).__name__, attempt, policy.max_attempts - 1, delay,
                    extra={"request_id": request_id, "correlation_id": self.correlation_id},
                )
                shared.sleep(delay)
                continue
            raise self._error(outcome, request_id=request_id, path=request.path, attempts=attempt, method=method)

    def _error(self, outcome: requests.Response | BaseException, *, request_id: str, path: str, attempts: int,
               method: str = "GET") -> PartnerCenterError:
        common = {"request_id": request_id, "correlation_id": self.correlation_id, "method": method, "path": path}
        if isinstance(outcome, BaseException):  # only transient kinds are caught in the loop
            error = TransportError(
                f"{method} {path} failed after {attempts} attempt(s): {type(outcome).__name__}", **common
            )
            error.__cause__ = outcome
            return error
        status = outcome.status_code
        code, description = parse_api_fault(outcome)
        cls = _STATUS_ERRORS.get(status, ServiceError)
        detail = f" (code {code})" if code is not None else ""
        text = f"{method} {path} -> HTTP {status}{detail}: {description or outcome.reason or 'no description'}"
        if attempts > 1:
            text += f" after {attempts} attempt(s)"
        text += f" [MS-RequestId {request_id}]"
        if cls is ThrottledError:
            return ThrottledError(text, retry_after=parse_retry_after(outcome.headers.get("Retry-After")),
                                  status=status, code=code, description=description, **common)
        return cls(text, status=status, code=code, description=description, **common)

    # -- paging ------------------------------------------------------------------------------

    def iter_pages(self, paginator: Paginator, *, customer_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Yield each page of a collection; only one page is held at a time."""
        while not paginator.finished:
            page = self.request_json(paginator.current, customer_id=customer_id)
            yield page
            paginator.advance(page)

    def iter_items(self, paginator: Paginator, *, customer_id: str | None = None) -> Iterator[dict[str, Any]]:
        for page in self.iter_pages(paginator, customer_id=customer_id):
            items = get_path(page, "items")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, Mapping):
                    yield dict(item)


def _never_sent(outcome: requests.Response | BaseException) -> bool:
    """True when the request certainly never reached the service (safe to send again)."""
    return isinstance(outcome, requests.exceptions.ConnectTimeout)


def _decode_json(response: requests.Response, *, allow_empty: bool = False) -> Any:
    content = response.content
    if not content or not content.strip():
        if response.status_code == 204 or allow_empty:
            return {}
        raise TruncatedBody("empty body")
    try:
        return json.loads(content)
    except ValueError as exc:
        raise TruncatedBody(f"body is not complete JSON ({len(content)} bytes)") from exc


def parse_api_fault(response: requests.Response) -> tuple[str | None, str | None]:
    """ApiFault ``code``/``description`` (or the APIM ``statusCode``/``message`` shape)."""
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        text = (response.text or "").strip()
        return None, text[:300] or None
    if not isinstance(body, Mapping):
        return None, None
    code = get_path(body, "code")
    if code is None:
        code = get_path(body, "error", "code")
    description = get_path(body, "description") or get_path(body, "message") or get_path(body, "error", "message")
    return (None if code is None else str(code)), (None if description is None else str(description)[:1024])


def paginator_for(style: str, first: PageRequest) -> Paginator:
    styles: dict[str, Callable[[PageRequest], Paginator]] = {
        "none": SinglePagePaginator,
        "offset": OffsetPaginator,
        "seek": SeekPaginator,
    }
    try:
        return styles[style](first)
    except KeyError:
        raise ValueError(f"unknown paging style {style!r}; expected one of {sorted(styles)}") from None


__all__ = [
    "Action", "BadRequestError", "CallBudget", "CallStats", "ConflictError", "ForbiddenError",
    "NextLinkPaginator", "NotFoundError", "OffsetPaginator", "PageRequest", "PaginationLoopError",
    "Paginator", "PartnerCenterClient", "PartnerCenterError", "RetryPolicy", "SeekPaginator",
    "ServiceError", "SinglePagePaginator", "ThrottledError", "TokenSource", "TransportError",
    "UnauthorizedError", "WriteResponse", "as_bool", "as_enum", "as_int", "as_text", "get_path", "paginator_for",
    "parse_api_fault", "parse_retry_after", "resolve",
]
