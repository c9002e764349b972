"""Telemetry end to end against Azurite and the simulator: a consent, Verify Connectivity, a sync, an
invoice import and a write-back, each its own span with its Partner Center (and Graph) calls as
CLIENT spans under it, and not one exported span holding a token or the app's secret."""
from __future__ import annotations

from devservices import register_and_consent
from shared.logging import register_secret
from shared.tables import escape_key
from sync.streams import CUSTOMERS, SUBSCRIPTIONS
from tests.unit.shared.test_telemetry import recorder  # noqa: F401  (the fixture: in-memory exporter and reader)

PROVIDER_ID = "otel-partner"


def attrs(span) -> dict:
    return dict(span.attributes)


def test_consent_verify_sync_invoice_and_writeback_spans(sim_runtime, simulator, recorder):
    services = sim_runtime
    assert register_and_consent(services, simulator, PROVIDER_ID).succeeded
    provider = services.providers.get_provider(PROVIDER_ID)
    services.providers.put_provider(PROVIDER_ID, {**provider.to_json(), "costManagement": True})
    provider = services.providers.get_provider(PROVIDER_ID)
    consent = recorder.one("pcsync.consent.complete")
    assert (attrs(consent)["pcsync.provider"], attrs(consent)["pcsync.outcome"]) == (PROVIDER_ID, "ok")

    report = services.verify.verify(PROVIDER_ID)
    verify = recorder.one("pcsync.verify")
    assert attrs(verify)["pcsync.outcome"] == ("passed" if report.passed else "failed")
    checks = recorder.children(verify)
    assert {attrs(s)["pcsync.check"] for s in checks} == {"organization_profile", "customers_read", "invoices_read",
                                                         "app_only_access", "mfa_compliance"}
    assert all(attrs(s)["http.response.status_code"] == 200 for s in checks)

    result = services.sync.run_stream(CUSTOMERS, provider)
    run = next(s for s in recorder.spans("pcsync.sync.run") if attrs(s)["pcsync.run_id"] == result.run_id)
    assert attrs(run)["pcsync.outcome"] == "succeeded" and attrs(run)["pcsync.rows_read"] == result.rows_read > 0
    calls = recorder.children(run)
    assert len(calls) == result.calls > 0
    for call in calls:
        assert attrs(call)["http.request.header.ms-correlationid"] == (result.correlation_id,)
        assert attrs(call)["http.request.header.ms-requestid"][0]

    listed = services.invoices.sync_provider_invoices(provider, enqueue=False)
    g_invoice = next(i for i in listed.invoice_ids if i.startswith("G"))
    imported = services.invoices.import_invoice(provider, g_invoice)
    invoice = recorder.one("pcsync.invoice.import")
    assert attrs(invoice)["pcsync.invoice_id"] == g_invoice
    assert attrs(invoice)["pcsync.reconciliation"] == imported.summary.status
    services_called = {s.name for s in recorder.children(invoice)}
    assert "partner center GET" in services_called and "graph GET" in services_called
    graph = next(s for s in recorder.children(invoice) if s.name == "graph GET")
    assert attrs(graph)["http.request.header.client-request-id"][0]

    customer_id = next(iter(services.sync.live_customer_ids(PROVIDER_ID)))
    services.sync.run_stream(SUBSCRIPTIONS, provider, customer_id=customer_id)
    target = next(r for r in services.tables.table("subscriptions").list_entities(
        partition_key=escape_key(f"{PROVIDER_ID}|{customer_id}")) if r.get("status") == "active")
    record = services.writeback.run_now({
        "idempotencyKey": "otel-1", "provider": PROVIDER_ID, "customer": customer_id,
        "operation": "subscription.quantity", "subscription": target["id"], "quantity": target["quantity"] + 1,
    })
    applied = recorder.one("pcsync.writeback.apply")
    assert attrs(applied)["pcsync.writeback_key"] == "otel-1" and attrs(applied)["pcsync.outcome"] == record.state
    assert attrs(applied)["pcsync.operation"] == "subscription.quantity"
    assert any(s.name == "partner center PATCH" for s in recorder.children(applied))

    metrics = recorder.metrics()
    assert sum(v for _, v in metrics["pcsync.runs"]) >= 3
    assert [(a["pcsync.outcome"], v) for a, v in metrics["pcsync.writeback.outcomes"]] == [(record.state, 1)]
    assert [a["pcsync.outcome"] for a, _ in metrics["pcsync.invoice.reconciliations"]] == [imported.summary.status]

    # the refresh token (rotated on every use), the app's client secret: in no span
    refresh_token = services.secrets.get_secret(services.providers.get_provider(PROVIDER_ID).refresh_token_secret_name)
    register_secret(refresh_token)
    text = recorder.exported_text()
    assert refresh_token not in text and simulator.client_secret not in text and "eyJ" not in text

