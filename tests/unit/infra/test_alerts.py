"""The alert rules of infra/modules/alerts.bicep match the log lines the app really writes: a
failed sync run and lost consent (records captured from the sync engine with fakes), and not
a run that succeeded. KQL `matches regex` (RE2) and Python's re agree on the `^`, `\\S` and
alternation the queries use."""
from __future__ import annotations

import logging
import pathlib
import re

import pytest
from pycep import BicepParser

from shared.providers import ProviderConnection
from shared.transport import RetryPolicy
from sync.engine import SyncService, parse_customer_message
from sync.runs import RunOutcome
from tests.fakes.clients import fake_clients
from tests.fakes.partner_center import FakePartnerCenter, FakeQueues, FakeTables, FakeTokenSource, fake_customer_id

ROOT = pathlib.Path(__file__).resolve().parents[3]
ALERTS = ROOT / "infra" / "modules" / "alerts.bicep"
PROVIDER = ProviderConnection(id="p1", name="P1", country_code="US", currency_code="USD",
                              tenant_id="00000000-0000-0000-0000-000000000001", consent_status="active")


class Providers:
    def list_providers(self, *, enabled_only=False):
        return [PROVIDER]

    def find_provider(self, provider_id):
        return PROVIDER if provider_id == PROVIDER.id else None


@pytest.fixture(scope="module")
def alerts():
    return BicepParser().parse(file_path=ALERTS)


def query_text(alerts, variable: str) -> str:
    value = alerts["variables"][variable]["value"]
    return value if isinstance(value, str) else value["function"]["parameters"]["format_string"]


def query_regexes(alerts, variable: str) -> list[re.Pattern[str]]:
    text = query_text(alerts, variable)
    found = [re.compile(p) for p in re.findall(r'@"([^"]*)"', text)]
    assert found, f"{variable} has no regex"
    return found


def matching(records, patterns) -> list[str]:
    return [r.getMessage() for r in records if any(p.search(r.getMessage()) for p in patterns)]


def customer_sync(caplog, pc, tokens=None):
    svc = SyncService(tables=FakeTables(), providers=Providers(), queues=FakeQueues(),
                      clients=fake_clients(lambda provider: tokens or FakeTokenSource(), session=pc,
                                           sleep=lambda s: None, retry=RetryPolicy(max_attempts=1)))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        return svc.handle_customer_message(parse_customer_message({"provider": "p1", "customer": fake_customer_id(0)}))


def test_the_rules_are_scheduled_queries_on_application_insights(alerts):
    rules = [r["config"] for r in alerts["resources"].values() if r["type"] == "Microsoft.Insights/scheduledQueryRules"]
    assert len(rules) == 2
    for rule in rules:
        assert rule["kind"] == "LogAlert" and rule["properties"]["scopes"] == ["applicationInsightsId"]
    assert alerts["parameters"]["consentWarningDays"]["default"] == 14


def test_a_failed_run_fires_the_failed_runs_alert_and_a_good_one_does_not(alerts, caplog):
    patterns = query_regexes(alerts, "failedRunsQuery")
    results = customer_sync(caplog, FakePartnerCenter(customers=1))
    assert {r.outcome for r in results} == {RunOutcome.SUCCEEDED}
    assert not matching(caplog.records, patterns)

    # a customer Partner Center does not know: both streams' runs fail (and are recorded, not raised)
    results = customer_sync(caplog, FakePartnerCenter(customers=0))
    assert {r.outcome for r in results} == {RunOutcome.FAILED}
    hits = matching(caplog.records, patterns)
    assert len([h for h in hits if h.startswith("sync ")]) == len(results), hits


def test_lost_consent_fires_the_consent_alert(alerts, caplog):
    patterns = query_regexes(alerts, "consentQuery")
    customer_sync(caplog, FakePartnerCenter(customers=1))
    assert not matching(caplog.records, patterns)
    results = customer_sync(caplog, FakePartnerCenter(customers=1), tokens=FakeTokenSource(consent_error=True))
    assert results[0].outcome == RunOutcome.CONSENT_REQUIRED
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert matching(warnings, patterns)
    # and the expiring-soon half queries the telemetry gauge below the warning threshold
    assert 'customMetrics\n     | where name == "{0}" and value < {1}' in query_text(alerts, "consentQuery")
    assert alerts["variables"]["consentQuery"]["value"]["function"]["parameters"]["arg_2"] == "consentWarningDays"


def test_the_expiring_half_reads_the_gauge_the_telemetry_registers(alerts):
    # shared/telemetry.py: meter.create_observable_gauge(PREFIX + "consent.refresh_token_days_left", ...)
    name = alerts["parameters"]["consentDaysMetricName"]["default"]
    prefix, _, rest = name.partition(".")
    source = (ROOT / "shared" / "telemetry.py").read_text()
    assert f'PREFIX = "{prefix}."' in source and f'PREFIX + "{rest}"' in source, name
