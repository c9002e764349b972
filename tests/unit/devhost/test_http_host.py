"""The local host's WSGI application over registered functions: routing, keys, requests and
responses as the Functions host builds them (called as WSGI, no socket)."""
from __future__ import annotations

import io
import json

import azure.functions as func
import pytest

from devhost.http_host import HttpHost
from devhost.index import index_functions

KEY = "local-key"


def _app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="echo/{id}", methods=["POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"id": req.route_params["id"], "q": req.params.get("q"),
                                             "body": req.get_json(), "header": req.headers.get("x-thing"),
                                             "url": req.url}),
                                 status_code=201, mimetype="application/json", headers={"X-Out": "yes"})

    @app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def open_route(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("open")

    @app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    def admin_only(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin")

    @app.route(route="broken", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("a bug with a secret-looking value: hunter2")

    @app.route(route="nothing", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def nothing(req: func.HttpRequest) -> None:
        return None

    return app


@pytest.fixture(scope="module")
def host() -> HttpHost:
    return HttpHost(index_functions(_app()).http, function_key=KEY)


def call(host: HttpHost, method: str, path: str, *, query: str = "", body: bytes = b"", headers=None):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "localhost:7071", "wsgi.url_scheme": "http"}
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()})
    seen = {}

    def start_response(status, response_headers):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(response_headers)

    seen["body"] = b"".join(host(environ, start_response))
    return seen


def test_a_request_reaches_the_function_as_the_host_builds_it(host):
    answer = call(host, "POST", "/api/echo/abc", query="q=1", body=b'{"a": 1}',
                  headers={"x-functions-key": KEY, "X-Thing": "t", "Content-Type": "application/json"})
    assert answer["status"] == 201
    assert answer["headers"]["X-Out"] == "yes" and answer["headers"]["Content-Type"].startswith("application/json")
    assert answer["headers"]["Content-Length"] == str(len(answer["body"]))
    data = json.loads(answer["body"])
    assert data == {"id": "abc", "q": "1", "body": {"a": 1}, "header": "t",
                    "url": "http://localhost:7071/api/echo/abc?q=1"}


@pytest.mark.parametrize("query, headers", [("", {}), ("", {"x-functions-key": "wrong"}), ("code=wrong", {}),
                                            ("code=", {})])
def test_function_and_admin_routes_refuse_a_missing_or_wrong_key(host, query, headers):
    assert call(host, "POST", "/api/echo/abc", query=query, body=b"{}", headers=headers)["status"] == 401
    assert call(host, "GET", "/api/admin-only", query=query, headers=headers)["status"] == 401


def test_the_key_is_taken_from_the_header_or_code(host):
    assert call(host, "GET", "/api/admin-only", headers={"x-functions-key": KEY})["status"] == 200
    assert call(host, "GET", "/api/admin-only", query=f"code={KEY}")["status"] == 200


def test_anonymous_routes_need_no_key(host):
    answer = call(host, "GET", "/api/open")
    assert (answer["status"], answer["body"]) == (200, b"open")


def test_unknown_paths_and_methods_are_404(host):
    assert call(host, "GET", "/api/missing")["status"] == 404
    assert call(host, "GET", "/api/echo/abc", headers={"x-functions-key": KEY})["status"] == 404   # POST only
    assert call(host, "GET", "/open")["status"] == 404   # outside the route prefix


def test_a_failing_function_is_a_bare_500(host):
    answer = call(host, "GET", "/api/broken")
    assert answer["status"] == 500 and b"hunter2" not in answer["body"]


def test_an_async_function_without_a_response_is_204(host):
    assert call(host, "GET", "/api/nothing")["status"] == 204


def test_an_async_function_runs_even_under_a_running_event_loop(host):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def inside_a_loop():
        return call(host, "GET", "/api/nothing")["status"]

    # on a thread of its own: this one may already run a loop another test left (Playwright's)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, inside_a_loop()).result() == 204
