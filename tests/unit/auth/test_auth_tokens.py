"""TokenProvider with fakes: caching, rotation, invalid_grant classification, transient errors."""
import datetime as dt
import logging
import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from msal.exceptions import MsalServiceError

from auth import tokens as tokens_module
from auth.entra import (
    IdentityProviderUnavailable,
    TokenRequestFailed,
    certificate_credential,
    client_credential,
    error_codes,
    graph_scope,
    http_session,
    partner_center_scope,
)
from tests.fakes.auth import (
    FakeConfidentialClient,
    FakeProviders,
    FakeSecrets,
    ManualClock,
    error_result,
    make_settings,
    provider,
    token_result,
)
from auth.tokens import TokenProvider, TokenProviders, classify_token_error
from shared.errors import (
    Conflict,
    ConsentRequired,
    MfaChallengeRequired,
    MfaRequired,
    RefreshTokenExpired,
    RefreshTokenRevoked,
    SignInBlockedByConditionalAccess,
)

SECRET = "pcsync-refresh-token-contoso"


class World:
    def __init__(self, refresh_token="rt-initial-0001", **provider_overrides):
        self.providers = FakeProviders(provider(consent_status="active", **provider_overrides))
        self.secrets = FakeSecrets({SECRET: refresh_token} if refresh_token else {})
        self.client = FakeConfidentialClient()
        self.clock = ManualClock()
        self.built = 0

        def client_for(tenant):
            self.built += 1
            return self.client

        self.tokens = TokenProvider(provider=self.providers.get_provider("contoso"), settings=make_settings(),
                                    providers=self.providers, secrets=self.secrets, client_for_tenant=client_for,
                                    clock=self.clock)

    @property
    def provider(self):
        return self.providers.get_provider("contoso")


@pytest.fixture
def world():
    return World()


# -- classification ---------------------------------------------------------------------------

@pytest.mark.parametrize("error,code,status", [
    ("invalid_grant", 700082, "expired"),
    ("invalid_grant", 50173, "revoked"),
    ("invalid_grant", 50076, "expired"),
    ("interaction_required", 50079, "expired"),
    ("invalid_grant", 70000, "revoked"),
    ("invalid_grant", 9002313, "revoked"),
])
def test_invalid_grant_means_consent_is_needed(error, code, status):
    classified = classify_token_error(error_result(error, code))
    assert classified is not None and classified[0] == status and f"AADSTS{code}" in classified[1]
    assert "Trace ID" not in classified[1]


@pytest.mark.parametrize("result", [
    error_result("invalid_client", 7000215), error_result("unauthorized_client", 700016),
    error_result("invalid_scope", 70011), {"error": "temporarily_unavailable"},
])
def test_other_errors_are_not_consent_problems(result):
    assert classify_token_error(result) is None


def test_error_codes_fall_back_to_the_description():
    assert error_codes({"error": "invalid_grant", "error_description": "AADSTS700082: expired"}) == (700082,)
    assert error_codes({"error": "x"}) == ()


# -- caching and rotation ---------------------------------------------------------------------

def test_access_token_is_cached_until_five_minutes_before_expiry(world):
    first = world.tokens.access_token()
    assert world.tokens.access_token() == first
    world.clock.advance(minutes=54, seconds=59)
    assert world.tokens.access_token() == first
    world.clock.advance(seconds=1)  # 55 minutes: inside the 5-minute margin of a 60-minute token
    assert world.tokens.access_token() != first
    assert len(world.client.refresh_calls) == 2 and world.built == 1


def test_force_refresh_always_redeems(world):
    first = world.tokens.access_token()
    assert world.tokens.access_token(force_refresh=True) != first
    assert len(world.client.refresh_calls) == 2


def test_each_rotated_refresh_token_is_stored_and_the_newest_is_redeemed_next(world):
    world.client.refresh_results += [token_result(refresh_token="rt-second-0002"),
                                     token_result(refresh_token="rt-third-0003")]
    world.tokens.access_token()
    world.tokens.access_token(force_refresh=True)
    assert world.secrets.versions[SECRET] == ["rt-initial-0001", "rt-second-0002", "rt-third-0003"]
    assert [rt for rt, _ in world.client.refresh_calls] == ["rt-initial-0001", "rt-second-0002"]
    assert world.client.refresh_calls[0][1] == ["https://api.partnercenter.microsoft.com/user_impersonation"]


def test_unchanged_or_absent_refresh_token_writes_no_new_version(world):
    world.client.refresh_results += [token_result(refresh_token="rt-initial-0001"), token_result(refresh_token=None)]
    world.tokens.access_token()
    world.tokens.access_token(force_refresh=True)
    assert world.secrets.versions[SECRET] == ["rt-initial-0001"]


def test_refresh_is_recorded_on_the_provider_row(world):
    world.tokens.access_token()
    assert world.provider.last_token_refresh == "2025-01-15T09:00:00Z"
    assert world.provider.refresh_token_expires_at == "2025-04-15T09:00:00Z"
    assert all("rt-" not in repr(u) for u in world.providers.status_updates)


