"""`make demo`: the local end-to-end run on Azurite + the simulator.

Starts Azurite and the Partner Center simulator, configures pcsync the way a partner would
(app settings pointing at the simulator, the app's client secret in the simulated Key Vault),
registers a provider connection, runs the consent flow (answering the simulator's sign-in page
as the integration user, with MFA), verifies connectivity, syncs customers, subscriptions and
agreements, writes back a quantity and (2026 rules) one subscription's end-of-term action,
previews a refused seat reduction, and syncs again to show that nothing unchanged is rewritten. The last line printed
is one JSON object summarising what happened, so scripts can check it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from devservices import register_and_consent, running_azurite, simulator_app_settings

PROVIDER_ID = "microsoft-us"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def configure_environment(sim, storage: str) -> dict[str, str]:
    """Install the simulator's app settings as the process environment, as the host would."""
    env = simulator_app_settings(sim, storage)
    os.environ.update(env)
    return env


def count_rows(services, tables: list[str]) -> dict[str, int]:
    return {name: sum(1 for row in services.tables.table(name).list_entities(select=["RowKey", "removed"])
                      if not row.get("removed")) for name in tables}


def end_of_term_demo(services, sim, sync, customer_id: str) -> dict[str, Any]:
    """A subscription bound for a paid Extended Service Term (auto-renew off, no action) gets
    cancel at term end (the scheduled action with auto-renew off, never auto-renew off alone);
    then a seat reduction after the reduction window is previewed: refused now, possible at renewal."""
    licence = {"nce": True, "software": False, "status": "active"}
    bound_for_est = sim.control.add_subscription(customer_id, **licence, end_of_term="none", autoRenewEnabled=False,
                                                 ends_in_days=60)
    # bought 40 days ago: its 7-day reduction window has closed
    old = sim.control.add_subscription(customer_id, **licence, days_ago=40, quantity=8, end_of_term="renew",
                                       ends_in_days=200)
    sync.sync_customer(services.providers.get_provider(PROVIDER_ID), customer_id)
    record = services.writeback.run_now({
        "idempotencyKey": "demo-end-of-term-1", "provider": PROVIDER_ID, "customer": customer_id,
        "operation": "subscription.endOfTerm", "subscription": bound_for_est["id"], "action": "cancel",
    }, source="demo")
    check = (record.verification or {}).get("checkAt")
    print(f"  subscription {bound_for_est['id']} (bound for EST): end of term -> cancel: {record.state}"
          f"{f' ({record.reason})' if record.reason else ''}; re-checked for drift after {check}")
    answer = services.writeback.preview({
        "idempotencyKey": "demo-preview-1", "provider": PROVIDER_ID, "customer": customer_id,
        "operation": "subscription.quantity", "subscription": old["id"], "quantity": 6,
    })
    print(f"  preview of 8 -> 6 seats on {old['id']}: allowed {answer['allowed']} ({answer['when']}): {answer['reason']}")
    return {"endOfTerm": {"state": record.state, "action": "cancel"},
            "preview": {"allowed": answer["allowed"], "reason": answer["reason"], "when": answer["when"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=40, help="simulated customers (default 40)")
    args = parser.parse_args(argv)

    from shared.logging import install_redaction
    from bootstrap import get_services, install_services
    from simulator.testing import start_simulator

    install_redaction()
    summary: dict[str, Any] = {}
    with running_azurite() as storage, start_simulator(customers=args.customers, subscriptions_per_customer=3) as sim:
        step(f"Azurite (in memory) and the simulator at {sim.partner_center_url}")
        configure_environment(sim, storage)
        install_services(None)
        services = get_services()  # the same lazy construction the functions use, from the environment
        services.secrets.set_secret(services.settings.client_secret_name, sim.client_secret)
        print(f"app client secret stored in Key Vault as {services.settings.client_secret_name!r}")

        step("Provider connection")
        provider, _ = services.provider_admin.put(PROVIDER_ID, {
            "name": "Microsoft US Partner Center",
            "countryCode": "US",
            "currencyCode": "USD",
            "tenantId": sim.tenant_id,
            "billingStartDay": 1,
            "resellerRelationshipUrl": "https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship",
            "costManagement": True,
            "usageMismatchTolerance": "0.5%",
            "azureSpecializations": ["kubernetes"],
        })
        print(json.dumps({k: v for k, v in provider.to_json().items() if k not in ("verify",)}, indent=2))
        summary["provider"] = PROVIDER_ID

        step(f"Consent: {sim.integration_user} signs in with MFA at the simulated Entra ID")
        outcome = register_and_consent(services, sim, PROVIDER_ID, name="Microsoft US Partner Center")
        print(outcome.message)
        provider = services.providers.get_provider(PROVIDER_ID)
        print(f"consent status: {provider.consent_status} (by {provider.consented_upn}); "
              f"refresh token kept only in Key Vault as {provider.refresh_token_secret_name!r}")
        summary["consent"] = {"status": provider.consent_status}

        step("Verify Connectivity")
        report = services.verify.verify(PROVIDER_ID)
        for check in report.checks:
            print(f"  [{'pass' if check.passed else 'FAIL'}] {check.name}: {check.evidence}")
        summary["verify"] = {"passed": sum(c.passed for c in report.checks),
                             "failed": sum(not c.passed for c in report.checks)}

        step("Full sync: customers, then each customer's subscriptions and agreements")
        from sync.engine import summarize

        service = services.sync
        first = summarize(service.sync_provider_now(provider, workers=4))
        print(f"  {first['calls']} Partner Center calls, {first['rows_written']} rows written, "
              f"{first['throttled_429']} throttled, {first['failed']} failed runs")
        summary["synced"] = count_rows(services, ["customers", "subscriptions", "agreements"])
        print(f"  stored: {summary['synced']}")

        step("Invoices: list, then import one new-commerce invoice (Graph billing export) and reconcile it")
        invoices = services.invoices
        listed = invoices.sync_provider_invoices(provider, enqueue=False)
        g_invoice = next(i for i in listed.invoice_ids if i.startswith("G"))
        imported = invoices.import_invoice(provider, g_invoice)
        print(f"  {len(listed.invoice_ids)} invoices listed; {g_invoice}: {imported.summary.line_count} line items "
              f"from {imported.source}, {imported.summary.status}")
        summary["invoice"] = {"id": g_invoice, "source": imported.source, "lines": imported.summary.line_count,
                              "reconciliation": imported.summary.status}
        checksum = imported.figures.checksum.to_json()
        print(f"  usage file: {imported.figures.usage_count} daily-rated usage lines; usage checksum "
              f"{checksum['status']} (difference {checksum['difference']}, explained {checksum['explained']} "
              f"{checksum['explainedBy'] or ''}); import {imported.state}"
              f"{' (' + imported.figures.reason + ')' if imported.figures.reason else ''}")
        summary["checksum"] = {"status": checksum["status"], "difference": checksum["difference"],
                               "explained": checksum["explained"]}

        step("Unbilled estimates: current and previous period (Graph unbilled exports)")
        unbilled = services.unbilled.sync_provider(provider)
        print(f"  reconciliation lines {unbilled.lines}, usage lines {unbilled.usage}")
        summary["unbilled"] = {"current": unbilled.lines.get("current", 0),
                               "previous": unbilled.lines.get("previous", 0)}
        summary["synced"] = count_rows(services, ["customers", "subscriptions", "agreements", "invoices",
                                                 "invoicelineitems"])
        print(f"  stored: {summary['synced']}")

        step("Write-back: one subscription's quantity + 1 (validated, logged, applied with its etag)")
        from shared.tables import escape_key

        customer_id = next(iter(service.live_customer_ids(PROVIDER_ID)))
        target = next(r for r in services.tables.table("subscriptions").list_entities(
            partition_key=escape_key(f"{PROVIDER_ID}|{customer_id}")) if r.get("status") == "active" and not r.get("removed"))
        record = services.writeback.run_now({
            "idempotencyKey": "demo-quantity-1", "provider": PROVIDER_ID, "customer": customer_id,
            "operation": "subscription.quantity", "subscription": target["id"], "quantity": target["quantity"] + 1,
        }, source="demo")
        print(f"  subscription {target['id']}: quantity {target['quantity']} -> {target['quantity'] + 1}: "
              f"{record.state}{f' ({record.reason})' if record.reason else ''}")
        summary["writeback"] = {"state": record.state}

        step("Write-back, 2026 rules: one subscription's end of term, then a preview of a seat reduction")
        summary.update(end_of_term_demo(services, sim, service, customer_id))

        step("Sync again with nothing changed upstream")
        second = summarize(service.sync_provider_now(services.providers.get_provider(PROVIDER_ID), workers=4))
        print(f"  {second['calls']} calls, {second['rows_written']} rows written")
        summary["resync_writes"] = second["rows_written"]
        install_services(None)
    print(try_the_admin_page())
    print(json.dumps(summary, separators=(",", ":")))  # the last line: tests and scripts read it
    return 0


def try_the_admin_page() -> str:
    """The demo's closing hint (before the summary line): where the admin page runs locally."""
    from devhost.cli import DEFAULT_PORT
    from devhost.serve import admin_url

    return (f"Try the admin page: make serve, then open {admin_url(DEFAULT_PORT)} "
            "(the function key is Values.PCSYNC_LOCAL_FUNCTION_KEY in local.settings.json)")


if __name__ == "__main__":
    sys.exit(main())
