"""PartnerCenterClient: headers, paging, the retry table, Retry-After, the call budget."""
from __future__ import annotations

import random

import pytest
import requests

from shared.call_budget import CallBudget
from shared.errors import ConsentRequired, PermissionMissing
from shared.jsonutil import as_bool, as_int, get_path
from shared.paging import (
    NextLinkPaginator,
    OffsetPaginator,
    PageRequest,
    PagingStyle,
    SeekPaginator,
    SinglePagePaginator,
    paginator_for,
)
from shared.partner_center import PartnerCenterClient
from shared.partner_center_errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PaginationLoopError,
    PartnerCenterError,
    ServiceError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from shared.transport import Action, RetryPolicy, parse_retry_after, resolve
from tests.fakes.partner_center import (
    BASE,
    FakePartnerCenter,
    FakeTokenSource,
    NoSleep,
    ScriptedSession,
    fake_customer_id,
    make_client,
    response,
)

OK = {"id": "x"}


# -- headers and URLs ---------------------------------------------------------------------------


def test_headers_and_request_id_reused_on_retry_only():
    session = ScriptedSession(response(503), response(200, OK), response(200, OK))
    client = make_client(session, correlation_id="corr-1")
    client.get_json("/customers/abc")
    client.get_json("/v1/customers/abc")
    first, retry, second = session.sent
    for sent in session.sent:
        assert sent.headers["Authorization"] == "Bearer token-1"
        assert sent.headers["Accept"] == "application/json"
        assert sent.headers["X-Locale"] == "en-US"
        assert sent.headers["MS-CorrelationId"] == "corr-1"
        assert sent.url == f"{BASE}/v1/customers/abc"
    assert first.headers["MS-RequestId"] == retry.headers["MS-RequestId"]
    assert second.headers["MS-RequestId"] != first.headers["MS-RequestId"]


def test_bind_gives_a_new_correlation_id_and_own_counters_sharing_the_session():
    session = ScriptedSession(response(200, OK), response(200, OK))
    client = make_client(session)
    run = client.bind(correlation_id="run-2")
    run.get_json("/customers")
    client.get_json("/customers")
    assert session.sent[0].headers["MS-CorrelationId"] == "run-2"
    assert run.stats.calls == 1 and client.stats.calls == 1


@pytest.mark.parametrize("base", [BASE, BASE + "/", BASE + "/v1", BASE + "/v1/"])
def test_url_for_handles_base_and_relative_links(base):
    client = PartnerCenterClient(base, FakeTokenSource(), session=ScriptedSession())
    assert client.url_for("/customers?size=2") == f"{BASE}/v1/customers?size=2"
    assert client.url_for("/v1/customers?size=2") == f"{BASE}/v1/customers?size=2"
    assert client.url_for("customers") == f"{BASE}/v1/customers"
    assert client.url_for(f"{BASE}/v1/customers") == f"{BASE}/v1/customers"


def test_absolute_link_to_another_origin_is_refused():
    client = make_client(ScriptedSession())
    with pytest.raises(PartnerCenterError, match="another origin"):
        client.url_for("https://evil.example/v1/customers")


# -- paging ---------------------------------------------------------------------------------------


def seek_page(ids, token=None, uri="/customers?size=2&seekOperation=Next", top_level_token=True):
    body = {"totalCount": len(ids), "items": [{"id": i} for i in ids]}
    if token:
        body["links"] = {"next": {"uri": uri, "method": "GET", "headers": [{"key": "MS-ContinuationToken", "value": token}]}}
        if top_level_token:
            body["continuationToken"] = token
    return response(200, body)


def test_seek_paging_follows_next_link_and_headers():
    session = ScriptedSession(
        seek_page(["a", "b"], "t1"),
        seek_page(["c", "d"], "t2", uri="/v1/customers?size=2&seekOperation=Next"),
        seek_page(["e"]),
    )
    client = make_client(session)
    items = [i["id"] for i in client.iter_items(SeekPaginator(PageRequest.of("/customers", {"size": 2})))]
    assert items == ["a", "b", "c", "d", "e"]
    assert "MS-ContinuationToken" not in session.sent[0].headers
    assert session.sent[0].query == {"size": "2"}
    assert session.sent[1].headers["MS-ContinuationToken"] == "t1"
    assert session.sent[1].query == {"size": "2", "seekOperation": "Next"}
    assert session.sent[2].headers["MS-ContinuationToken"] == "t2"
    assert session.sent[2].url.startswith(f"{BASE}/v1/customers?")


