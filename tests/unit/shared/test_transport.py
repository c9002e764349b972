"""The shared transport: one fault table driven through both HTTP clients, the resolution table
itself, and the write-replay rules. Fakes only: scripted sessions, a fake token source, no sleep."""
from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pytest
import requests

from shared.graph_billing import GraphBillingClient
from shared.graph_billing_errors import ExportExpired, GraphBillingError, GraphPermissionMissing, GraphServiceError
from shared.partner_center_errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ServiceError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from shared.transport import (
    RESOLUTIONS,
    Action,
    Call,
    CallStats,
    Dialect,
    ErrorType,
    Resolution,
    RetryPolicy,
    Transport,
    TruncatedBody,
    resolve,
)
from tests.fakes.partner_center import FakeTokenSource, NoSleep, ScriptedSession, make_client, response

SEED = 11
POLICY = RetryPolicy(max_attempts=3)
GRAPH = "https://graph.example.test"
OPERATION = GRAPH + "/v1.0/reports/partners/billing/operations/op-1"
BODY = {"id": "op-1", "status": "running"}


# -- the clients under test ---------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    name: str
    build: Callable[[ScriptedSession, FakeTokenSource, NoSleep], Any]
    read: Callable[[Any], Any]
    request_id_header: str
    classes: Mapping[ErrorType, type[Exception]]


PARTNER_CENTER = Driver(
    "partner_center",
    lambda session, tokens, sleep: make_client(session, tokens=tokens, sleep=sleep, retry=POLICY,
                                               rng=random.Random(SEED)),
    lambda client: client.get_json("/customers/c1"),
    "MS-RequestId",
    {
        ErrorType.BAD_REQUEST: BadRequestError, ErrorType.UNAUTHORIZED: UnauthorizedError,
        ErrorType.FORBIDDEN: ForbiddenError, ErrorType.NOT_FOUND: NotFoundError, ErrorType.CONFLICT: ConflictError,
        ErrorType.THROTTLED: ThrottledError, ErrorType.SERVICE: ServiceError, ErrorType.TRANSPORT: TransportError,
    },
)
GRAPH_BILLING = Driver(
    "graph_billing",
    lambda session, tokens, sleep: GraphBillingClient(GRAPH, tokens, session=session, sleep=sleep, retry=POLICY,
                                                      rng=random.Random(SEED)),
    lambda client: client.get_operation(OPERATION),
    "client-request-id",
    {
        ErrorType.BAD_REQUEST: GraphBillingError, ErrorType.UNAUTHORIZED: GraphBillingError,
        ErrorType.FORBIDDEN: GraphPermissionMissing, ErrorType.NOT_FOUND: ExportExpired,  # an operation link gone
        ErrorType.CONFLICT: GraphBillingError, ErrorType.THROTTLED: GraphServiceError,
        ErrorType.SERVICE: GraphServiceError, ErrorType.TRANSPORT: GraphServiceError,
    },
)
DRIVERS = [PARTNER_CENTER, GRAPH_BILLING]


# -- the fault table ------------------------------------------------------------------------------

Wait = Callable[[RetryPolicy, random.Random, int], float]


def backoff() -> Wait:
    return lambda policy, rng, attempt: policy.backoff(attempt, rng)


def throttle(retry_after: str | Callable[[], str] | None) -> Wait:
    """The policy's wait for a 429 with this Retry-After (a callable: worked out when replayed)."""

    def wait(policy: RetryPolicy, rng: random.Random, attempt: int) -> float:
        value = retry_after() if callable(retry_after) else retry_after
        headers = {} if value is None else {"Retry-After": value}
        return policy.throttle_wait(response(429, headers=headers), attempt, rng)

    return wait


def http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


def ok() -> requests.Response:
    return response(200, BODY)


def status(code: int, **headers: str) -> requests.Response:
    return response(code, {"error": {"code": f"E{code}", "message": "no"}}, headers=headers)


@dataclass(frozen=True)
class Fault:
    id: str
    script: Callable[[], tuple[Any, ...]]  # fresh answers for each client
    error: ErrorType | None = None  # None: the read succeeds
    status: int | None = None  # of the error
    waits: tuple[Wait, ...] = ()  # one per retry, replayed from the policy with the same seed
    throttled: int = 0
    refreshes: int = 0
    tolerance: float = 1e-9


