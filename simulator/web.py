"""Small request/response/router layer over http.server (no framework needed)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY_BYTES = 16 * 1024 * 1024


class CaseInsensitiveDict(dict):
    """Read-only view used for request headers and query strings."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        super().__init__()
        for key, value in pairs:
            super().__setitem__(key.lower(), value)

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())


@dataclass
class Request:
    method: str
    target: str                      # raw path + query as received
    headers: CaseInsensitiveDict
    body: bytes
    path: str = ""
    query: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)
    params: dict[str, str] = field(default_factory=dict)   # path parameters from the route
    base_url: str = ""               # https://127.0.0.1:PORT

    def __post_init__(self):
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.raw_query = parts.query
        # Query parameter names are case-insensitive in Partner Center (seekOperation, size...).
        self.query = CaseInsensitiveDict((k, v[-1]) for k, v in parse_qs(parts.query, keep_blank_values=True).items())

    def json(self):
        """Parsed JSON body; a malformed body is the caller's mistake (400), never a 500."""
        if not self.body:
            raise HttpError(bad_request_json("The request body is empty."))
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(bad_request_json("The request body is not valid JSON."))

    def form(self) -> dict[str, str]:
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}

    def bearer_token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None
    stream: Iterator[bytes] | None = None   # sent with chunked transfer encoding when set

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class HttpError(Exception):
    """Raised by handlers to answer early with a ready response."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def json_response(status: int, payload, headers: Iterable[tuple[str, str]] = (), reason: str | None = None,
                  content_type: str = "application/json; charset=utf-8") -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, [("Content-Type", content_type), *headers], reason)


def html_response(status: int, html: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, html.encode("utf-8"), [("Content-Type", "text/html; charset=utf-8"), *headers])


def bad_request_json(message: str) -> Response:
    return json_response(400, {"error": {"code": "BadRequest", "message": message}})


Handler = Callable[[Request], Response]


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Marks a handler method for Router.add_handlers; stack several for several routes."""
    def mark(handler):
        # Decorators apply bottom-up; insert at the front so the routes keep their reading order.
        handler.__dict__.setdefault("_routes", []).insert(0, (method, template))
        return handler
    return mark


@dataclass
class Route:
    method: str
    template: str
    pattern: re.Pattern
    handler: Handler
    service: str

    @property
    def counter_key(self) -> str:
        """e.g. 'GET /v1/customers/{id}/subscriptions' (parameter names collapsed to {id})."""
        return f"{self.method} {re.sub(r'{[^}]+}', '{id}', self.template)}"


class Router:
    def __init__(self):
        self._routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, service: str) -> None:
        regex = "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "/?$"
        self._routes.append(Route(method.upper(), template, re.compile(regex), handler, service))

    def add_handlers(self, owner, service: str, prefix: str = "") -> None:
        """Adds the @route methods of owner's class in the order they are defined, except that
        templates with fewer {parameters} go first: a fixed path such as
        /v1/invoices/unbilled/lineitems must never be taken for /v1/invoices/{invoice_id}/lineitems."""
        marked = [(method, template, getattr(owner, name)) for name, member in vars(type(owner)).items()
                  for method, template in getattr(member, "_routes", ())]
        marked.sort(key=lambda entry: entry[1].count("{"))   # stable: definition order otherwise
        for method, template, handler in marked:
            self.add(method, prefix + template, handler, service)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """Returns (route, params, path_known). path_known=True with route=None means 405."""
        path_known = False
        for route in self._routes:
            found = route.pattern.match(path)
            if not found:
                continue
            path_known = True
            if route.method == method:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}, True
        return None, {}, path_known
