"""Consent, tokens and Verify Connectivity against the simulator with the real msal and the real
Key Vault SecretClient over HTTPS, and Azurite for tables.

The simulator is shared by the whole session: every test uses its own provider id (so its own
Key Vault secret) and puts back what it changes (roles, permissions, clock).
"""
import contextlib
import datetime as dt
import io
import logging
import re
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from auth.consent import CONSENT_FLOWS_TABLE
from shared.errors import ConsentRequired
from shared.providers import PROVIDERS_TABLE
from tests.fakes.auth import ManualClock

TOKEN_CALLS = "POST /{id}/oauth2/v2.0/token"


@pytest.fixture
def provider_id(sim_runtime, simulator):
    provider_id = f"p-{uuid.uuid4().hex[:10]}"
    sim_runtime.providers.put_provider(provider_id, {
        "name": "Northwind Partner Center", "countryCode": "US", "currencyCode": "USD",
        "tenantId": simulator.tenant_id, "costManagement": True,
    })
    yield provider_id


def callback_params(redirect: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(redirect).query, keep_blank_values=True))


def consent(runtime, simulator, provider_id, *, mfa=True, clock=None, before_callback=None):
    """Link -> simulated sign-in -> callback. Returns (outcome, link, redirect)."""
    service = runtime.derive(clock=clock).consent if clock else runtime.consent
    link = service.create_link(provider_id)
    redirect = simulator.control.sign_in(link.url, mfa)
    if before_callback:
        redirect = before_callback(redirect) or redirect
    outcome = service.complete(callback_params(redirect), callback_url=redirect)
    return outcome, link, redirect


def stored_text(runtime) -> str:
    """Everything in the tables auth/ writes, as one string."""
    rows = list(runtime.tables.table(PROVIDERS_TABLE).list_entities())
    rows += list(runtime.tables.table(CONSENT_FLOWS_TABLE).list_entities())
    return repr(rows)


def token_calls(simulator) -> int:
    return simulator.control.calls().get(TOKEN_CALLS, {}).get("count", 0)


@contextlib.contextmanager
def simulator_clock_restored(simulator):
    before = simulator.control.now()
    try:
        yield
    finally:
        simulator.control.set_clock(before)


# -- consent -----------------------------------------------------------------------------------

def test_consent_with_mfa_stores_the_refresh_token_only_in_key_vault(sim_runtime, simulator, provider_id):
    outcome, link, redirect = consent(sim_runtime, simulator, provider_id)
    assert (outcome.succeeded, outcome.status, outcome.reason) == (True, 200, "ok")

    query = callback_params(link.url)
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["prompt"] == "select_account" and query["response_mode"] == "form_post" and query["state"]
    assert set(query["scope"].split()) >= {"https://api.partnercenter.microsoft.com/user_impersonation",
                                           "offline_access"}
    assert link.url.startswith(f"{simulator.authority_host}/{simulator.tenant_id}/")

    provider = sim_runtime.providers.get_provider(provider_id)
    assert provider.consent_status == "active" and provider.consented_upn == simulator.integration_user
    assert provider.consented_oid and provider.consented_at and provider.refresh_token_expires_at
    refresh_token = sim_runtime.secrets.get_secret(provider.refresh_token_secret_name)
    assert refresh_token and refresh_token not in stored_text(sim_runtime)
    assert refresh_token not in outcome.message
    code = callback_params(redirect)["code"]
    assert code not in stored_text(sim_runtime)


def test_later_link_uses_the_consented_user_as_login_hint(sim_runtime, simulator, provider_id):
    consent(sim_runtime, simulator, provider_id)
    link = sim_runtime.consent.create_link(provider_id)
    assert callback_params(link.url)["login_hint"] == simulator.integration_user


def _nothing_stored(runtime, provider_id, status="pending"):
    provider = runtime.providers.get_provider(provider_id)
    assert runtime.secrets.find_secret(provider.refresh_token_secret_name) is None
    assert provider.consent_status == status and provider.consented_upn is None


def test_sign_in_without_mfa_is_refused_and_stores_nothing(sim_runtime, simulator, provider_id):
    outcome, _, _ = consent(sim_runtime, simulator, provider_id, mfa=False)
    assert (outcome.succeeded, outcome.reason, outcome.status) == (False, "mfa_missing", 403)
    assert "MFA must be enabled" in outcome.message and "every sign-in" in outcome.message
    _nothing_stored(sim_runtime, provider_id)