def test_top_level_continuation_token_used_when_link_has_no_header():
    page = response(200, {"items": [{"id": "a"}], "continuationToken": "tok",
                          "links": {"next": {"uri": "/customers?seekOperation=Next", "headers": []}}})
    session = ScriptedSession(page, seek_page(["b"]))
    items = list(make_client(session).iter_items(SeekPaginator(PageRequest.of("/customers"))))
    assert len(items) == 2
    assert session.sent[1].headers["MS-ContinuationToken"] == "tok"


def test_offset_paging_follows_links():
    def page(ids, nxt=None):
        body = {"items": [{"id": i} for i in ids]}
        if nxt:
            body["links"] = {"next": {"uri": nxt, "method": "GET", "headers": []}}
        return response(200, body)

    session = ScriptedSession(page(["1", "2"], "/invoices?size=2&offset=2"), page(["3"]))
    client = make_client(session)
    items = list(client.iter_items(OffsetPaginator(PageRequest.of("/invoices", {"size": 2, "offset": 0}))))
    assert [i["id"] for i in items] == ["1", "2", "3"]
    assert session.sent[1].query == {"size": "2", "offset": "2"}


def test_loop_guard_on_repeated_token():
    session = ScriptedSession(seek_page(["a"], "same"), seek_page(["b"], "same"))
    client = make_client(session)
    with pytest.raises(PaginationLoopError, match="loop"):
        list(client.iter_items(SeekPaginator(PageRequest.of("/customers"))))
    assert len(session.sent) == 2


def test_loop_guard_on_link_back_to_the_first_request():
    page = response(200, {"items": [], "links": {"next": {"uri": "/v1/customers", "headers": []}}})
    paginator = NextLinkPaginator(PageRequest.of("/v1/customers"))
    with pytest.raises(PaginationLoopError):
        list(make_client(ScriptedSession(page)).iter_pages(paginator))


def test_stops_without_next_link_and_single_page():
    paginator = SinglePagePaginator(PageRequest.of("/customers/x/subscriptions"))
    session = ScriptedSession(response(200, {"items": [{"id": "s"}], "links": {"next": {"uri": "/ignored"}}}))
    assert len(list(make_client(session).iter_items(paginator))) == 1
    assert paginator.finished and paginator.count == 1


@pytest.mark.parametrize("style, kind", [(PagingStyle.NONE, SinglePagePaginator), ("offset", OffsetPaginator),
                                         (PagingStyle.SEEK, SeekPaginator), ("seek", SeekPaginator)])
def test_paginator_for_takes_the_enum_or_its_value(style, kind):
    paginator = paginator_for(style, PageRequest.of("/customers"))
    assert type(paginator) is kind and paginator.current.path == "/customers"


def test_paginator_for_refuses_an_unknown_style():
    with pytest.raises(ValueError, match=r"unknown paging style 'pages'; expected one of \['none', 'offset', 'seek'\]"):
        paginator_for("pages", PageRequest.of("/x"))


def test_pascal_case_collection_is_read():
    session = ScriptedSession(response(200, {"TotalCount": 1, "Items": [{"Id": "A"}]}))
    items = list(make_client(session).iter_items(SinglePagePaginator(PageRequest.of("/x"))))
    assert items == [{"Id": "A"}]


# -- retry classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, action",
    [(200, Action.SUCCESS), (204, Action.SUCCESS), (400, Action.FAIL), (401, Action.REFRESH_TOKEN),
     (403, Action.FAIL), (404, Action.FAIL), (409, Action.FAIL), (408, Action.RETRY),
     (429, Action.RATE_LIMITED), (500, Action.RETRY), (502, Action.RETRY), (503, Action.RETRY),
     (504, Action.RETRY), (501, Action.FAIL)],
)
def test_resolution_table(status, action):
    assert resolve(response(status)).action is action


@pytest.mark.parametrize("exc", [requests.ConnectionError("reset"), requests.Timeout(),
                                 requests.exceptions.ChunkedEncodingError()])
def test_transport_errors_are_retried(exc):
    assert resolve(exc).action is Action.RETRY


