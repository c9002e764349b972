"""admin/gateway.py: route templates, and only the page's requests resolve."""
import pytest

from admin.gateway import Gateway, Route, compile_template


def route(template, *methods):
    return Route(template, frozenset(methods), lambda req: template, compile_template(template))


@pytest.mark.parametrize("template,path,params", [
    ("providers/{id}/verify", "providers/contoso/verify", {"id": "contoso"}),
    ("providers/{id}/verify", "providers/contoso/extra/verify", None),
    ("providers/{id:alpha}", "providers/abc", {"id": "abc"}),
    ("files/{*rest}", "files/a/b.csv", {"rest": "a/b.csv"}),
    ("providers", "providers/x", None),
])
def test_templates(template, path, params):
    assert route(template, "GET").match(path) == params


def test_only_the_pages_requests_resolve_to_a_registered_handler():
    gateway = Gateway()
    gateway.bind_routes([route("providers/{id}", "GET", "PUT", "DELETE"), route("providers/{id}/verify", "POST"),
                         route("writebacks/{key}/{action}", "POST"), route("webhooks/partner-center/{p}", "POST")])
    found, params = gateway.resolve("put", "providers/contoso")
    assert found.template == "providers/{id}" and params == {"id": "contoso"}
    assert gateway.resolve("POST", "writebacks/k1/retry")[1] == {"key": "k1", "action": "retry"}
    assert gateway.resolve("DELETE", "providers/contoso") is None  # the page never deletes
    assert gateway.resolve("POST", "writebacks/k1/purge") is None
    assert gateway.resolve("POST", "webhooks/partner-center/contoso") is None
    assert gateway.resolve("GET", "providers/contoso/verify") is None  # registered for POST only
    assert gateway.resolve("GET", "alerts") is None  # allowed, but no blueprint registered it here
