"""Telemetry with fakes: an in-memory span exporter and metric reader behind shared.telemetry.

One sync run is a run span with one CLIENT span per Partner Center attempt under it (carrying
MS-RequestId / MS-CorrelationId); a webhook and a consent have their spans; nothing exported holds
a secret registered with shared.logging; and with telemetry off nothing is recorded or imported."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from auth.consent import CONSENT_FLOWS_TABLE, ConsentFlowStore, ConsentService
from shared import telemetry
from shared.logging import register_secret
from shared.providers import ProviderConnection
from shared.settings import Settings, SettingsError, TelemetrySettings
from shared.transport import RetryPolicy
from sync.engine import SyncService
from sync.runs import RunOutcome
from sync.streams import CUSTOMERS
from sync.webhooks.service import WebhookService
from sync.webhooks.verify import SignatureVerifier
from tests.fakes.auth import REDIRECT_URI, FakeConfidentialClient, FakeProviders, FakeSecrets, FakeTable
from tests.fakes.auth import ManualClock, make_settings, provider, token_result
from tests.fakes.clients import fake_clients
from tests.fakes.partner_center import (
    FakePartnerCenter,
    FakeQueues,
    FakeTables,
    FakeTokenSource,
    ScriptedSession,
    fake_customer_id,
    response,
)
from tests.fakes.webhooks import NOW, FakeCustomers, MemoryAcceptedEvents, make_ca, make_leaf, signed_headers

ROOT = Path(__file__).resolve().parents[3]
PROVIDER = ProviderConnection(id="p1", name="P1", country_code="US", currency_code="USD",
                              tenant_id="00000000-0000-0000-0000-000000000001", consent_status="active")
ACCESS_TOKEN = "tok-3f9a1c77e0b2-access"  # what the fake token source hands out, registered as a secret


class Recorder:
    """In-memory span exporter and metric reader installed as shared.telemetry's providers."""

    def __init__(self):
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(telemetry.redacting_processor())
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def one(self, name: str):
        [found] = self.spans(name)
        return found

    def children(self, parent) -> list:
        return [s for s in self.spans() if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def metrics(self) -> dict[str, list]:
        """{metric name: [(attributes, value)]} of everything collected so far."""
        found: dict[str, list] = {}
        data = self.reader.get_metrics_data()
        for resource in (data.resource_metrics if data else []):
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.sum  # a histogram
                        found.setdefault(metric.name, []).append((dict(point.attributes), value))
        return found

    def exported_text(self) -> str:
        """Every exported span as JSON: names, attributes, events, status."""
        return "\n".join(s.to_json() for s in self.spans())


@pytest.fixture
def recorder():
    rec = Recorder()
    telemetry.install(tracer_provider=rec.tracer_provider, meter_provider=rec.meter_provider)
    yield rec
    telemetry.uninstall()


def sync_service(session, tokens=(ACCESS_TOKEN,)) -> SyncService:
    register_secret(ACCESS_TOKEN)
    return SyncService(tables=FakeTables(), providers=FakeProviders(PROVIDER), queues=FakeQueues(),
                       clients=fake_clients(lambda p: FakeTokenSource(tokens), session=session, sleep=lambda s: None,
                                            retry=RetryPolicy(max_attempts=2)))


# -- one sync run -------------------------------------------------------------------------------


def test_a_sync_run_is_a_run_span_over_one_client_span_per_partner_center_call(recorder):
    pc = FakePartnerCenter(customers=5, page_size=2)
    result = sync_service(pc).run_stream(CUSTOMERS, PROVIDER)
    assert result.outcome == RunOutcome.SUCCEEDED

    run = recorder.one("pcsync.sync.run")
    attrs = dict(run.attributes)
    assert attrs["pcsync.provider"] == "p1" and attrs["pcsync.stream"] == "customers"
    assert attrs["pcsync.run_id"] == result.run_id and attrs["pcsync.correlation_id"] == result.correlation_id
    assert attrs["pcsync.outcome"] == "succeeded"
    assert (attrs["pcsync.rows_read"], attrs["pcsync.rows_written"], attrs["pcsync.calls"]) == (5, 5, result.calls)
    assert "pcsync.customer" not in attrs  # a provider-wide stream

    calls = recorder.children(run)
    assert len(calls) == result.calls == len(pc.sent) == 3  # 5 customers, pages of 2
    for call, sent in zip(calls, pc.sent):
        a = dict(call.attributes)
        assert call.name == "partner center GET" and call.kind is SpanKind.CLIENT
        assert a["http.request.method"] == "GET" and a["http.response.status_code"] == 200
        assert a["http.request.header.ms-requestid"] == (sent.headers["MS-RequestId"],)
        assert a["http.request.header.ms-correlationid"] == (result.correlation_id,)
        assert a["pcsync.outcome"] == "success" and a["server.address"] == "pc.example.test"
    assert all(s.parent is None for s in recorder.spans("pcsync.sync.run"))

    metrics = recorder.metrics()
    labels = {"pcsync.provider": "p1", "pcsync.stream": "customers", "pcsync.outcome": "succeeded"}
    assert metrics["pcsync.runs"] == [(labels, 1)]
    assert metrics["pcsync.rows.read"] == [(labels, 5)] and metrics["pcsync.rows.written"] == [(labels, 5)]
    assert metrics["pcsync.calls"] == [(labels, 3)]
    [(duration_labels, _)] = metrics["pcsync.run.duration"]
    assert duration_labels == labels


def test_retries_and_429s_are_attempt_spans_and_counted(recorder):
    page = {"totalCount": 1, "items": [{"id": fake_customer_id(0), "companyProfile": {"companyName": "C"},
                                        "attributes": {"objectType": "Customer"}}]}
    session = ScriptedSession(response(429, {}, headers={"Retry-After": "0"}), response(200, page))
    result = sync_service(session).run_stream(CUSTOMERS, PROVIDER)
    assert result.outcome == RunOutcome.SUCCEEDED and result.throttled_429 == 1

    first, second = recorder.children(recorder.one("pcsync.sync.run"))
    assert dict(first.attributes)["http.response.status_code"] == 429
    assert dict(first.attributes)["pcsync.outcome"] == "rate_limited"
    assert dict(second.attributes)["http.request.resend_count"] == 1
    assert dict(first.attributes)["http.request.header.ms-requestid"] == \
        dict(second.attributes)["http.request.header.ms-requestid"]  # one logical call
    metrics = recorder.metrics()
    assert [v for _, v in metrics["pcsync.throttled"]] == [1] and [v for _, v in metrics["pcsync.retries"]] == [1]


def test_no_exported_span_holds_a_secret_used_in_the_run(recorder):
    """The token, echoed by Partner Center in an error and raised from the token source, is redacted
    in attributes (the run's error), events and status everywhere."""
    echoed = response(400, {"code": 600, "description": f"token {ACCESS_TOKEN} is not accepted"})
    result = sync_service(ScriptedSession(echoed)).run_stream(CUSTOMERS, PROVIDER)
    assert result.outcome == RunOutcome.FAILED and ACCESS_TOKEN in str(result.exception)

    run = recorder.one("pcsync.sync.run")
    assert dict(run.attributes)["pcsync.outcome"] == "failed" and "***" in dict(run.attributes)["pcsync.error"]
    [call] = recorder.children(run)
    assert dict(call.attributes)["error.type"] == "400" and dict(call.attributes)["pcsync.code"] == "600"

    with pytest.raises(RuntimeError):  # an unexpected exception: recorded on the span, redacted
        with telemetry.span("pcsync.test"):
            raise RuntimeError(f"Authorization: Bearer {ACCESS_TOKEN}")
    failed = recorder.one("pcsync.test")
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]

    text = recorder.exported_text()
    assert ACCESS_TOKEN not in text and "***" in text


