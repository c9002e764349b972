"""MFA and token health on the Partner Center client (issue 11): 900421 in both forms, 900309,
the cause recorded on the token source, and which calls send the app-only token."""
from __future__ import annotations

import pytest

from shared.errors import ConditionalAccessBlocked, MfaRequired, QueueAction, TokenRefused, edge_rule
from shared.partner_center_errors import (
    ConditionalAccessBlockedError,
    ForbiddenError,
    MfaRequiredError,
    UnauthorizedError,
)
from shared.providers import ProviderConnection
from shared.token_choice import needs_app_user
from shared.token_health import TokenHealth, describe, partner_center_code
from tests.fakes.partner_center import FakeTokenSource, ScriptedSession, make_client, response

MFA_BODY = {"code": 900421, "description": "Multi-factor authentication is required", "data": [],
            "source": "PartnerFD"}


class AppAndUserTokens(FakeTokenSource):
    """A token source with the app-only extras of auth's TokenProvider."""

    def __init__(self):
        super().__init__()
        self.app_calls: list[bool] = []
        self.refused: list[Exception] = []

    def app_access_token(self, *, force_refresh: bool = False) -> str:
        self.app_calls.append(force_refresh)
        return "app-token"

    def token_refused(self, error: Exception) -> None:
        self.refused.append(error)


def test_900421_fails_as_mfa_required_after_one_refresh():
    session = ScriptedSession(response(401, MFA_BODY), response(401, MFA_BODY))
    tokens = AppAndUserTokens()
    client = make_client(session, tokens=tokens)
    with pytest.raises(MfaRequiredError) as raised:
        client.get_json("/invoices/G000000001")  # invoice by id: App+User only
    error = raised.value
    assert isinstance(error, UnauthorizedError) and isinstance(error, MfaRequired)
    assert error.code == "900421" and error.health == TokenHealth.MFA_REQUIRED
    assert "trusted-location" in str(error) and "amr" in str(error)
    assert tokens.calls == [False, True, False] and tokens.refused == [error]
    assert [s.headers["Authorization"] for s in session.sent] == ["Bearer token-1", "Bearer token-2"]


def test_2019_form_is_the_same_error():
    legacy = response(401, reason="Unauthorized - MFA required")
    session = ScriptedSession(legacy, response(401, reason="Unauthorized - MFA required"))
    with pytest.raises(MfaRequiredError) as raised:
        make_client(session).get_json("/profiles/organization")
    assert raised.value.code == "900421"
    assert partner_center_code(401, None, "Unauthorized - MFA required") == "900421"
    assert partner_center_code(401, None, "Unauthorized") is None


def test_900309_is_conditional_access_blocked_without_retry():
    body = {"code": 900309, "description": "Access has been blocked by Conditional Access policies."}
    session = ScriptedSession(response(403, body))
    tokens = AppAndUserTokens()
    with pytest.raises(ConditionalAccessBlockedError) as raised:
        make_client(session, tokens=tokens).get_json("/customers/abc/agreements")
    assert isinstance(raised.value, ForbiddenError) and isinstance(raised.value, ConditionalAccessBlocked)
    assert "Conditional Access policy" in str(raised.value) and len(session.sent) == 1
    assert tokens.refused == [raised.value]


def test_plain_401_is_not_mfa():
    session = ScriptedSession(response(401, {"code": 400, "description": "Access denied"}),
                              response(401, {"code": 400, "description": "Access denied"}))
    with pytest.raises(UnauthorizedError) as raised:
        make_client(session).get_json("/profiles/organization")
    assert not isinstance(raised.value, TokenRefused)


def test_token_refusals_are_dropped_not_redelivered():
    for error in (MfaRequiredError("mfa", status=401, code="900421"),
                  ConditionalAccessBlockedError("ca", status=403, code="900309")):
        rule = edge_rule(error)
        assert (rule.status, rule.queue) == (409, QueueAction.DROP)


@pytest.mark.parametrize("method,path,app_user", [
    ("GET", "/v1/customers?size=100", False), ("GET", "/customers/abc/subscriptions", False),
    ("PATCH", "/v1/customers/abc/subscriptions/def", False), ("GET", "/v1/invoices", False),
    ("GET", "/v1/invoices/G001/lineitems/onetime/billinglineitems", False),
    ("GET", "/v1/invoices/unbilled/lineitems", False), ("POST", "/v1/attestations/enhanced", False),
    ("GET", "/v1/invoices/G001", True), ("GET", "/v1/invoices/G001/documents/statement", True),
    ("GET", "/v1/customers/abc/agreements?agreementType=MicrosoftCustomerAgreement", True),
    ("POST", "/v1/customers/abc/agreements", True), ("GET", "/v1/agreements?agreementType=x", True),
    ("GET", "/v1/profiles/organization", True), ("GET", "/v1/profiles/legalbusiness", False),
    ("GET", "/v1/customers/relationshiprequests", True), ("GET", "/v1/applicationmfaadoptionstatus", True),
])
def test_which_calls_need_app_user(method, path, app_user):
    assert needs_app_user(method, path) is app_user


def test_app_only_calls_send_the_app_token_and_fall_back_once_refused():
    session = ScriptedSession(response(200, {"items": []}), response(200, {"id": "G1"}),
                              response(401, {"code": 400, "description": "Access denied"}),
                              response(200, {"items": []}), response(200, {"items": []}))
    tokens = AppAndUserTokens()
    client = make_client(session, tokens=tokens)
    client.get_json("/customers")
    client.get_json("/invoices/G1")
    client.get_json("/customers")  # 401 to the app-only token: the App+User token from now on
    client.get_json("/customers")
    sent = [s.headers["Authorization"] for s in session.sent]
    assert sent == ["Bearer app-token", "Bearer token-1", "Bearer app-token", "Bearer token-1", "Bearer token-1"]


def test_provider_consent_json_names_cause_and_fix():
    provider = ProviderConnection(id="p1", name="P", tenant_id="t", country_code="US", currency_code="USD",
                                  token_health="mfa_required", token_health_at="2026-06-10T00:00:00Z")
    consent = provider.to_json()["consent"]
    assert consent["tokenHealth"] == "mfa_required" and "900421" in consent["cause"]
    assert "trusted-location" in consent["fix"] and consent["tokenHealthAt"] == "2026-06-10T00:00:00Z"
    assert describe("unknown") == (None, None)
    healthy = ProviderConnection(id="p2", name="P", tenant_id="t", country_code="US", currency_code="USD")
    assert healthy.to_json()["consent"]["cause"] is None