def test_a_token_rotated_by_another_process_is_picked_up(world):
    world.tokens.access_token()
    world.secrets.set_secret(SECRET, "rt-from-other-process")  # another worker rotated it
    world.tokens.access_token(force_refresh=True)
    assert world.client.refresh_calls[-1][0] == "rt-from-other-process"


def test_threads_share_one_refresh(world):
    world.client.delay = 0.05
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(world.tokens.access_token())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(world.client.refresh_calls) == 1
    assert len(world.secrets.versions[SECRET]) == 2


# -- consent lost ----------------------------------------------------------------------------

@pytest.mark.parametrize("code,status", [(700082, "expired"), (50173, "revoked"), (50076, "expired")])
def test_invalid_grant_marks_the_provider_once_then_fails_fast(world, code, status):
    world.client.refresh_results.append(error_result("invalid_grant", code))
    with pytest.raises(ConsentRequired) as caught:
        world.tokens.access_token()
    assert (caught.value.provider_id, caught.value.status) == ("contoso", status)
    assert world.provider.consent_status == status and f"AADSTS{code}" in world.provider.consent_error
    calls = len(world.client.refresh_calls)
    updates = len(world.providers.status_updates)
    for _ in range(3):
        with pytest.raises(ConsentRequired) as again:
            world.tokens.access_token()
        assert again.value.status == status
    assert len(world.client.refresh_calls) == calls  # Entra not asked again
    assert len(world.providers.status_updates) == updates  # marked once


def test_refused_token_is_retried_once_with_a_newer_stored_one(world):
    def rotate_then_fail(*_):
        world.secrets.set_secret(SECRET, "rt-newer-by-consent")
        return error_result("invalid_grant", 50173)

    world.client.acquire_token_by_refresh_token = _counting(world.client, rotate_then_fail, then=token_result)
    world.tokens.access_token()
    assert [rt for rt, _ in world.client.refresh_calls] == ["rt-initial-0001", "rt-newer-by-consent"]
    assert world.provider.consent_status == "active"


def _counting(client, first, *, then):
    def call(refresh_token, scopes, **kwargs):
        client.refresh_calls.append((refresh_token, scopes))
        return first() if len(client.refresh_calls) == 1 else then()
    return call


def test_no_stored_refresh_token_means_consent_none():
    world = World(refresh_token=None)
    with pytest.raises(ConsentRequired) as caught:
        world.tokens.access_token()
    assert caught.value.status == "none" and world.client.refresh_calls == []


def test_provider_already_marked_expired_is_not_sent_to_entra():
    world = World(consent_error="expired earlier")
    world.providers.rows["contoso"] = replace(world.provider, consent_status="revoked")
    with pytest.raises(ConsentRequired, match="expired earlier"):
        world.tokens.access_token()
    assert world.client.refresh_calls == []


@pytest.mark.parametrize("code,status", [(700082, "expired"), (50173, "revoked")])
def test_a_new_consent_link_after_loss_keeps_entra_out_of_it(world, code, status):
    world.client.refresh_results.append(error_result("invalid_grant", code))
    with pytest.raises(ConsentRequired):
        world.tokens.access_token()
    calls = len(world.client.refresh_calls)
    world.providers.update_status("contoso", consent_status="pending")  # what create_link does
    with pytest.raises(ConsentRequired) as caught:
        world.tokens.access_token()
    assert caught.value.status == status and len(world.client.refresh_calls) == calls


def test_pending_reconsent_keeps_the_old_token_working(world):
    world.providers.rows["contoso"] = replace(world.provider, consent_status="pending")
    assert world.tokens.access_token()


# -- other failures --------------------------------------------------------------------------

@pytest.mark.parametrize("exc", [requests.ConnectionError("refused"), requests.Timeout("slow"),
                                 MsalServiceError("HTTP Error: 503", error=None, error_description=None)])
def test_transient_failures_are_typed_and_do_not_touch_consent(world, exc):
    world.client.refresh_results.append(exc)
    with pytest.raises(IdentityProviderUnavailable):
        world.tokens.access_token()
    assert world.provider.consent_status == "active"
    assert world.tokens.access_token()  # next call tries again


def test_bad_client_secret_is_a_configuration_error(world):
    world.client.refresh_results.append(error_result("invalid_client", 7000215))
    with pytest.raises(TokenRequestFailed) as caught:
        world.tokens.access_token()
    assert caught.value.codes == (7000215,) and world.provider.consent_status == "active"


def test_graph_token_is_app_only(world):
    token = world.tokens.graph_token()
    assert token and world.client.client_calls == [["https://graph.microsoft.com/.default"]]
    assert world.client.refresh_calls == []
    world.client.client_results.append(error_result("invalid_client", 7000215))
    with pytest.raises(TokenRequestFailed):
        world.tokens.graph_token()


def test_invalidate_drops_the_cached_access_token(world):
    world.tokens.access_token()
    world.tokens.invalidate()
    world.tokens.access_token()
    assert len(world.client.refresh_calls) == 2


# -- factory ---------------------------------------------------------------------------------

