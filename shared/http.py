"""Small helpers shared by the HTTP blueprints: JSON bodies in, JSON/HTML responses out."""
from __future__ import annotations

import json
from html import escape
from typing import Any

import azure.functions as func

from .errors import InvalidInput
from .jsonutil import JsonRejected, parse_json_text

MAX_BODY_BYTES = 64 * 1024


class BadRequest(InvalidInput):
    """A request the HTTP layer refuses before any service sees it (400, or 413 when too large)."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, indent=2, default=str),
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


def error_response(status: int, message: str, problems: dict[str, str] | None = None) -> func.HttpResponse:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return json_response(body, status)


def html_response(title: str, message: str, status: int = 200) -> func.HttpResponse:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>"
        f"<p>{escape(message)}</p></body></html>"
    )
    return func.HttpResponse(page, status_code=status, mimetype="text/html")


def read_json_body(req: func.HttpRequest, *, max_bytes: int = MAX_BODY_BYTES) -> Any:
    body = req.get_body() or b""
    if len(body) > max_bytes:
        raise BadRequest(f"request body is larger than {max_bytes} bytes", status=413)
    if not body.strip():
        raise BadRequest("request body must be a JSON object")
    try:
        return parse_json_text(body, max_bytes=max_bytes)
    except JsonRejected as exc:
        raise BadRequest(f"request body is {exc}" if "nested" in str(exc) else "request body is not valid JSON") from None