def test_spans_of_libraries_are_redacted_too(recorder):
    secret = "lib-secret-7d1e55aa9c"
    register_secret(secret)
    library = recorder.tracer_provider.get_tracer("some.library")
    with library.start_as_current_span("library call", attributes={"url": f"https://x/?sig={secret}"}) as span:
        span.add_event("retry", {"detail": f"client_secret={secret}", "count": 2})
    [exported] = recorder.spans("library call")
    assert secret not in exported.to_json()
    assert dict(exported.events[0].attributes)["count"] == 2


# -- the other spans ----------------------------------------------------------------------------


def test_a_webhook_receipt_is_a_span_with_its_outcome(recorder):
    ca = make_ca()
    leaf = make_leaf(ca)
    verifier = SignatureVerifier(allowed_hosts=["certs.example.test"], fetch=lambda url: leaf.pem,
                                 trust_anchors=lambda: [ca.cert], clock=lambda: NOW.timestamp())
    service = WebhookService(FakeProviders(PROVIDER), FakeTables(), FakeQueues(), verifier, now=lambda: NOW,
                             customers=FakeCustomers({"p1": set()}), accepted=MemoryAcceptedEvents())
    body = json.dumps({"EventName": "invoice-ready", "ResourceUri": "https://x/webhooks/v1/invoices/G000024131",
                       "ResourceName": "invoice", "ResourceChangeUtcDate": "2026-03-01T12:00:00+00:00"}).encode()
    receipt = service.receive("p1", headers=signed_headers(leaf.key, body), body=body)

    attrs = dict(recorder.one("pcsync.webhook.receive").attributes)
    assert attrs["pcsync.provider"] == "p1" and attrs["pcsync.event"] == "invoice-ready"
    assert attrs["pcsync.outcome"] == receipt.outcome.value and attrs["pcsync.status"] == 200
    assert attrs["pcsync.correlation_id"] == receipt.correlation_id and attrs["pcsync.queue"] == receipt.queue


