"""What the local host indexes: the app's functions by trigger, route templates, host.json."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import azure.functions as func
import pytest

from devhost.index import (AuthLevel, HostingError, index_functions, read_host_json,
                           resolve_setting_expressions, route_pattern)


def _app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="items/{id}", methods=["GET", "PUT"])
    def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("item")

    @app.route(route="open", auth_level=func.AuthLevel.ANONYMOUS)
    def open_route(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("open")

    @app.route(route="files/{*path}", methods=["GET"])
    def files(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("files")

    @app.queue_trigger(arg_name="msg", queue_name="work", connection="STORAGE")
    def worker(msg: func.QueueMessage) -> None:
        pass

    @app.timer_trigger(arg_name="timer", schedule="%SCHEDULE%", run_on_startup=True)
    def tick(timer: func.TimerRequest) -> None:
        pass

    return app


def test_functions_are_indexed_by_trigger_with_their_auth_level():
    index = index_functions(_app())
    http = {f.name: f for f in index.http}
    assert http["item"].methods == {"GET", "PUT"} and http["item"].auth_level is AuthLevel.FUNCTION
    assert http["open_route"].auth_level is AuthLevel.ANONYMOUS and not http["open_route"].methods
    assert [(q.name, q.queue_name, q.connection, q.argument) for q in index.queues] == [("worker", "work", "STORAGE", "msg")]
    assert [(t.name, t.schedule, t.run_on_startup) for t in index.timers] == [("tick", "%SCHEDULE%", True)]
    assert index.http[-1].name == "files"   # the catch-all is tried last


def test_a_binding_the_host_cannot_give_is_refused():
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="STORAGE")
    @app.queue_output(arg_name="out", queue_name="out", connection="STORAGE")
    def relay(msg: func.QueueMessage, out: func.Out[str]) -> None:
        pass

    with pytest.raises(HostingError, match="relay: bindings queue"):
        index_functions(app)


def test_the_real_app_is_hostable():
    from function_app import app

    index = index_functions(app)
    names = {f.name for f in index.http}
    assert {"providers_list", "consent_callback"} <= names
    assert {q.queue_name for q in index.queues} >= {"sync-customer", "writebacks"}


@pytest.mark.parametrize("route, path, params", [
    ("providers/{id}", "providers/p1", {"id": "p1"}),
    ("providers/{id}/verify", "PROVIDERS/p1/verify", {"id": "p1"}),
    ("items/{id:int}", "items/42", {"id": "42"}),
    ("files/{*path}", "files/a/b.css", {"path": "a/b.css"}),
    ("optional/{name?}", "optional/", {"name": None}),
    ("optional/{name?}", "optional/n", {"name": "n"}),
    ("files/{*path}", "files", {"path": None}),
])
def test_route_templates_match_like_the_host(route, path, params):
    match = route_pattern(route).match(path.strip("/"))
    assert match and match.groupdict() == params


def test_route_parameters_do_not_span_segments():
    assert route_pattern("providers/{id}").match("providers/a/b") is None


def test_setting_expressions_resolve_from_the_settings():
    assert resolve_setting_expressions("%A% and %B%", {"A": "1", "B": " 2 "}) == "1 and 2"
    with pytest.raises(KeyError, match="MISSING"):
        resolve_setting_expressions("%MISSING%", {})


def test_host_json_queue_options_and_their_overrides(tmp_path):
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"functionTimeout": "00:10:00", "extensions": {"queues": {
        "batchSize": 4, "maxDequeueCount": 5, "visibilityTimeout": "00:00:30", "messageEncoding": "base64"}}}))
    options = read_host_json(host, {"AzureFunctionsJobHost__extensions__queues__MAXDEQUEUECOUNT": "2",
                                    "azurefunctionsjobhost__extensions__http__routePrefix": "x"})
    assert options.queues.batch_size == 4 and options.queues.max_dequeue_count == 2
    assert options.queues.visibility_timeout == timedelta(seconds=30) and options.queues.base64
    assert options.queues.new_batch_threshold == 2   # the host's default: half the batch
    assert options.route_prefix == "x" and options.function_timeout == timedelta(minutes=10)


@pytest.mark.parametrize("queues, message", [({"batchSize": 64}, "batchSize"),
                                             ({"visibilityTimeout": "30 seconds"}, "TimeSpan")])
def test_a_bad_host_json_is_refused_with_its_field(tmp_path, queues, message):
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"extensions": {"queues": queues}}))
    with pytest.raises(HostingError, match=message):
        read_host_json(host)


def test_the_repository_host_json_reads():
    from devhost.index import read_host_json as read
    from devhost.testing import ROOT

    options = read(ROOT / "host.json")
    assert options.queues.max_dequeue_count >= 1 and options.route_prefix == "api"


def test_the_cli_loads_the_host_only_when_serve_runs():
    code = ("import sys, cli; cli.build_parser().parse_args(['serve', '--simulator']); "
            "print(sorted(m for m in sys.modules if m.startswith(('devhost', 'waitress', 'simulator'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['devhost', 'devhost.cli']"


def test_an_app_indexed_before_is_indexed_again():
    app = _app()
    app.get_functions()   # as a test fixture or another tool may have done
    assert len(index_functions(app).http) == 3