FAULTS = [
    Fault("200", lambda: (ok(),)),
    Fault("429 Retry-After seconds", lambda: (status(429, **{"Retry-After": "7"}), ok()),
          waits=(throttle("7"),), throttled=1),
    Fault("429 Retry-After HTTP-date", lambda: (status(429, **{"Retry-After": http_date(20)}), ok()),
          waits=(throttle(lambda: http_date(20)),), throttled=1, tolerance=1.5),
    Fault("429 without Retry-After", lambda: (status(429), ok()), waits=(throttle(None),), throttled=1),
    Fault("429 persists", lambda: (status(429, **{"Retry-After": "1"}),) * 3, ErrorType.THROTTLED, 429,
          waits=(throttle("1"), throttle("1")), throttled=3),
    Fault("401 then 200", lambda: (status(401), ok()), refreshes=1),
    Fault("401 twice", lambda: (status(401), status(401)), ErrorType.UNAUTHORIZED, 401, refreshes=1),
    *[Fault(f"{code} then 200", lambda code=code: (status(code), ok()), waits=(backoff(),))
      for code in (408, 500, 502, 503, 504)],
    Fault("503 persists", lambda: (status(503),) * 3, ErrorType.SERVICE, 503, waits=(backoff(), backoff())),
    Fault("501", lambda: (status(501),), ErrorType.SERVICE, 501),
    Fault("400", lambda: (status(400),), ErrorType.BAD_REQUEST, 400),
    Fault("403", lambda: (status(403),), ErrorType.FORBIDDEN, 403),
    Fault("404", lambda: (status(404),), ErrorType.NOT_FOUND, 404),
    Fault("409", lambda: (status(409),), ErrorType.CONFLICT, 409),
    Fault("connection reset then 200", lambda: (requests.ConnectionError("Connection reset by peer"), ok()),
          waits=(backoff(),)),
    Fault("connection reset persists", lambda: (requests.ConnectionError("Connection reset by peer"),) * 3,
          ErrorType.TRANSPORT, waits=(backoff(), backoff())),
    Fault("read timeout then 200", lambda: (requests.ReadTimeout("read timed out"), ok()), waits=(backoff(),)),
    Fault("truncated JSON body then 200", lambda: (response(200, raw=b'{"id": "op-1", "sta'), ok()),
          waits=(backoff(),)),
    Fault("non-JSON 2xx persists", lambda: (response(200, raw=b"<html>maintenance</html>"),) * 3,
          ErrorType.TRANSPORT, waits=(backoff(), backoff())),
]


def expected_waits(fault: Fault) -> list[float]:
    rng = random.Random(SEED)
    return [wait(POLICY, rng, attempt) for attempt, wait in enumerate(fault.waits, start=1)]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
@pytest.mark.parametrize("driver", DRIVERS, ids=[d.name for d in DRIVERS])
def test_fault_table_through_both_clients(driver, fault):
    session, tokens, sleep = ScriptedSession(*fault.script()), FakeTokenSource(), NoSleep()
    client = driver.build(session, tokens, sleep)
    if fault.error is None:
        driver.read(client)
    else:
        expected = driver.classes[fault.error]
        with pytest.raises(expected) as caught:
            driver.read(client)
        error = caught.value
        assert type(error) is expected
        assert error.status == fault.status
        assert error.request_id == session.sent[0].headers[driver.request_id_header]
        assert error.request_id in str(error)
        if fault.status is None:
            assert isinstance(error.__cause__, (requests.RequestException, TruncatedBody))
    session.assert_consumed()
    assert len({sent.headers[driver.request_id_header] for sent in session.sent}) == 1  # one logical call
    stats = client.stats
    assert (stats.calls, stats.retries, stats.throttled, stats.token_refreshes) == (
        len(session.sent), len(fault.waits), fault.throttled, fault.refreshes)
    assert sleep.slept == pytest.approx(expected_waits(fault), abs=fault.tolerance)
    assert tokens.calls.count(True) == fault.refreshes


@pytest.mark.parametrize("driver", DRIVERS, ids=[d.name for d in DRIVERS])
def test_refreshed_token_is_sent_on_the_retry(driver):
    session = ScriptedSession(status(401), ok())
    driver.read(driver.build(session, FakeTokenSource(), NoSleep()))
    assert [s.headers["Authorization"] for s in session.sent] == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize("driver", DRIVERS, ids=[d.name for d in DRIVERS])
def test_exceptions_outside_the_table_propagate_unchanged(driver):
    session = ScriptedSession(RuntimeError("a bug, not a network problem"))
    client = driver.build(session, FakeTokenSource(), NoSleep())
    with pytest.raises(RuntimeError, match="a bug"):
        driver.read(client)
    assert client.stats.calls == 1 and client.stats.retries == 0


# -- the resolution table -----------------------------------------------------------------------------


