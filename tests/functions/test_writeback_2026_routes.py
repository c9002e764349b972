"""The 2026 write-back routes, called as the host calls them (Azurite + the simulator): the list
with its contract, retry and dismiss (404 unknown key, 409 a state that does not allow it),
``?preview=true`` and the write-backs timer binding."""
from __future__ import annotations

import json

import azure.functions as func
import pytest

from sync.writeback.record import WritebackState

from tests.functions.test_writeback_functions import PROVIDER_ID, consented, deliver, functions, post  # noqa: F401

CONTRACT = {"key", "provider", "customer", "subscription", "operation", "state", "blockedBy", "error",
            "submittedAt", "updatedAt"}


def call(functions, name, method="GET", *, params=None, key=None, body=None):
    request = func.HttpRequest(method=method, url="http://localhost/api/writebacks", params=params or {},
                               route_params={"key": key} if key else {}, body=json.dumps(body).encode() if body else b"")
    response = functions[name].get_user_function()(request)
    return response.status_code, json.loads(response.get_body() or b"null")


def test_bindings_of_the_new_routes_and_the_timer(functions):
    for name, route, methods in (("writebacks_list", "writebacks", ["GET"]),
                                 ("writebacks_retry", "writebacks/{key}/retry", ["POST"]),
                                 ("writebacks_dismiss", "writebacks/{key}/dismiss", ["POST"])):
        http = json.loads(functions[name].get_function_json())["bindings"][0]
        assert (http["route"], http["methods"], http["authLevel"]) == (route, methods, "FUNCTION")
    timer = json.loads(functions["writebacks_timer"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%PCSYNC_SCHEDULE_WRITEBACKS%"


def refused_reduction(simulator, key: str) -> dict:
    customer = simulator.control.customers()[0]["id"]
    sub = simulator.control.add_subscription(customer, nce=True, software=False, status="active", days_ago=40,
                                             quantity=8, end_of_term="renew", ends_in_days=200)
    return {"idempotencyKey": key, "provider": PROVIDER_ID, "customer": customer,
            "operation": "subscription.quantity", "subscription": sub["id"], "quantity": 2}


def test_preview_list_retry_and_dismiss(functions, consented, simulator):
    body = refused_reduction(simulator, "route-1")
    status, preview = call(functions, "writebacks_submit", "POST", params={"preview": "true"}, body=body)
    assert status == 200 and preview["allowed"] is False and preview["when"] == "atRenewal"
    assert call(functions, "writebacks_list", params={"provider": PROVIDER_ID})[1]["items"] == []  # nothing logged
    assert post(functions, body)[0] == 202
    deliver(functions, json.dumps(body).encode(), message_id="m-route-1")
    follow = {**body, "idempotencyKey": "route-2", "operation": "subscription.friendlyName", "friendlyName": "Ops"}
    follow.pop("quantity")
    post(functions, follow)
    deliver(functions, json.dumps(follow).encode(), message_id="m-route-2")
    status, page = call(functions, "writebacks_list", params={"provider": PROVIDER_ID,
                                                              "subscription": body["subscription"]})
    assert status == 200 and page["next"] is None and CONTRACT <= set(page["items"][0])
    # what an operator may do per state, as retry and dismiss below decide it (the admin page reads it)
    assert list(page["states"]) == [s.value for s in WritebackState]
    assert page["states"]["rejected"] == ["retry", "dismiss"] and page["states"]["blocked"] == ["dismiss"]
    assert page["states"]["succeeded"] == [] and page["states"]["applying"] == []
    states = {item["key"]: (item["state"], item["blockedBy"]) for item in page["items"]}
    assert states == {"route-1": ("rejected", None), "route-2": ("blocked", "route-1")}
    assert call(functions, "writebacks_list", params={"provider": PROVIDER_ID, "state": "blocked"})[1]["items"][0][
        "key"] == "route-2"
    assert call(functions, "writebacks_retry", "POST", key="route-2")[0] == 409  # blocked: not retryable
    status, dismissed = call(functions, "writebacks_dismiss", "POST", key="route-1")
    assert status == 200 and dismissed["state"] == "dismissed"
    assert call(functions, "writebacks_dismiss", "POST", key="route-1")[0] == 409  # final now
    assert call(functions, "writebacks_retry", "POST", key="nope")[0] == 404


@pytest.mark.parametrize("params", [{"state": "bogus"}, {"provider": "Not A Provider"}, {"customer": "a/b"},
                                    {"limit": "x"}, {"next": "not-a-token"}])
def test_bad_list_queries_are_400(functions, runtime, params):
    assert call(functions, "writebacks_list", params=params)[0] == 400


def test_bad_preview_flag_and_keys_are_400(functions, runtime):
    assert call(functions, "writebacks_submit", "POST", params={"preview": "maybe"}, body={})[0] == 400
    assert call(functions, "writebacks_retry", "POST", key="bad/key")[0] == 400
