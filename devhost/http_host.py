"""The HTTP side of the local host: a WSGI application (served by waitress) that routes
/api/<route> to the app's HTTP functions as azure.functions.HttpRequest/HttpResponse, with the
host's key check per auth level: anonymous routes are open, function and admin routes need the
function key as the ``x-functions-key`` header or the ``code`` query parameter."""
from __future__ import annotations

import hmac
import logging
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote

import azure.functions as func

from devhost.index import AuthLevel, HttpFunction, invoke

log = logging.getLogger("devhost.http")
KEY_HEADER = "x-functions-key"
KEY_PARAMETER = "code"
MAX_BODY_BYTES = 100 * 1024 * 1024   # the Functions host's request size limit
_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
            302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _status(code: int) -> str:
    return f"{code} {_REASONS.get(code, 'Status')}"


def _plain(start_response: StartResponse, code: int, text: str = "") -> list[bytes]:
    body = text.encode("utf-8")
    start_response(_status(code), [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def _headers(environ: dict) -> dict[str, str]:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _read_body(environ: dict) -> bytes | None:
    """The request body; None when it is larger than the host accepts."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return None
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _url(environ: dict, path: str, query: str) -> str:
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '')}"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}{quote(path)}" + (f"?{query}" if query else "")


def _response_headers(response: func.HttpResponse, body: bytes) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length", "transfer-encoding")]
    if not any(k.lower() == "content-type" for k, _ in headers) and response.mimetype:
        charset = f"; charset={response.charset}" if response.charset else ""
        headers.append(("Content-Type", f"{response.mimetype}{charset}"))
    headers.append(("Content-Length", str(len(body))))
    return headers


class HttpHost:
    """WSGI callable over the app's HTTP functions."""

    def __init__(self, functions: Iterable[HttpFunction], *, function_key: str, route_prefix: str = "api"):
        self.functions = tuple(functions)
        self._key = function_key
        self.prefix = f"/{route_prefix}/" if route_prefix else "/"

    def match(self, method: str, path: str) -> tuple[HttpFunction, dict[str, str]] | None:
        if not path.startswith(self.prefix) and path + "/" != self.prefix:
            return None
        route = path[len(self.prefix):].strip("/")
        for function in self.functions:
            found = function.pattern.match(route)
            if found and (not function.methods or method in function.methods):
                return function, {k: v for k, v in found.groupdict().items() if v is not None}
        return None

    def authorized(self, function: HttpFunction, headers: dict[str, str], params: dict[str, str]) -> bool:
        if function.auth_level is AuthLevel.ANONYMOUS:
            return True
        given = headers.get(KEY_HEADER) or params.get(KEY_PARAMETER) or ""
        return bool(given) and hmac.compare_digest(given.encode("utf-8"), self._key.encode("utf-8"))

    def __call__(self, environ: dict, start_response: StartResponse) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"].upper(), environ.get("PATH_INFO") or "/"
        query = environ.get("QUERY_STRING", "")
        found = self.match(method, path)
        if found is None:
            return _plain(start_response, 404)
        function, route_params = found
        headers, params = _headers(environ), dict(parse_qsl(query, keep_blank_values=True))
        if not self.authorized(function, headers, params):
            return _plain(start_response, 401)
        body = _read_body(environ)
        if body is None:
            return _plain(start_response, 413)
        request = func.HttpRequest(method=method, url=_url(environ, path, query), headers=headers, params=params,
                                   route_params=route_params, body=body)
        return self._respond(function, request, start_response)

    @staticmethod
    def _respond(function: HttpFunction, request: func.HttpRequest, start_response: StartResponse) -> list[bytes]:
        try:
            response = invoke(function.function, {function.argument: request})
        except Exception:  # noqa: BLE001 - the host answers 500 and logs the failure
            log.exception("function %s failed", function.name)
            return _plain(start_response, 500)
        if response is None:
            return _plain(start_response, 204)
        if not isinstance(response, func.HttpResponse):
            log.error("function %s returned %s, not an HttpResponse", function.name, type(response).__name__)
            return _plain(start_response, 500)
        body = response.get_body() or b""
        start_response(_status(response.status_code), _response_headers(response, body))
        return [body]