def test_a_consent_completion_is_a_span_and_the_auth_code_is_not_in_it(recorder):
    providers, secrets, client = FakeProviders(provider()), FakeSecrets(), FakeConfidentialClient()
    service = ConsentService(settings=make_settings(), providers=providers, secrets=secrets,
                             flows=ConsentFlowStore(FakeTable(CONSENT_FLOWS_TABLE)),
                             client_for_tenant=lambda tenant: client, clock=ManualClock())
    service.create_link("contoso")
    client.code_results.append(token_result(refresh_token="rt-9b8c7d6e5f"))
    code = "auth-code-5e4d3c2b1a"
    outcome = service.complete({"code": code, "state": client.flows[-1]["state"]}, callback_url=REDIRECT_URI)
    assert outcome.succeeded

    attrs = dict(recorder.one("pcsync.consent.complete").attributes)
    assert (attrs["pcsync.provider"], attrs["pcsync.outcome"], attrs["pcsync.status"]) == ("contoso", "ok", 200)
    refused = service.complete({"code": code, "state": client.flows[-1]["state"]}, callback_url=REDIRECT_URI)
    assert not refused.succeeded  # the state is spent
    second = recorder.spans("pcsync.consent.complete")[-1]
    assert dict(second.attributes)["pcsync.outcome"] == refused.reason.value
    assert code not in recorder.exported_text() and "rt-9b8c7d6e5f" not in recorder.exported_text()


# -- metrics --------------------------------------------------------------------------------------


def test_refresh_token_days_left_is_an_observable_gauge_per_provider(recorder):
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    listed = [provider(id="a", refresh_token_expires_at="2026-03-15T00:00:00Z"), provider(id="b")]
    telemetry.watch_refresh_tokens(lambda: listed, clock=lambda: now)
    assert recorder.metrics()["pcsync.consent.refresh_token_days_left"] == [({"pcsync.provider": "a"}, 14.0)]
    listed[0] = provider(id="a", refresh_token_expires_at=(now + timedelta(hours=12)).isoformat())
    assert recorder.metrics()["pcsync.consent.refresh_token_days_left"] == [({"pcsync.provider": "a"}, 0.5)]


