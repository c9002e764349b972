"""MFA and token health against the simulator (issue 11): the sync degrades instead of stopping
(app-only calls go on when App+User calls are refused), each refusal is its own type, the
provider's consent status and Verify Connectivity name the cause and the fix."""
from __future__ import annotations

import pytest

from devservices import register_and_consent
from shared.errors import (
    MfaChallengeRequired,
    RefreshTokenExpired,
    RefreshTokenRevoked,
    SignInBlockedByConditionalAccess,
)
from shared.partner_center_errors import ConditionalAccessBlockedError, MfaRequiredError
from sync.runs import RunOutcome
from tests.support import simulator_runtime

PROVIDER_ID = "health-partner"


@pytest.fixture
def small_sim():
    from simulator.testing import start_simulator

    with start_simulator(customers=4, subscriptions_per_customer=2, invoices=1, line_items_per_invoice=2,
                         rate_limit_per_minute=100_000) as running:
        yield running


@pytest.fixture
def rt(storage, small_sim):
    yield from simulator_runtime(small_sim, storage)


def _consented(rt, sim):
    outcome = register_and_consent(rt, sim, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    return rt.providers.get_provider(PROVIDER_ID)


def _by_stream(results):
    found: dict[str, set] = {}
    for result in results:
        found.setdefault(result.stream, set()).add(result.outcome)
    return found


def _errors(results, stream):
    return [r.exception for r in results if r.stream == stream and r.exception is not None]


@pytest.mark.parametrize("form", ["2026", "2019"])
def test_mfa_refusal_degrades_the_sync_and_names_the_fix(rt, small_sim, form):
    provider = _consented(rt, small_sim)
    # a trusted-location exemption: tokens issued from now on carry no "mfa" in amr
    small_sim.control.set_settings(trusted_location_skips_mfa=True, mfa_error_format=form)
    results = rt.sync.sync_provider_now(provider, workers=2)
    outcomes = _by_stream(results)
    assert outcomes["customers"] == {RunOutcome.SUCCEEDED} and outcomes["subscriptions"] == {RunOutcome.SUCCEEDED}
    assert outcomes["agreements"] == {RunOutcome.DEGRADED}  # App+User only: the MCA confirmation read
    errors = _errors(results, "agreements")
    assert errors and all(isinstance(e, MfaRequiredError) and e.code == "900421" for e in errors)
    consent = rt.providers.get_provider(PROVIDER_ID).to_json()["consent"]
    assert consent["status"] == "active" and consent["tokenHealth"] == "mfa_required"
    assert "900421" in consent["cause"] and "trusted-location" in consent["fix"]

    report = rt.verify.verify(PROVIDER_ID)
    assert not report.passed
    profile = report.check("organization_profile")
    assert profile.evidence == "HTTP 401, code 900421" and "hotspot" in profile.fix
    assert report.check("app_only_access").passed and report.check("customers_read").evidence.startswith("HTTP 401")
    assert not report.check("mfa_compliance").passed


def test_conditional_access_block_degrades_the_sync(rt, small_sim):
    provider = _consented(rt, small_sim)
    small_sim.control.set_settings(conditional_access_block=True)
    results = rt.sync.sync_provider_now(provider, workers=2)
    assert _by_stream(results)["subscriptions"] == {RunOutcome.SUCCEEDED}
    assert all(isinstance(e, ConditionalAccessBlockedError) for e in _errors(results, "agreements"))
    consent = rt.providers.get_provider(PROVIDER_ID).to_json()["consent"]
    assert consent["tokenHealth"] == "conditional_access_blocked" and "Conditional Access" in consent["cause"]
    assert "Conditional Access" in rt.verify.verify(PROVIDER_ID).check("organization_profile").fix


@pytest.mark.parametrize("reason,kind,health", [
    ("expired", RefreshTokenExpired, "refresh_token_expired"), ("revoked", RefreshTokenRevoked, "refresh_token_revoked"),
    ("mfa", MfaChallengeRequired, "mfa_challenge"),
    ("conditional_access", SignInBlockedByConditionalAccess, "conditional_access_blocked")])
def test_refresh_token_failures_are_typed_and_named(rt, small_sim, reason, kind, health):
    _consented(rt, small_sim)
    small_sim.control.fail_refresh_tokens(reason)
    tokens = rt.token_source_for(rt.providers.get_provider(PROVIDER_ID))
    with pytest.raises(kind):
        tokens.access_token(force_refresh=True)
    stored = rt.providers.get_provider(PROVIDER_ID)
    assert stored.token_health == health and stored.to_json()["consent"]["fix"]
    check = rt.verify.verify(PROVIDER_ID).check("token_refresh")
    assert not check.passed and "consent" in check.evidence
    # a new consent clears the cause
    small_sim.control.fail_refresh_tokens("none")
    assert register_and_consent(rt, small_sim, PROVIDER_ID).succeeded
    assert rt.providers.get_provider(PROVIDER_ID).token_health is None


def test_healthy_verify_passes_with_the_mfa_self_test(rt, small_sim):
    _consented(rt, small_sim)
    report = rt.verify.verify(PROVIDER_ID)
    assert report.passed, report.to_json()
    assert "carried MFA" in report.check("mfa_compliance").evidence
    assert report.check("app_only_access").evidence == "HTTP 200"
