"""Consent service with fakes: state handling, single use, expiry, MFA, what gets stored."""
from dataclasses import replace

import pytest

from auth.consent import CONSENT_FLOWS_TABLE, FLOW_PARTITION, ConsentFlowStore, ConsentService, ProviderIncomplete
from auth.entra import IdentityProviderUnavailable
from tests.fakes.auth import (
    REDIRECT_URI,
    USER_OID,
    USER_UPN,
    FakeConfidentialClient,
    FakeProviders,
    FakeSecrets,
    FakeTable,
    ManualClock,
    error_result,
    make_settings,
    provider,
    token_result,
)
from shared.errors import NotFound, ValidationFailed
from shared.settings import SettingsError

SECRET = "pcsync-refresh-token-contoso"


class World:
    def __init__(self, **provider_overrides):
        self.settings = make_settings()
        self.providers = FakeProviders(provider(**provider_overrides))
        self.secrets = FakeSecrets()
        self.table = FakeTable(CONSENT_FLOWS_TABLE)
        self.client = FakeConfidentialClient()
        self.clock = ManualClock()
        self.tenants: list[str] = []

    def service(self, **settings_overrides):
        settings = make_settings(**settings_overrides) if settings_overrides else self.settings

        def client_for(tenant):
            self.tenants.append(tenant)
            return self.client

        return ConsentService(settings=settings, providers=self.providers, secrets=self.secrets,
                              flows=ConsentFlowStore(self.table), client_for_tenant=client_for, clock=self.clock)

    def link(self, **kwargs):
        return self.service().create_link("contoso", **kwargs)

    def callback(self, params, **kwargs):
        return self.service(**kwargs.pop("settings", {})).complete(params, **kwargs)

    def code_response(self, link=None):
        flow = self.client.flows[-1]
        return {"code": "auth-code-1", "state": flow["state"], "session_state": "s"}

    @property
    def provider(self):
        return self.providers.get_provider("contoso")


@pytest.fixture
def world():
    return World()


def test_link_starts_a_flow_saved_by_state_and_marks_pending(world):
    link = world.link()
    flow = world.client.flows[-1]
    assert link.url == flow["auth_uri"]
    assert flow["kwargs"]["prompt"] == "select_account"
    assert flow["kwargs"]["redirect_uri"] == REDIRECT_URI
    assert flow["scope"] == ["https://api.partnercenter.microsoft.com/user_impersonation"]
    assert world.tenants == [world.provider.tenant_id]
    row = world.table.find_entity(FLOW_PARTITION, flow["state"])
    assert row["provider_id"] == "contoso" and row["tenant_id"] == world.provider.tenant_id
    assert (link.expires_at - world.clock()).total_seconds() == 15 * 60
    assert world.provider.consent_status == "pending"
    assert world.secrets.versions == {}


def test_link_uses_the_known_integration_user_as_login_hint(world):
    world.providers.rows["contoso"] = replace(world.provider, consented_upn=USER_UPN)
    link = world.link()
    assert world.client.flows[-1]["kwargs"]["login_hint"] == USER_UPN and link.login_hint == USER_UPN
    assert world.link(login_hint="other@partner.example").login_hint == "other@partner.example"


def test_link_instructions_tell_the_admin_what_is_required(world):
    text = " ".join(world.link().instructions).lower()
    for phrase in ("private", "integration user", "mfa", "every sign-in", "sales agent", "billing admin"):
        assert phrase in text


def test_link_for_unknown_or_invalid_provider(world):
    with pytest.raises(NotFound):
        world.service().create_link("nobody")
    with pytest.raises(ValidationFailed):
        world.service().create_link("Bad/Id")


def test_link_for_provider_missing_required_fields_names_them(world):
    world.providers.rows["contoso"] = replace(world.provider, tenant_id="", name="")
    with pytest.raises(ProviderIncomplete) as caught:
        world.link()
    assert set(caught.value.problems) == {"tenantId", "name"}
    assert "fill in" in str(caught.value)
    world.providers.rows["contoso"] = replace(world.provider, tenant_id="not-a-guid", name="x")
    with pytest.raises(ProviderIncomplete) as caught:
        world.link()
    assert set(caught.value.problems) == {"tenantId"}
    assert world.table.rows == {} and world.provider.consent_status == "none"


def test_link_needs_the_redirect_uri_setting(world):
    with pytest.raises(SettingsError, match="redirect_uri"):
        world.service(redirect_uri="").create_link("contoso")


def test_mfa_sign_in_stores_refresh_token_only_in_key_vault_and_records_consent(world):
    world.link()
    world.client.code_results.append(token_result(refresh_token="rt-secret-value-1"))
    outcome = world.callback(world.code_response(), callback_url=REDIRECT_URI + "?code=x")
    assert outcome.succeeded and outcome.status == 200 and outcome.reason == "ok"
    assert world.secrets.versions == {SECRET: ["rt-secret-value-1"]}
    p = world.provider
    assert (p.consent_status, p.consented_upn, p.consented_oid) == ("active", USER_UPN, USER_OID)
    assert p.consented_at == p.last_token_refresh == "2025-01-15T09:00:00Z"
    assert p.refresh_token_expires_at == "2025-04-15T09:00:00Z"  # +90 days
    assert "rt-secret-value-1" not in repr(world.providers.rows) + repr(world.table.rows) + outcome.message