def test_declined_consent_is_refused_and_stores_nothing(sim_runtime, simulator, provider_id):
    outcome, _, redirect = consent(sim_runtime, simulator, provider_id, mfa="decline")
    assert callback_params(redirect)["error"] == "access_denied"
    assert (outcome.reason, outcome.status) == ("declined", 400)
    _nothing_stored(sim_runtime, provider_id)


def test_replayed_state_is_refused(sim_runtime, simulator, provider_id):
    outcome, _, redirect = consent(sim_runtime, simulator, provider_id)
    assert outcome.succeeded
    secret_name = sim_runtime.providers.get_provider(provider_id).refresh_token_secret_name
    stored = sim_runtime.secrets.get_secret(secret_name)
    calls = token_calls(simulator)
    replay = sim_runtime.consent.complete(callback_params(redirect), callback_url=redirect)
    assert (replay.succeeded, replay.reason) == (False, "used_state")
    assert token_calls(simulator) == calls and sim_runtime.secrets.get_secret(secret_name) == stored


def test_expired_state_is_refused_and_stores_nothing(sim_runtime, simulator, provider_id):
    clock = ManualClock(dt.datetime.now(dt.timezone.utc))
    outcome, _, _ = consent(sim_runtime, simulator, provider_id, clock=clock,
                            before_callback=lambda redirect: clock.advance(minutes=16) and None)
    assert (outcome.reason, outcome.status) == ("expired_state", 400) and "expired" in outcome.message
    _nothing_stored(sim_runtime, provider_id)


def _replace_param(redirect: str, name: str, value: str) -> str:
    params = callback_params(redirect)
    params[name] = value
    parts = urlsplit(redirect)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(params)}"


def test_tampered_state_is_refused_and_stores_nothing(sim_runtime, simulator, provider_id):
    outcome, _, _ = consent(sim_runtime, simulator, provider_id,
                            before_callback=lambda r: _replace_param(r, "state", callback_params(r)["state"] + "x"))
    assert (outcome.reason, outcome.status) == ("unknown_state", 400)
    _nothing_stored(sim_runtime, provider_id)


def test_tampered_code_is_refused_by_entra_and_stores_nothing(sim_runtime, simulator, provider_id):
    outcome, _, _ = consent(sim_runtime, simulator, provider_id,
                            before_callback=lambda r: _replace_param(r, "code", "forged-code"))
    assert (outcome.reason, outcome.status) == ("token_error", 400) and "invalid_grant" in outcome.message
    _nothing_stored(sim_runtime, provider_id)


# -- verify ------------------------------------------------------------------------------------

def test_verify_passes_with_full_setup_and_reports_each_missing_role(sim_runtime, simulator, provider_id):
    consent(sim_runtime, simulator, provider_id)
    verify = sim_runtime.verify
    report = verify.verify(provider_id)
    assert report.passed, report.to_json()
    assert [c.name for c in report.checks] == ["token_refresh", "mfa_claim", "tenant_matches",
                                              "organization_profile", "customers_read", "invoices_read",
                                              "app_only_access", "mfa_compliance", "graph_billing_permission"]
    stored = sim_runtime.providers.get_provider(provider_id)
    assert stored.verified_at and '"passed": true' in stored.verify_result

    roles = simulator.control.integration_user()["roles"]
    permissions = simulator.control.app_permissions()["graph_application"]
    try:
        simulator.control.set_integration_user(roles=["BillingAdmin"])
        report = verify.verify(provider_id)
        assert [c.name for c in report.checks if not c.passed] == ["customers_read"]
        assert "Sales Agent" in report.check("customers_read").fix
        assert report.check("customers_read").evidence.startswith("HTTP 403")

        simulator.control.set_integration_user(roles=["SalesAgent"])
        report = verify.verify(provider_id)
        assert [c.name for c in report.checks if not c.passed] == ["invoices_read"]
        assert "Billing Admin" in report.check("invoices_read").fix

        simulator.control.set_integration_user(roles=roles)
        simulator.control.set_app_permissions(graph_application=[])
        report = verify.verify(provider_id)
        assert [c.name for c in report.checks if not c.passed] == ["graph_billing_permission"]
        assert '"passed": false' in sim_runtime.providers.get_provider(provider_id).verify_result
    finally:
        simulator.control.set_integration_user(roles=roles)
        simulator.control.set_app_permissions(graph_application=permissions)


def test_verify_before_consent_says_what_to_do(sim_runtime, simulator, provider_id):
    report = sim_runtime.verify.verify(provider_id)
    check = report.check("token_refresh")
    assert not check.passed and check.evidence == "consent none" and "consent link" in check.fix


