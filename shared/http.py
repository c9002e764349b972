"""Small helpers shared by the HTTP blueprints: JSON bodies in, JSON/HTML responses out."""
from __future__ import annotations

import json
from typing import Any

import azure.functions as func

MAX_BODY_BYTES = 64 * 1024


class BadRequest(Exception):
    def __init__(self, message: str, *, status: int = 400, problems: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems


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
    from html import escape

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
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("request body is not valid JSON") from None
