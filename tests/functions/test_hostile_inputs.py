"""Issue 9 point 11 across the whole app: every registered HTTP route answers a deeply nested
document (about 10 KB) and a provider id with whitespace or control characters with a 4xx,
never a 500, and every queue trigger takes a deeply nested message without raising (it is
recorded and dropped, not sent to poison by an exception). Routes and triggers are read from
``registered_functions``, so a new one is covered without touching this file."""
from __future__ import annotations

import json
import re

import azure.functions as func
import pytest

from devservices import register_and_consent

PROVIDER_ID = "hostile-p"
DEEP_OBJECT = b'{"a":' * 1700 + b"1" + b"}" * 1700  # ~10 KB, 1700 levels
DEEP_ARRAY = b"[" * 5000 + b"]" * 5000
BAD_IDS = ["hostile-p\n", "hostile-p ", " hostile-p", "hostile-p\t", "hostile-p\r\n", "hostile-p\x00", "host\x1bile"]
# a body a provider PUT would store: the id alone must be what is refused
PROVIDER_BODY = json.dumps({"name": "Hostile", "countryCode": "US", "currencyCode": "USD",
                            "tenantId": "cd613e30-d8f1-4adf-91b7-584a2265b1f5"}).encode()
# route parameters that name a provider, and routes that take one as ?provider=
PROVIDER_PARAMS = ("id", "provider")
PROVIDER_QUERY_ROUTES = ("writebacks",)


@pytest.fixture
def consented(sim_runtime, simulator):
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    return sim_runtime


def triggers(registered_functions, kind: str):
    for name, function in sorted(registered_functions.items()):
        for trigger in json.loads(function.get_function_json())["bindings"]:
            if trigger["type"] == kind:
                yield name, trigger, function.get_user_function()


def http_routes(registered_functions):
    return list(triggers(registered_functions, "httpTrigger"))


def request(route: str, method: str, body: bytes, *, provider: str = PROVIDER_ID, query: dict | None = None):
    params = {name: (provider if name in PROVIDER_PARAMS else "k1") for name in re.findall(r"{(\w+)", route)}
    path = re.sub(r"{(\w+)[^}]*}", lambda m: params[m.group(1)], route)
    content_type = "application/x-www-form-urlencoded" if route.startswith("consent/") else "application/json"
    return func.HttpRequest(method, f"http://localhost/api/{path}", headers={"Content-Type": content_type},
                            params=query or {}, route_params=params, body=body)


def test_every_route_is_covered(registered_functions):
    routes = {trigger["route"] for _, trigger, _ in http_routes(registered_functions)}
    assert {"providers/{id}", "writebacks", "consent/callback", "webhooks/partner-center/{provider}"} <= routes


@pytest.mark.parametrize("body", [DEEP_OBJECT, DEEP_ARRAY, b"state=" + DEEP_OBJECT], ids=["object", "array", "form"])
def test_a_deeply_nested_body_is_never_a_500(consented, registered_functions, body):
    for name, trigger, handler in http_routes(registered_functions):
        for method in trigger.get("methods") or ["GET"]:
            response = handler(request(trigger["route"], method, body))
            assert response.status_code < 500, (name, method, response.get_body()[:200])
            if method in ("PUT", "POST") and "json" in (response.mimetype or "") and response.status_code == 400:
                assert b"internal" not in response.get_body()


def test_json_routes_refuse_a_deep_document_with_400(consented, registered_functions):
    """The routes that read a JSON body say why: nested too deep."""
    answers = {}
    for name, trigger, handler in http_routes(registered_functions):
        for method in set(trigger.get("methods") or []) & {"PUT", "POST"}:
            answers[(name, method)] = handler(request(trigger["route"], method, DEEP_OBJECT))
    for key in [("provider_item", "PUT"), ("writebacks_submit", "POST")]:
        assert answers[key].status_code == 400 and b"nested" in answers[key].get_body(), key
    # unsigned: refused by the signature check (401), recorded, never parsed into a 500
    assert answers[("partner_center_webhook", "POST")].status_code == 401


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_a_provider_id_with_whitespace_or_control_characters_is_400_everywhere(consented, registered_functions, bad_id):
    """Before: "hostile-p\\n" passed the id pattern ("$" matches before a final newline) and was
    looked up, stored or answered 404/500 depending on the route."""
    checked = 0
    for name, trigger, handler in http_routes(registered_functions):
        names_provider = any(p in trigger["route"] for p in ("{id", "{provider"))
        by_query = trigger["route"] in PROVIDER_QUERY_ROUTES or trigger["route"].startswith("writebacks/")
        if not (names_provider or by_query):
            continue
        for method in trigger.get("methods") or ["GET"]:
            if by_query and not names_provider and method != "GET":
                continue
            response = handler(request(trigger["route"], method, PROVIDER_BODY, provider=bad_id,
                                       query={"provider": bad_id} if by_query else None))
            assert response.status_code == 400, (name, method, response.status_code, response.get_body()[:200])
            checked += 1
    assert checked >= 6
    assert consented.providers.find_provider(bad_id) is None


def test_every_queue_trigger_takes_a_deep_message_without_raising(consented, registered_functions):
    names = []
    for name, _, handler in triggers(registered_functions, "queueTrigger"):
        for body in (DEEP_OBJECT, DEEP_ARRAY):
            handler(func.QueueMessage(id=f"deep-{name}", body=body))  # raising would redeliver, then poison
        names.append(name)
    assert {"sync_customer_queue", "import_invoice_queue", "writebacks_queue"} <= set(names)