# -- tokens ------------------------------------------------------------------------------------

def test_refresh_rotates_the_stored_token_and_caches_the_access_token(sim_runtime, simulator, provider_id):
    consent(sim_runtime, simulator, provider_id)
    provider = sim_runtime.providers.get_provider(provider_id)
    first_rt = sim_runtime.secrets.get_secret(provider.refresh_token_secret_name)
    tokens = sim_runtime.tokens.for_provider(provider)
    calls = token_calls(simulator)
    token = tokens.access_token()
    assert tokens.access_token() == token and token_calls(simulator) == calls + 1
    second_rt = sim_runtime.secrets.get_secret(provider.refresh_token_secret_name)
    assert second_rt != first_rt
    tokens.access_token(force_refresh=True)
    assert sim_runtime.secrets.get_secret(provider.refresh_token_secret_name) not in (first_rt, second_rt)
    assert tokens.graph_token()


def test_expired_refresh_token_marks_provider_expired_and_stops_calling_entra(sim_runtime, simulator, provider_id):
    consent(sim_runtime, simulator, provider_id)
    tokens = sim_runtime.tokens.for_provider(sim_runtime.providers.get_provider(provider_id))
    with simulator_clock_restored(simulator):
        simulator.control.advance_clock(days=91)
        with pytest.raises(ConsentRequired) as caught:
            tokens.access_token()
        assert (caught.value.provider_id, caught.value.status) == (provider_id, "expired")
        provider = sim_runtime.providers.get_provider(provider_id)
        assert provider.consent_status == "expired" and "AADSTS700082" in provider.consent_error
        calls = token_calls(simulator)
        for _ in range(2):
            with pytest.raises(ConsentRequired):
                tokens.access_token(force_refresh=True)
        # a fresh process (new TokenProvider) does not ask Entra either
        sim_runtime.forget_provider_state(provider_id)
        with pytest.raises(ConsentRequired):
            sim_runtime.tokens.for_provider(provider).access_token()
        assert token_calls(simulator) == calls
    # consenting again makes the provider usable
    outcome, _, _ = consent(sim_runtime, simulator, provider_id)
    assert outcome.succeeded
    provider = sim_runtime.providers.get_provider(provider_id)
    assert provider.consent_status == "active" and provider.consent_error is None
    assert sim_runtime.tokens.for_provider(provider).access_token()


def test_revoked_refresh_token_marks_provider_revoked(sim_runtime, simulator, provider_id):
    consent(sim_runtime, simulator, provider_id)
    tokens = sim_runtime.tokens.for_provider(sim_runtime.providers.get_provider(provider_id))
    simulator.control.revoke_refresh_tokens()
    with pytest.raises(ConsentRequired) as caught:
        tokens.access_token()
    assert caught.value.status == "revoked"
    assert sim_runtime.providers.get_provider(provider_id).consent_status == "revoked"


# -- logs --------------------------------------------------------------------------------------