def test_flow_row_loses_its_verifier_once_used(world):
    world.link()
    state = world.client.flows[-1]["state"]
    world.callback(world.code_response())
    row = world.table.find_entity(FLOW_PARTITION, state)
    assert row["used_at"] and row["flow"] == ""


def test_replayed_state_is_refused(world):
    world.link()
    params = world.code_response()
    assert world.callback(params).succeeded
    second = world.callback(params)
    assert (second.succeeded, second.reason, second.status) == (False, "used_state", 400)
    assert len(world.client.code_calls) == 1 and len(world.secrets.versions[SECRET]) == 1


def test_expired_state_is_refused_and_nothing_is_redeemed(world):
    world.link()
    world.clock.advance(minutes=15, seconds=1)
    outcome = world.callback(world.code_response())
    assert (outcome.reason, outcome.status) == ("expired_state", 400) and "expired" in outcome.message
    assert world.client.code_calls == [] and world.secrets.versions == {}
    assert world.provider.consent_status == "pending"
    assert world.callback(world.code_response()).reason == "used_state"


def test_state_just_inside_the_lifetime_still_works(world):
    world.link()
    world.clock.advance(minutes=14, seconds=59)
    assert world.callback(world.code_response()).succeeded


@pytest.mark.parametrize("state", ["", "tampered", "x" * 300, "a/b#c?d%e"])
def test_unknown_or_tampered_state_is_refused(world, state):
    world.link()
    outcome = world.callback({"code": "c", "state": state})
    assert (outcome.reason, outcome.status, outcome.succeeded) == ("unknown_state", 400, False)
    assert world.client.code_calls == [] and world.secrets.versions == {}


def test_missing_state_is_refused(world):
    assert world.callback({"code": "c"}).reason == "unknown_state"


def test_sign_in_without_mfa_is_refused_with_the_mfa_message(world):
    world.link()
    world.client.code_results.append(token_result(mfa=False))
    outcome = world.callback(world.code_response())
    assert (outcome.reason, outcome.status) == ("mfa_missing", 403)
    assert "MFA must be enabled" in outcome.message and "every sign-in" in outcome.message
    assert world.secrets.versions == {} and world.provider.consent_status == "pending"


def test_declined_sign_in_is_refused(world):
    world.link()
    state = world.client.flows[-1]["state"]
    outcome = world.callback({"error": "access_denied", "error_description": "AADSTS65004: declined",
                              "state": state})
    assert (outcome.reason, outcome.status) == ("declined", 400) and "access_denied" in outcome.message
    assert world.client.code_calls == [] and world.secrets.versions == {}


def test_redirect_setting_changed_since_the_link_is_refused(world):
    world.link()
    outcome = world.callback(world.code_response(), settings={"redirect_uri": "https://elsewhere.example/cb"})
    assert outcome.reason == "redirect_mismatch" and world.secrets.versions == {}


def test_callback_arriving_on_another_path_is_refused(world):
    world.link()
    outcome = world.callback(world.code_response(), callback_url="https://pcsync.example/api/other?code=x")
    assert outcome.reason == "redirect_mismatch"


def test_callback_on_another_host_but_same_path_is_accepted(world):
    world.link()
    assert world.callback(world.code_response(), callback_url="http://10.0.0.4/api/consent/callback?x").succeeded


def test_msal_csrf_error_is_a_tampered_response(world):
    world.link()
    world.client.code_results.append(ValueError("state mismatch"))
    assert world.callback(world.code_response()).reason == "tampered_state"


def test_entra_refusing_the_code_is_reported_without_storing(world):
    world.link()
    world.client.code_results.append(error_result("invalid_grant", 54005, "code already redeemed"))
    outcome = world.callback(world.code_response())
    assert outcome.reason == "token_error" and "AADSTS54005" in outcome.message
    assert "Trace ID" not in outcome.message and world.secrets.versions == {}


def test_entra_unreachable_gives_503_page(world):
    world.link()
    world.client.code_results.append(IdentityProviderUnavailable("down"))
    assert world.callback(world.code_response()).status == 503


def test_no_refresh_token_is_refused(world):
    world.link()
    world.client.code_results.append(token_result(refresh_token=None))
    assert world.callback(world.code_response()).reason == "no_refresh_token"
    assert world.secrets.versions == {}


def test_provider_deleted_or_tenant_changed_after_link(world):
    world.link()
    params = world.code_response()
    world.providers.rows["contoso"] = replace(world.provider, tenant_id="00000000-0000-0000-0000-000000000001")
    assert world.callback(params).reason == "tenant_changed"
    world.link()
    params = world.code_response()
    del world.providers.rows["contoso"]
    assert world.callback(params).status == 404
    assert world.secrets.versions == {}


def test_new_link_purges_flows_older_than_a_day(world):
    world.link()
    old_state = world.client.flows[-1]["state"]
    world.clock.advance(days=2)
    world.link()
    assert world.table.find_entity(FLOW_PARTITION, old_state) is None
    assert world.table.find_entity(FLOW_PARTITION, world.client.flows[-1]["state"]) is not None
