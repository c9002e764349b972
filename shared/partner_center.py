"""PartnerCenterClient: the one way pcsync talks to the Partner Center REST API.

What is Partner Center's own lives here; the request loop, the resolution table and the retry
policy are the shared :mod:`shared.transport`:

* URLs: paths with or without ``/v1``; absolute links only on the configured origin, so a next
  link can never send our bearer token elsewhere;
* headers: ``MS-RequestId`` per logical call (reused by its retries, and by Partner Center for
  idempotency), ``MS-CorrelationId`` per sync run, ``Accept``, ``X-Locale``;
* errors: the ApiFault body (``code``/``description``, or APIM's ``statusCode``/``message``) and
  which :mod:`shared.partner_center_errors` class stands for each transport error type;
* paging: ``iter_pages`` / ``iter_items`` drive a :mod:`shared.paging` paginator one page at a
  time; a whole collection is never held;
* answers: a 2xx that is not what was asked for (a page without ``items``, an error envelope,
  a resource of another type or id) is retried like a cut-short body and then fails; it is
  never read as an empty page or an empty resource;
* writes (``send_json``: PATCH/POST/PUT): a write that may have run is replayed only when the
  caller says that is safe.

Every call first waits on the call budget (``shared.call_budget``) shared by the client's views.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import requests

from .call_budget import CallBudget
from .client_base import HttpClient
from .errors import TokenRefused
from .jsonutil import get_path
from .paging import PageRequest, Paginator, collection_problem
from .partner_center_errors import (
    BadRequestError,
    ConditionalAccessBlockedError,
    ConflictError,
    ForbiddenError,
    MfaRequiredError,
    NotFoundError,
    PartnerCenterError,
    ServiceError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from .token_choice import TokenChoice
from .token_health import FIXES, TokenHealth, partner_center_code
from .tokens import TokenSource
from .transport import Budget, Call, CallStats, Dialect, ErrorType, Failure, error_fields

API_VERSION_PREFIX = "/v1"
WRITE_METHODS = frozenset({"PATCH", "POST", "PUT"})


@dataclass(frozen=True)
class WriteResponse:
    """A successful write: ``status`` 200/201/202/204, the decoded body (``{}`` when empty),
    the ``Location`` header (202 answers point at the resource to poll) and the MS-RequestId."""

    status: int
    body: dict[str, Any]
    location: str | None
    request_id: str


def parse_api_fault(response: requests.Response) -> tuple[str | None, str | None]:
    """ApiFault ``code``/``description`` (or the APIM ``statusCode``/``message`` shape). The 2019
    MFA refusal (401 "Unauthorized - MFA required", no body) reads as code 900421."""
    code, message = error_fields(
        response,
        code_paths=(("code",), ("error", "code")),
        message_paths=(("description",), ("message",), ("error", "message")),
    )
    return partner_center_code(response.status_code, code, response.reason), message


def json_object_problem(body: Any) -> str | None:
    """Why a 2xx answer to a GET is not a resource: not a JSON object (a bare list is taken as a
    collection's items), or an error envelope."""
    if isinstance(body, list):
        return None
    if not isinstance(body, Mapping):
        return f"expected a JSON object, got {type(body).__name__}"
    if get_path(body, "error") is not None and get_path(body, "id") is None:
        return "the answer is an error envelope"
    return None


def resource_problem(object_type: str | None = None, resource_id: str | None = None) -> Callable[[Any], str | None]:
    """A check for a single-resource read: a JSON object, of ``attributes.objectType``
    ``object_type`` when it says, with the ``id`` asked for (case-insensitively) when given."""
    def problem(body: Any) -> str | None:
        if not isinstance(body, Mapping):
            return f"expected a JSON object, got {type(body).__name__}"
        found = json_object_problem(body)
        if found:
            return found
        said = get_path(body, "attributes", "objectType")
        if object_type is not None and said is not None and str(said).lower() != object_type.lower():
            return f"expected a {object_type}, got a {str(said)[:80]!r}"
        if resource_id is not None and str(get_path(body, "id") or "").lower() != resource_id.lower():
            return f"expected the {object_type or 'resource'} {resource_id!r}, got id {get_path(body, 'id')!r}"
        return None
    return problem


def _make_error(cls: type[Exception], text: str, failure: Failure) -> Exception:
    call, answer = failure.call, failure.answer
    fields: dict[str, Any] = {
        "status": answer.status, "code": answer.code, "description": answer.message,
        "request_id": call.request_id, "correlation_id": call.context.get("correlation_id"),
        "method": call.method, "path": call.target,
    }
    if issubclass(cls, ThrottledError):
        fields["retry_after"] = answer.retry_after
    return cls(text, **fields)


_DIALECT = Dialect(
    name="partner center",
    request_id_header="MS-RequestId",
    parse_error=parse_api_fault,
    errors={
        ErrorType.BAD_REQUEST: BadRequestError,
        ErrorType.UNAUTHORIZED: UnauthorizedError,
        ErrorType.MFA_REQUIRED: MfaRequiredError,
        ErrorType.FORBIDDEN: ForbiddenError,
        ErrorType.CONDITIONAL_ACCESS_BLOCKED: ConditionalAccessBlockedError,
        ErrorType.NOT_FOUND: NotFoundError,
        ErrorType.CONFLICT: ConflictError,
        ErrorType.THROTTLED: ThrottledError,
        ErrorType.SERVICE: ServiceError,
        ErrorType.TRANSPORT: TransportError,
    },
    default_error=ServiceError,  # an unexpected status is the service's problem, not the caller's
    make_error=_make_error,
    hints={ErrorType.MFA_REQUIRED: FIXES[TokenHealth.MFA_REQUIRED],
           ErrorType.CONDITIONAL_ACCESS_BLOCKED: FIXES[TokenHealth.CONDITIONAL_ACCESS_BLOCKED]},
)


class PartnerCenterClient(HttpClient):
    """Partner Center REST client for one partner tenant.

    Immutable: ``bind(correlation_id=..., stats=...)`` returns a view for one sync run that shares
    the transport (session and connection pool, retry policy, call budget) and the token source.
    ``transport_options`` go to :class:`~shared.transport.Transport` (see :mod:`shared.client_base`);
    without a ``budget`` the client has one of its own.
    """

    default_pool_size = 16

    def __init__(self, base_url: str, token_source: TokenSource, *, correlation_id: str | None = None,
                 stats: CallStats | None = None, **transport_options: Any):
        root = base_url.rstrip("/")
        if root.endswith(API_VERSION_PREFIX):
            root = root[: -len(API_VERSION_PREFIX)]
        transport_options["budget"] = transport_options.get("budget") or CallBudget()
        super().__init__(root, token_source, stats=stats, **transport_options)
        self._tokens = TokenChoice(token_source)  # app-only where Partner Center takes it
        self.correlation_id = correlation_id or str(uuid.uuid4())

    def bind(self, *, correlation_id: str | None = None, stats: CallStats | None = None) -> "PartnerCenterClient":
        view = self._view(stats)
        view.correlation_id = correlation_id or self.correlation_id
        return view

    @property
    def budget(self) -> Budget:
        return self._transport.budget  # type: ignore[return-value]

    def url_for(self, path: str) -> str:
        """Absolute URL for a path relative to the API root, with or without ``/v1``.

        Absolute URLs are accepted only on the configured origin, so a next link can never
        send our bearer token elsewhere.
        """
        path = path.strip()
        if "://" in path:
            if not self._on_origin(path):
                parts = urlsplit(path)
                raise PartnerCenterError(f"refusing to follow a link to another origin: {parts.scheme}://{parts.netloc}")
            return path
        if not path.startswith("/"):
            path = "/" + path
        if not (path == API_VERSION_PREFIX or path.startswith(API_VERSION_PREFIX + "/") or path.startswith(API_VERSION_PREFIX + "?")):
            path = API_VERSION_PREFIX + path
        return self._base_url + path

    # -- calls -------------------------------------------------------------------------------

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        customer_id: str | None = None,
        expect: Callable[[Any], str | None] = json_object_problem,
        exact_numbers: bool = False,
    ) -> dict[str, Any]:
        """GET one resource or page and return its JSON object; ``expect`` says what is wrong
        with an answer (see :func:`resource_problem`), which is then retried and fails;
        ``exact_numbers``: its non-integer numbers as Decimal (money: invoices, line items)."""
        return self.request_json(PageRequest.of(path, params, headers), customer_id=customer_id, expect=expect,
                                 exact_numbers=exact_numbers)

    def request_json(self, request: PageRequest, *, customer_id: str | None = None,
                     expect: Callable[[Any], str | None] = json_object_problem,
                     exact_numbers: bool = False) -> dict[str, Any]:
        _, body = self._send("GET", request, customer_id=customer_id, replay_safe=True, expect=expect,
                             exact_numbers=exact_numbers)
        return {"items": body} if isinstance(body, list) else body

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
    ) -> WriteResponse:
        """PATCH/POST/PUT a JSON body; 2xx answers come back as a :class:`WriteResponse`
        (status, decoded body or ``{}``, ``Location``, the ``MS-RequestId`` sent).

        Writes go through the same loop as reads, with one difference: a write may have been
        applied when the answer is a 5xx, a reset, a read timeout or a cut-short body, so those
        are retried only when the caller says a replay is harmless (``replay_safe``: e.g. a PATCH
        guarded by ``If-Match``, or a create the service refuses as a duplicate). 429 and 401
        are always retried (the request was refused before it ran), and so are connect timeouts
        (it never left). Every retry reuses the ``MS-RequestId``, which Partner Center uses for
        idempotency; pass ``request_id`` to reuse one across invocations too.
        """
        method = method.upper()
        if method not in WRITE_METHODS:
            raise ValueError(f"send_json is for {sorted(WRITE_METHODS)}; use get_json for reads")
        request_id = request_id or str(uuid.uuid4())
        response, decoded = self._send(method, PageRequest.of(path, None, headers), customer_id=customer_id,
                                       replay_safe=replay_safe, body=body, request_id=request_id)
        return WriteResponse(
            status=response.status_code,
            body=decoded if isinstance(decoded, dict) else {},
            location=response.headers.get("Location"),
            request_id=request_id,
        )

    def _send(
        self,
        method: str,
        request: PageRequest,
        *,
        customer_id: str | None,
        replay_safe: bool,
        body: Any = None,
        request_id: str | None = None,
        expect: Callable[[Any], str | None] | None = None,
        exact_numbers: bool = False,
    ) -> tuple[requests.Response, Any]:
        request_id = request_id or str(uuid.uuid4())
        call = Call(
            method, self.url_for(request.path), target=request.path, request_id=request_id,
            headers={
                "Accept": "application/json",
                "X-Locale": "en-US",
                "MS-RequestId": request_id,
                "MS-CorrelationId": self.correlation_id,
                **dict(request.headers),
            },
            params=request.params, body=body, token=self._tokens.for_call(method, request.path),
            customer_id=customer_id, replay_safe=replay_safe, allow_empty=method != "GET", expect=expect,
            exact_numbers=exact_numbers, context={"correlation_id": self.correlation_id},
        )
        try:
            return self._transport.send(call, _DIALECT, self.stats)
        except TokenRefused as refused:  # MFA or Conditional Access: the token source records the cause
            report = getattr(self._token_source, "token_refused", None)
            if report is not None:
                report(refused)
            raise

    # -- paging ------------------------------------------------------------------------------

    def iter_pages(self, paginator: Paginator, *, customer_id: str | None = None,
                   exact_numbers: bool = False) -> Iterator[dict[str, Any]]:
        """Yield each page of a collection; only one page is held at a time. A page that is not
        a collection page fails the read (after the transport's retries)."""
        while not paginator.finished:
            page = self.request_json(paginator.current, customer_id=customer_id, expect=collection_problem,
                                     exact_numbers=exact_numbers)
            yield page
            paginator.advance(page)

    def iter_items(self, paginator: Paginator, *, customer_id: str | None = None,
                   exact_numbers: bool = False) -> Iterator[dict[str, Any]]:
        for page in self.iter_pages(paginator, customer_id=customer_id, exact_numbers=exact_numbers):
            for item in get_path(page, "items"):
                yield dict(item)


__all__ = ["API_VERSION_PREFIX", "PartnerCenterClient", "WRITE_METHODS", "WriteResponse", "json_object_problem",
           "parse_api_fault", "resource_problem"]