def test_one_token_provider_per_provider_rebuilt_when_the_tenant_changes_or_forgotten():
    registry = TokenProviders(settings=make_settings(), providers=None, secrets=None, client_for_tenant=None)
    p = provider()
    first = registry.for_provider(p)
    assert registry.for_provider(p) is first
    assert registry.for_provider(provider(id="other")) is not first
    moved = registry.for_provider(replace(p, tenant_id="00000000-0000-0000-0000-000000000002"))
    assert moved is not first and moved.tenant_id == "00000000-0000-0000-0000-000000000002"
    registry.forget(p.id)
    assert registry.for_provider(p) is not moved
    registry.forget("never-seen")  # forgetting an unknown provider is fine



# -- entra plumbing --------------------------------------------------------------------------

def test_scopes_are_resource_ids_not_base_urls():
    settings = make_settings(partner_center_url="https://127.0.0.1:9443/pc", graph_url="https://127.0.0.1:9443/g")
    assert partner_center_scope(settings) == "https://api.partnercenter.microsoft.com/user_impersonation"
    assert graph_scope(settings) == "https://graph.microsoft.com/.default"
    china = make_settings(partner_center_url="https://partner.partnercenterapi.microsoftonline.cn",
                          graph_url="https://microsoftgraph.chinacloudapi.cn")
    assert partner_center_scope(china) == "https://partner.partnercenterapi.microsoftonline.cn/user_impersonation"
    assert graph_scope(china) == "https://microsoftgraph.chinacloudapi.cn/.default"


def test_http_session_ignores_environment_and_retries_transient_failures_boundedly():
    session = http_session(make_settings(ca_bundle="/tmp/ca.pem"))
    assert session.verify == "/tmp/ca.pem" and session.trust_env is False
    retry = session.get_adapter("https://login.example").max_retries
    assert retry.total == 3 and set(retry.status_forcelist) == {500, 502, 503, 504}
    assert "POST" in retry.allowed_methods and retry.respect_retry_after_header is False
    assert http_session(make_settings()).verify is True
    assert http_session(make_settings(), retries=0).get_adapter("https://x").max_retries.total == 0


def _self_signed_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pcsync-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode() + cert.public_bytes(serialization.Encoding.PEM).decode()
    return pem, cert.fingerprint(hashes.SHA1()).hex().upper()


def test_certificate_credential_from_a_key_vault_pem():
    pem, thumbprint = _self_signed_pem()
    credential = certificate_credential(pem)
    assert credential["thumbprint"] == thumbprint
    assert credential["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(Conflict):
        certificate_credential("not a pem")


def test_credential_is_the_certificate_when_configured_else_the_secret():
    pem, thumbprint = _self_signed_pem()
    secrets = FakeSecrets({"pcsync-client-secret": "s3cret-value", "pcsync-client-cert": pem})
    assert client_credential(make_settings(), secrets) == "s3cret-value"
    with_cert = SimpleNamespace(client_certificate_name="pcsync-client-cert", client_secret_name="pcsync-client-secret")
    assert client_credential(with_cert, secrets)["thumbprint"] == thumbprint


def test_tokens_handled_are_masked_in_logs(world, caplog):
    world.client.refresh_results.append(token_result(refresh_token="rt-rotated-secret-9999"))
    token = world.tokens.access_token()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("anything").warning("leak %s and %s and %s", token, "rt-rotated-secret-9999",
                                              "rt-initial-0001")
    assert token not in caplog.text and "rt-rotated-secret-9999" not in caplog.text
    assert "rt-initial-0001" not in caplog.text


def test_module_constants():
    assert tokens_module.REFRESH_TOKEN_LIFETIME == dt.timedelta(days=90)
    assert tokens_module.ACCESS_TOKEN_MARGIN == dt.timedelta(minutes=5)


# -- token health (issue 11) -----------------------------------------------------------------

@pytest.mark.parametrize("error,code,kind,health", [
    ("invalid_grant", 700082, RefreshTokenExpired, "refresh_token_expired"),
    ("invalid_grant", 50173, RefreshTokenRevoked, "refresh_token_revoked"),
    ("interaction_required", 50076, MfaChallengeRequired, "mfa_challenge"),
    ("invalid_grant", 53003, SignInBlockedByConditionalAccess, "conditional_access_blocked"),
])
def test_each_refresh_failure_is_its_own_type_and_cause(world, error, code, kind, health):
    world.client.refresh_results.append(error_result(error, code))
    with pytest.raises(kind):
        world.tokens.access_token()
    assert world.provider.token_health == health and world.provider.token_health_at
    with pytest.raises(kind):  # also when failing fast without asking Entra again
        world.tokens.access_token()
    consent = world.provider.to_json()["consent"]
    assert consent["tokenHealth"] == health and consent["cause"] and consent["fix"]


def test_app_access_token_is_client_credentials_for_partner_center(world):
    token = world.tokens.app_access_token()
    assert world.client.client_calls[-1] == ["https://api.partnercenter.microsoft.com/.default"]
    assert token and world.client.refresh_calls == []


def test_token_refused_records_the_cause(world):
    world.tokens.token_refused(MfaRequired("no mfa"))
    assert world.provider.token_health == "mfa_required"
    assert "trusted-location" in world.provider.to_json()["consent"]["fix"]
