"""PartnerCenterClient.send_json: writes share the one retry loop, but are replayed only when safe."""
from __future__ import annotations


import pytest
import requests

from shared.partner_center_errors import BadRequestError, ServiceError, TransportError
from tests.fakes.partner_center import ScriptedSession, make_client, response

SUB = {"id": "s1", "quantity": 3, "attributes": {"etag": "e2"}}


def test_patch_sends_json_with_if_match_and_returns_status_body_and_request_id():
    session = ScriptedSession(response(200, SUB))
    answer = make_client(session).send_json("PATCH", "/customers/c1/subscriptions/s1", {"quantity": 3},
                                            headers={"If-Match": '"e1"'}, request_id="rid-1")
    (sent,) = session.sent
    assert sent.method == "PATCH" and sent.url.endswith("/v1/customers/c1/subscriptions/s1")
    assert sent.headers["If-Match"] == '"e1"' and sent.headers["Content-Type"] == "application/json"
    assert sent.headers["MS-RequestId"] == "rid-1"
    assert (answer.status, answer.body, answer.request_id) == (200, SUB, "rid-1")


def test_202_with_an_empty_body_gives_the_location():
    session = ScriptedSession(response(202, headers={"Location": "/customers/c1/subscriptions/s1"}))
    answer = make_client(session).send_json("PATCH", "/customers/c1/subscriptions/s1", {})
    assert (answer.status, answer.body, answer.location) == (202, {}, "/customers/c1/subscriptions/s1")


@pytest.mark.parametrize("failure", [response(503), requests.ConnectionError("reset"), response(200, raw=b'{"id"')])
def test_a_write_that_may_have_run_is_not_replayed_unless_safe(failure):
    session = ScriptedSession(failure)
    with pytest.raises((ServiceError, TransportError)):
        make_client(session).send_json("POST", "/customers/c1/agreements", {"x": 1})
    assert len(session.sent) == 1


def test_replay_safe_writes_retry_with_the_same_request_id():
    session = ScriptedSession(response(503), requests.ConnectionError("reset"), response(200, SUB))
    answer = make_client(session).send_json("PATCH", "/customers/c1/subscriptions/s1", SUB, replay_safe=True)
    assert answer.status == 200 and len({s.headers["MS-RequestId"] for s in session.sent}) == 1
    assert len(session.sent) == 3


def test_throttled_refused_and_never_sent_writes_are_always_retried():
    session = ScriptedSession(response(429, {"statusCode": 429}, headers={"Retry-After": "0"}),
                              requests.exceptions.ConnectTimeout("no route"), response(401),
                              response(201, {"ok": True}))
    answer = make_client(session).send_json("POST", "/customers/c1/agreements", {"x": 1})
    assert answer.status == 201 and len(session.sent) == 4
    assert session.sent[-1].headers["Authorization"] == "Bearer token-2"


def test_write_errors_are_typed_with_the_method():
    fault = {"code": 2055, "description": "Etag is no longer valid"}
    with pytest.raises(BadRequestError) as caught:
        make_client(ScriptedSession(response(400, fault))).send_json("PATCH", "/customers/c1/subscriptions/s1", {})
    assert caught.value.code == "2055" and caught.value.method == "PATCH" and str(caught.value).startswith("PATCH ")


def test_send_json_is_only_for_writes():
    with pytest.raises(ValueError):
        make_client(ScriptedSession()).send_json("GET", "/customers", None)