def test_write_back_and_reconciliation_outcomes_are_counted(recorder):
    telemetry.record_writeback("p1", "subscription.quantity", "succeeded")
    telemetry.record_writeback("p1", "subscription.quantity", "succeeded")
    telemetry.record_reconciliation("p1", "mismatch")
    metrics = recorder.metrics()
    assert metrics["pcsync.writeback.outcomes"] == [(
        {"pcsync.provider": "p1", "pcsync.operation": "subscription.quantity", "pcsync.outcome": "succeeded"}, 2)]
    assert metrics["pcsync.invoice.reconciliations"] == [({"pcsync.provider": "p1", "pcsync.outcome": "mismatch"}, 1)]


# -- off by default, and the settings -----------------------------------------------------------


def test_without_telemetry_spans_cost_nothing_and_nothing_is_recorded():
    assert not telemetry.enabled()
    with telemetry.span("pcsync.sync.run", provider="p1") as span:
        span.set(outcome="succeeded")
        telemetry.annotate(outcome="x")
    telemetry.record_writeback("p1", "op", "succeeded")  # no meter: returns at once
    result = sync_service(FakePartnerCenter(customers=1)).run_stream(CUSTOMERS, PROVIDER)
    assert result.outcome == RunOutcome.SUCCEEDED


def test_the_services_import_no_opentelemetry_until_telemetry_is_configured():
    script = textwrap.dedent("""
        import sys
        import bootstrap, shared.telemetry, sync.engine, sync.writeback.applier, auth.consent, auth.verify
        from bootstrap import Services
        from shared.settings import Settings
        Services(Settings.from_environment({"PCSYNC_STORAGE": "UseDevelopmentStorage=true"}))
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor"))))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_console_exporters_are_configured_once_by_the_composition_root():
    """OTEL_TRACES_EXPORTER=console: building Services turns telemetry on; spans reach stdout."""
    script = textwrap.dedent("""
        from opentelemetry import trace
        import bootstrap
        from shared import telemetry
        from shared.logging import register_secret
        from shared.settings import Settings
        env = {"PCSYNC_STORAGE": "UseDevelopmentStorage=true", "OTEL_TRACES_EXPORTER": "console",
               "OTEL_SERVICE_NAME": "pcsync-test"}
        bootstrap.Services(Settings.from_environment(env))
        assert telemetry.enabled()
        assert not bootstrap.configure_telemetry(Settings.from_environment(env))  # once per process
        register_secret("console-secret-31337")
        with telemetry.span("pcsync.sync.run", provider="p1", note="key console-secret-31337"):
            pass
        trace.get_tracer_provider().force_flush()
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert '"name": "pcsync.sync.run"' in out.stdout and '"pcsync.provider": "p1"' in out.stdout
    assert '"service.name": "pcsync-test"' in out.stdout
    assert "console-secret-31337" not in out.stdout and "key ***" in out.stdout


def test_telemetry_settings():
    assert not TelemetrySettings.from_environment({}).enabled
    assert TelemetrySettings.from_environment({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}).enabled
    console = TelemetrySettings.from_environment({"OTEL_METRICS_EXPORTER": "Console"})
    assert console.enabled and console.metrics_exporter == "console" and console.traces_exporter == "none"
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER must be one of console, none"):
        TelemetrySettings.from_environment({"OTEL_TRACES_EXPORTER": "otlp"})
    settings = Settings.from_environment({"PCSYNC_STORAGE": "UseDevelopmentStorage=true",
                                          "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k"})
    assert "InstrumentationKey" not in repr(settings)
