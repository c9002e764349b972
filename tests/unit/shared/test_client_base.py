"""What the two HTTP clients share: transport options, views, the same-origin rule, the errors' base."""
from __future__ import annotations

import pytest

from shared.checks import Check, CheckStatus, fail, ok
from shared.graph_billing import GraphBillingClient
from shared.graph_billing_errors import ExportFailed, GraphBillingError
from shared.partner_center import PartnerCenterClient
from shared.partner_center_errors import PartnerCenterError, ThrottledError
from shared.transport import RetryPolicy
from tests.fakes.partner_center import BASE, FakeTokenSource, NoSleep, ScriptedSession

GRAPH = "https://graph.example.test"


def test_transport_options_reach_the_one_transport_with_each_clients_pool_default():
    retry, sleep, session = RetryPolicy(max_attempts=2), NoSleep(), ScriptedSession()
    pc = PartnerCenterClient(BASE, FakeTokenSource(), session=session, retry=retry, sleep=sleep)
    graph = GraphBillingClient(GRAPH, FakeTokenSource(), session=session, retry=retry, sleep=sleep)
    for client in (pc, graph):
        assert client._transport.session is session and client._transport.retry is retry
        assert client._transport.sleep is sleep
    assert pc.budget is not None  # a Partner Center client always waits on a call budget
    assert graph._transport.budget is None
    with pytest.raises(TypeError):
        PartnerCenterClient(BASE, FakeTokenSource(), sesion=session)  # a misspelt option is refused


def test_views_share_the_transport_and_count_on_their_own():
    pc = PartnerCenterClient(BASE, FakeTokenSource(), session=ScriptedSession(), correlation_id="run-0")
    view = pc.bind(correlation_id="run-1")
    assert view._transport is pc._transport and view.stats is not pc.stats
    assert (pc.correlation_id, view.correlation_id) == ("run-0", "run-1")
    assert pc.bind().correlation_id == "run-0"
    graph = GraphBillingClient(GRAPH, FakeTokenSource(), session=ScriptedSession(), poll_timeout=5.0)
    graph_view = graph.bind()
    assert graph_view._transport is graph._transport and graph_view._poll_timeout == 5.0
    assert graph_view.stats is not graph.stats


def test_the_token_goes_to_the_configured_origin_only():
    pc = PartnerCenterClient(BASE, FakeTokenSource(), session=ScriptedSession())
    assert pc.url_for(BASE + "/v1/customers?size=1") == BASE + "/v1/customers?size=1"
    with pytest.raises(PartnerCenterError, match="another origin"):
        pc.url_for("https://elsewhere.example.test/v1/customers")


def test_error_fields_are_keywords_with_none_until_given():
    error = ThrottledError("slow down", status=429, retry_after=3.0, path="/v1/customers")
    assert (error.status, error.retry_after, error.path, error.code, error.request_id) == (
        429, 3.0, "/v1/customers", None, None)
    assert str(error) == "slow down"
    failed = ExportFailed("no data", code="5000", url=GRAPH + "/op")
    assert failed.no_data and failed.url == GRAPH + "/op" and failed.status is None
    with pytest.raises(TypeError, match="no field 'url'"):
        PartnerCenterError("x", url="https://example.test")
    with pytest.raises(TypeError, match="no field 'path'"):
        GraphBillingError("x", path="/v1")


def test_one_check_type_in_the_doctors_and_verifys_forms():
    passed, failed = ok("tokens", "access token issued"), fail("roles", "roles=(none)", "grant the role")
    assert passed == Check("tokens", CheckStatus.OK, "access token issued")
    assert (passed.passed, failed.passed, failed.failed) == (True, False, True)
    assert failed.to_json() == {"name": "roles", "status": "FAIL", "evidence": "roles=(none)", "fix": "grant the role"}
    assert failed.verdict_json() == {"name": "roles", "passed": False, "evidence": "roles=(none)",
                                     "fix": "grant the role"}