@pytest.mark.parametrize(
    "status, error_type",
    [(400, BadRequestError), (403, ForbiddenError), (404, NotFoundError), (409, ConflictError)],
)
def test_client_errors_not_retried_and_typed(status, error_type):
    fault = {"code": 20002, "description": "The partner id has no commerce relationship", "data": [], "source": "PartnerFD"}
    session = ScriptedSession(response(status, fault))
    with pytest.raises(error_type) as info:
        make_client(session).get_json("/customers/abc/subscriptions")
    err = info.value
    assert len(session.sent) == 1
    assert err.status == status and err.code == "20002"
    assert err.description.startswith("The partner id")
    assert err.request_id == session.sent[0].headers["MS-RequestId"]
    assert err.request_id in str(err)


def test_forbidden_is_a_permission_problem():
    assert issubclass(ForbiddenError, PermissionMissing)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_retried_then_succeeds(status):
    sleep = NoSleep()
    session = ScriptedSession(response(status), response(status), response(200, OK))
    client = make_client(session, sleep=sleep)
    assert client.get_json("/x") == OK
    assert len(session.sent) == 3 and len(sleep.slept) == 2
    assert client.stats.retries == 2 and client.stats.calls == 3


def test_5xx_gives_up_after_bounded_attempts():
    sleep = NoSleep()
    session = ScriptedSession(*[response(503, {"code": 503, "description": "busy"})] * 4)
    with pytest.raises(ServiceError, match="HTTP 503"):
        make_client(session, sleep=sleep, retry=RetryPolicy(max_attempts=4)).get_json("/x")
    assert len(session.sent) == 4 and len(sleep.slept) == 3


def test_backoff_is_jittered_exponential_and_capped():
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4)
    rng = random.Random(7)
    waits = [[policy.backoff(a, rng) for _ in range(200)] for a in (1, 2, 3, 6)]
    assert max(waits[0]) <= 0.5 and max(waits[1]) <= 1.0 and max(waits[2]) <= 2.0 and max(waits[3]) <= 4.0
    assert len(set(waits[3])) > 100  # jitter


@pytest.mark.parametrize("exc", [requests.ConnectionError("Connection reset by peer"), requests.ReadTimeout(),
                                 requests.exceptions.ChunkedEncodingError("IncompleteRead")])
def test_transport_failures_retried(exc):
    session = ScriptedSession(exc, response(200, OK))
    assert make_client(session).get_json("/x") == OK


def test_truncated_json_body_on_2xx_is_retried():
    session = ScriptedSession(response(200, raw=b'{"items": [{"id": "a"'), response(200, OK))
    client = make_client(session)
    assert client.get_json("/x") == OK
    assert client.stats.retries == 1


def test_transport_failure_exhausted_is_typed():
    session = ScriptedSession(*[requests.ConnectionError("reset")] * 3)
    with pytest.raises(TransportError) as info:
        make_client(session, retry=RetryPolicy(max_attempts=3)).get_json("/x")
    assert isinstance(info.value.__cause__, requests.ConnectionError)


# -- 429 and Retry-After ----------------------------------------------------------------------------


def test_429_honours_retry_after():
    sleep = NoSleep()
    session = ScriptedSession(response(429, {"statusCode": 429, "message": "Rate limit is exceeded."},
                                       headers={"Retry-After": "7"}), response(200, OK))
    client = make_client(session, sleep=sleep)
    assert client.get_json("/x") == OK
    assert 7 <= sleep.slept[0] <= 7.25
    assert client.stats.throttled == 1


def test_retry_after_is_capped():
    sleep = NoSleep()
    session = ScriptedSession(response(429, headers={"Retry-After": "3600"}), response(200, OK))
    make_client(session, sleep=sleep, retry=RetryPolicy(retry_after_cap=60)).get_json("/x")
    assert sleep.slept[0] <= 60.25


def test_429_without_retry_after_backs_off():
    sleep = NoSleep()
    session = ScriptedSession(response(429), response(200, OK))
    make_client(session, sleep=sleep, retry=RetryPolicy(retry_after_default=2)).get_json("/x")
    assert sleep.slept[0] >= 2