@pytest.mark.parametrize("outcome, action, error_type, may_have_run", [
    (response(204), Action.SUCCESS, None, True),
    (response(299), Action.SUCCESS, None, True),
    (response(302), Action.FAIL, ErrorType.UNEXPECTED, True),  # redirects are not followed
    (response(412), Action.FAIL, ErrorType.UNEXPECTED, True),
    (response(410), Action.FAIL, ErrorType.GONE, True),
    (response(401), Action.REFRESH_TOKEN, ErrorType.UNAUTHORIZED, False),
    (response(429), Action.RATE_LIMITED, ErrorType.THROTTLED, False),
    (response(507), Action.RETRY, ErrorType.SERVICE, True),  # the 5xx class
    (response(505), Action.FAIL, ErrorType.SERVICE, True),
    (requests.exceptions.ConnectTimeout(), Action.RETRY, ErrorType.TRANSPORT, False),  # never left
    (requests.ReadTimeout(), Action.RETRY, ErrorType.TRANSPORT, True),
    (requests.exceptions.SSLError(), Action.RETRY, ErrorType.TRANSPORT, True),  # a ConnectionError
    (TruncatedBody("cut"), Action.RETRY, ErrorType.TRANSPORT, True),
    (ValueError("not ours"), Action.FAIL, ErrorType.UNEXPECTED, True),
])
def test_resolution_table(outcome, action, error_type, may_have_run):
    assert resolve(outcome) == Resolution(action, error_type, may_have_run)


def test_a_service_error_code_entry_wins_over_its_status():
    table = {**RESOLUTIONS, (400, "800002"): Resolution(Action.RETRY, ErrorType.SERVICE)}
    assert resolve(response(400), code="800002", table=table).action is Action.RETRY
    assert resolve(response(400), code="2055", table=table).action is Action.FAIL
    assert resolve(response(400), table=table).action is Action.FAIL


# -- write replay rules, on the transport alone ------------------------------------------------------


class Refused(Exception):
    def __init__(self, message: str, *, failure: Any):
        self.failure = failure
        super().__init__(message)


DIALECT = Dialect(
    name="test", request_id_header="X-Request-Id", parse_error=lambda response: (None, None), errors={},
    default_error=Refused, make_error=lambda cls, text, failure: cls(text, failure=failure),
)


@pytest.mark.parametrize("failure, replayed", [
    pytest.param(lambda: response(503), False, id="503"),  # may have run
    pytest.param(lambda: requests.ConnectionError("reset"), False, id="reset"),
    pytest.param(lambda: requests.ReadTimeout(), False, id="read timeout"),
    pytest.param(lambda: response(200, raw=b'{"id"'), False, id="cut-short body"),  # it ran; the answer broke
    pytest.param(lambda: requests.exceptions.ConnectTimeout(), True, id="connect timeout"),  # never left
    pytest.param(lambda: response(429, headers={"Retry-After": "0"}), True, id="429"),  # refused before it ran
    pytest.param(lambda: response(401), True, id="401"),  # likewise, after one token refresh
])
@pytest.mark.parametrize("replay_safe", [False, True], ids=["write", "replay-safe write"])
def test_write_replay_rules(failure, replayed, replay_safe):
    session = ScriptedSession(failure(), *([response(201, {"ok": True})] if replayed or replay_safe else []))
    transport = Transport(session, retry=POLICY, sleep=NoSleep(), rng=random.Random(SEED))
    tokens = FakeTokenSource()
    call = Call("POST", "https://api.example.test/things", target="/things", request_id="rid-1", body={"x": 1},
                token=tokens.access_token, replay_safe=replay_safe)
    stats = CallStats()
    if replayed or replay_safe:
        answer, body = transport.send(call, DIALECT, stats)
        assert (answer.status_code, body) == (201, {"ok": True})
    else:
        with pytest.raises(Refused, match=r"POST /things .*\[X-Request-Id rid-1\]") as caught:
            transport.send(call, DIALECT, stats)
        assert caught.value.failure.attempts == 1
    session.assert_consumed()
    assert stats.calls == len(session.sent)


def test_json_body_is_sent_compact_with_its_content_type():
    sent: list[dict[str, Any]] = []

    class RecordingSession(ScriptedSession):
        def request(self, method, url, **kwargs):
            sent.append(kwargs)
            return super().request(method, url, **kwargs)

    session = RecordingSession(response(204))
    transport = Transport(session, retry=POLICY, sleep=NoSleep())
    call = Call("PATCH", "https://api.example.test/t/1", target="/t/1", request_id="r", body={"a": 1, "b": [1, 2]},
                allow_empty=True)
    assert transport.send(call, DIALECT, CallStats())[1] == {}
    assert sent[0]["data"] == b'{"a":1,"b":[1,2]}' and sent[0]["headers"]["Content-Type"] == "application/json"


def test_scripted_session_reports_unused_answers():
    session = ScriptedSession(response(200, BODY), response(200, BODY))
    make_client(session).get_json("/x")
    with pytest.raises(AssertionError, match="1 scripted answer"):
        session.assert_consumed()
