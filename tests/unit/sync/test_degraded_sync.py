"""The sync degrades instead of stopping when the App+User token is unavailable: app-only
streams go on, App+User-only ones end ``degraded`` with the cause, lost-consent providers are
still worked on app-only, and ``pcsync sync`` reports it with exit code 4."""
from __future__ import annotations

import io

from rich.console import Console

from shared.errors import RefreshTokenExpired
from shared.providers import ProviderConnection
from sync.cli import EXIT_DEGRADED, report
from sync.engine import SyncService, parse_customer_message
from sync.runs import RunOutcome, RunResult, overall_outcome
from tests.fakes.clients import fake_clients
from tests.fakes.partner_center import FakePartnerCenter, FakeQueues, FakeTokenSource
from tests.unit.sync.test_sync_engine import C1, Providers, RepositoryTables

EXPIRED = ProviderConnection(id="p1", name="P1", country_code="US", currency_code="USD",
                             tenant_id="00000000-0000-0000-0000-000000000001", consent_status="expired",
                             consented_at="2026-01-01T00:00:00Z", token_health="refresh_token_expired")


class AppOnlyWorks(FakeTokenSource):
    """App-only tokens are issued; the App+User token is not (the consent expired)."""

    def access_token(self, *, force_refresh: bool = False) -> str:
        raise RefreshTokenExpired("p1", "expired", "refresh token expired (AADSTS700082)")

    def app_access_token(self, *, force_refresh: bool = False) -> str:
        return "app-only"


def degraded_service(pc, tables, provider=EXPIRED):
    return SyncService(tables=tables, providers=Providers(provider), queues=FakeQueues(),
                       clients=fake_clients(lambda p: AppOnlyWorks(), session=pc, sleep=lambda s: None))


def test_expired_consent_syncs_app_only_and_degrades_agreements():
    pc, tables = FakePartnerCenter(customers=3, subs_per_customer=2), RepositoryTables()
    svc = degraded_service(pc, tables)
    runs = svc.sync_provider_now(EXPIRED, workers=2)
    outcomes = {(r.stream, r.outcome) for r in runs}
    assert outcomes == {("customers", "succeeded"), ("subscriptions", "succeeded"), ("agreements", "degraded")}
    assert len([r for r in runs if r.stream == "agreements"]) == 3  # the fan-out did not stop
    stored = [r for r in tables.table("syncruns").rows.values() if r["stream"] == "agreements"]
    assert {(r["outcome"], r["cause"]) for r in stored} == {("degraded", "refresh_token_expired")}
    assert all("Fix:" in r["error"] and "consent" in r["error"] for r in stored)
    assert not tables.table("agreements").rows  # nothing read, nothing written or tombstoned


def test_timers_and_queue_work_on_a_provider_whose_consent_was_lost():
    pc, tables = FakePartnerCenter(customers=2), RepositoryTables()
    svc = degraded_service(pc, tables)
    (outcome,) = svc.sync_all_providers()
    assert outcome.outcome == RunOutcome.SUCCEEDED and outcome.customers_enqueued == 2
    results = svc.handle_customer_message(parse_customer_message({"provider": "p1", "customer": C1}))
    assert [(r.stream, r.outcome) for r in results] == [("subscriptions", "succeeded"), ("agreements", "degraded")]


def test_a_provider_that_never_consented_is_still_skipped():
    never = ProviderConnection(id="p1", name="P1", country_code="US", currency_code="USD",
                               tenant_id="00000000-0000-0000-0000-000000000001", consent_status="none")
    pc = FakePartnerCenter(customers=2)
    svc = degraded_service(pc, RepositoryTables(), provider=never)
    assert [o.outcome for o in svc.sync_all_providers()] == ["skipped"] and pc.sent == []


def _run(stream, outcome, cause=None):
    result = RunResult("p1", stream, C1)
    result.outcome, result.cause = outcome, cause
    return result


def test_overall_outcome_prefers_failed_then_degraded():
    ok, degraded = _run("subscriptions", RunOutcome.SUCCEEDED), _run("agreements", RunOutcome.DEGRADED, "mfa_required")
    assert overall_outcome([ok])[0] == RunOutcome.SUCCEEDED
    outcome, error, cause = overall_outcome([ok, degraded], "targeted run")
    assert (outcome, cause) == (RunOutcome.DEGRADED, "mfa_required") and "mfa_required" in error
    assert overall_outcome([degraded, _run("subscriptions", RunOutcome.FAILED)])[0] == RunOutcome.FAILED


def test_report_prints_the_degraded_streams_with_the_fix_and_exits_4():
    out = io.StringIO()
    code = report(Console(file=out, width=300), [_run("subscriptions", RunOutcome.SUCCEEDED),
                                                 _run("agreements", RunOutcome.DEGRADED, "mfa_required")])
    text = out.getvalue()
    assert code == EXIT_DEGRADED == 4
    assert "degraded agreements: 1 run(s) not read" in text and "mfa_required" in text and "hotspot" in text
    failed = _run("subscriptions", RunOutcome.FAILED)
    assert report(Console(file=io.StringIO()), [failed, _run("agreements", RunOutcome.DEGRADED, "mfa_required")]) == 1