def test_no_token_or_secret_value_appears_in_any_log_output(sim_runtime, simulator, provider_id):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    secrets = [simulator.client_secret]
    try:
        outcome, _, redirect = consent(sim_runtime, simulator, provider_id)
        assert outcome.succeeded
        secrets.append(callback_params(redirect)["code"])
        provider = sim_runtime.providers.get_provider(provider_id)
        secrets.append(sim_runtime.secrets.get_secret(provider.refresh_token_secret_name))
        refused, _, refused_redirect = consent(sim_runtime, simulator, provider_id, mfa=False)
        assert not refused.succeeded
        secrets.append(callback_params(refused_redirect)["code"])
        tokens = sim_runtime.tokens.for_provider(provider)
        secrets.append(tokens.access_token())
        secrets.append(sim_runtime.secrets.get_secret(provider.refresh_token_secret_name))
        secrets.append(tokens.graph_token())
        sim_runtime.verify.verify(provider_id)
        secrets.append(sim_runtime.secrets.get_secret(provider.refresh_token_secret_name))
        logging.getLogger("test").error("an accident: %s", secrets[-1])  # even explicit logging is masked
        with simulator_clock_restored(simulator):
            simulator.control.advance_clock(days=91)
            with pytest.raises(ConsentRequired):
                tokens.access_token(force_refresh=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    assert "consent completed" in text and "AADSTS700082" in text  # the flows did log
    assert len(text) > 1000
    for value in secrets:
        assert value and value not in text
    assert "sim.rt." not in text  # no simulator refresh token at all, not just the ones read back
    # no JWT-shaped string (base64url JSON header "." base64url JSON payload) either
    assert not re.search(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+", text)


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_consent_link_and_verify(sim_runtime, simulator, provider_id, capsys):
    import json

    from cli import build_parser

    args = build_parser().parse_args(["consent-link", "--provider", provider_id, "--json"])
    assert args.handler(args, sim_runtime) == 0
    link = json.loads(capsys.readouterr().out)
    assert link["providerId"] == provider_id and "private" in " ".join(link["instructions"])

    args = build_parser().parse_args(["verify", "--provider", provider_id])
    assert args.handler(args, sim_runtime) == 1  # no consent yet
    out = capsys.readouterr().out
    assert "token_refresh" in out and "FAIL" in out

    redirect = simulator.control.sign_in(link["consentUrl"], True)
    assert sim_runtime.consent.complete(callback_params(redirect), callback_url=redirect).succeeded
    args = build_parser().parse_args(["verify", "--provider", provider_id, "--json"])
    assert args.handler(args, sim_runtime) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True

    args = build_parser().parse_args(["consent-link", "--provider", provider_id])
    assert args.handler(args, sim_runtime) == 0
    out = capsys.readouterr().out
    assert simulator.authority_host in out and "Billing Admin" in out


# -- transient failures ----------------------------------------------------------------------

@contextlib.contextmanager
def entra_faults(simulator, **knobs):
    before = simulator.control.faults()
    simulator.control.set_faults(fault_services=["entra"], **knobs)
    try:
        yield
    finally:
        simulator.control.set_faults(**{k: before[k] for k in ("fault_services", *knobs)})


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr("auth.entra.TOKEN_HTTP_BACKOFF", 0.02)


def test_token_endpoint_5xx_is_retried_a_bounded_number_of_times(sim_runtime, simulator, provider_id, quick_backoff):
    from auth.entra import TOKEN_HTTP_RETRIES, IdentityProviderUnavailable

    consent(sim_runtime, simulator, provider_id)
    tokens = sim_runtime.tokens.for_provider(sim_runtime.providers.get_provider(provider_id))
    tokens.access_token()  # msal client built, discovery done
    calls = token_calls(simulator)
    with entra_faults(simulator, fault_5xx=1.0):
        with pytest.raises(IdentityProviderUnavailable):
            tokens.access_token(force_refresh=True)
    assert token_calls(simulator) == calls + 1 + TOKEN_HTTP_RETRIES
    assert sim_runtime.providers.get_provider(provider_id).consent_status == "active"
    # msal replays the last 5xx to the same client for 5 s (its service protection); a new
    # client, like the next invocation in a fresh worker, goes straight through
    sim_runtime.forget_provider_state(provider_id)
    assert sim_runtime.tokens.for_provider(sim_runtime.providers.get_provider(provider_id)).access_token()


def test_connection_resets_are_retried_too(sim_runtime, simulator, provider_id, quick_backoff):
    from auth.entra import IdentityProviderUnavailable

    consent(sim_runtime, simulator, provider_id)
    tokens = sim_runtime.tokens.for_provider(sim_runtime.providers.get_provider(provider_id))
    tokens.access_token()
    with entra_faults(simulator, fault_reset=1.0):
        with pytest.raises(IdentityProviderUnavailable):
            tokens.access_token(force_refresh=True)
    assert tokens.access_token(force_refresh=True)


def test_a_new_link_for_a_consented_provider_does_not_stop_its_sync(sim_runtime, simulator, provider_id):
    """Issue 9 point 12. Before: the link set the provider `pending` and the customers timer
    skipped it ("consent pending") until someone completed the new link."""
    outcome, _, _ = consent(sim_runtime, simulator, provider_id)
    assert outcome.succeeded
    old_token = sim_runtime.secrets.find_secret(sim_runtime.providers.get_provider(provider_id).refresh_token_secret_name)
    sim_runtime.consent.create_link(provider_id)  # a link nobody uses (yet)
    provider = sim_runtime.providers.get_provider(provider_id)
    assert provider.consent_status == "active" and provider.consent_pending_since
    [run] = [o for o in sim_runtime.sync.sync_all_providers() if o.provider_id == provider_id]
    assert run.outcome == "succeeded" and run.customers_enqueued > 0

    outcome, _, _ = consent(sim_runtime, simulator, provider_id)  # completing a new link replaces the token
    assert outcome.succeeded
    provider = sim_runtime.providers.get_provider(provider_id)
    assert provider.consent_status == "active" and provider.consent_pending_since is None
    assert sim_runtime.secrets.find_secret(provider.refresh_token_secret_name) != old_token