def test_429_exhausted_raises_throttled_with_hint():
    session = ScriptedSession(*[response(429, {"statusCode": 429, "message": "Try again in 5 seconds."},
                                         headers={"Retry-After": "5"})] * 3)
    with pytest.raises(ThrottledError) as info:
        make_client(session, retry=RetryPolicy(max_attempts=3)).get_json("/x")
    assert info.value.retry_after == 5 and info.value.status == 429
    assert "Try again in 5 seconds" in str(info.value)


@pytest.mark.parametrize("value, expected", [("57", 57.0), ("0", 0.0), ("1.5", 1.5), ("garbage", None), (None, None)])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    assert parse_retry_after("Tue, 21 Jul 2020 04:11:58 GMT", now=1595304658.0) == pytest.approx(60.0)


# -- 401 ---------------------------------------------------------------------------------------------


def test_401_refreshes_the_token_once():
    tokens = FakeTokenSource()
    session = ScriptedSession(response(401), response(200, OK), response(200, OK))
    client = make_client(session, tokens=tokens)
    assert client.get_json("/x") == OK
    assert tokens.calls.count(True) == 1
    assert session.sent[0].headers["Authorization"] == "Bearer token-1"
    assert session.sent[1].headers["Authorization"] == "Bearer token-2"
    client.get_json("/y")  # the refreshed token is reused
    assert session.sent[2].headers["Authorization"] == "Bearer token-2"


def test_second_401_is_an_error():
    tokens = FakeTokenSource()
    session = ScriptedSession(response(401, reason="Unauthorized - MFA required"), response(401))
    with pytest.raises(UnauthorizedError):
        make_client(session, tokens=tokens).get_json("/x")
    assert tokens.calls.count(True) == 1 and len(session.sent) == 2


def test_consent_required_from_the_token_source_propagates_without_a_call():
    session = ScriptedSession()
    with pytest.raises(ConsentRequired):
        make_client(session, tokens=FakeTokenSource(consent_error=True)).get_json("/x")
    assert session.sent == []


# -- defensive parsing -------------------------------------------------------------------------------


def test_defensive_helpers():
    item = {"CompanyProfile": {"CompanyName": "Contoso"}, "Quantity": "5", "AutoRenewEnabled": "true"}
    assert get_path(item, "companyProfile", "companyName") == "Contoso"
    assert as_int(get_path(item, "quantity")) == 5 and as_int("5.0") == 5 and as_int("n/a") is None
    assert as_bool(get_path(item, "autoRenewEnabled")) is True and as_bool("maybe") is None


# -- call budget --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_budget_sleeps_before_exceeding_the_partner_window():
    clock = FakeClock()
    budget = CallBudget(partner_limit=3, window=60, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert budget.acquire() == 0
        clock.now += 1
    waited = budget.acquire()
    assert waited == pytest.approx(57)  # the first call leaves the window at t=1060
    assert budget.in_window() == 3


def test_budget_per_customer_window_is_separate():
    clock = FakeClock()
    budget = CallBudget(partner_limit=100, customer_limit=2, window=60, clock=clock, sleep=clock.sleep)
    budget.acquire("a")
    budget.acquire("a")
    assert budget.acquire("b") == 0  # another customer is not held back
    assert budget.acquire("a") == pytest.approx(60)
    assert budget.in_window("a") == 1  # both earlier calls left the window at t=1060


def test_budget_counts_retries_and_waits_inside_the_client():
    clock = FakeClock()
    budget = CallBudget(partner_limit=2, window=60, clock=clock, sleep=clock.sleep)
    session = ScriptedSession(response(503), response(200, OK), response(200, OK))
    client = make_client(session, budget=budget, sleep=clock.sleep, retry=RetryPolicy(backoff_base=0.01))
    client.get_json("/x")
    client.get_json("/y")
    assert clock.now >= 1060  # the third send waited for the window
    assert client.stats.budget_wait_s > 50


def test_budget_is_thread_safe():
    import threading

    budget = CallBudget(partner_limit=10_000)
    threads = [threading.Thread(target=lambda: [budget.acquire("c") for _ in range(200)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.in_window() == 1600 and budget.in_window("c") == 1600


def test_fake_partner_center_pages_customers():
    pc = FakePartnerCenter(customers=5, page_size=2)
    client = make_client(pc)

    items = list(client.iter_items(SeekPaginator(PageRequest.of("/customers", {"size": 2}))))
    assert [i["id"] for i in items] == [fake_customer_id(n) for n in range(5)]
