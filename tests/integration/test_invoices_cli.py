"""`pcsync import-invoice` and `pcsync sync --stream invoices` through cli.main (Azurite + simulator)."""
from __future__ import annotations

import json

import pytest

import cli
from devservices import register_and_consent, simulator_app_settings

PROVIDER_ID = "cli-invoices"


@pytest.fixture
def pcsync(sim_runtime, simulator, monkeypatch, capsys):
    for name, value in simulator_app_settings(simulator, sim_runtime.settings.storage.connection_string).items():
        monkeypatch.setenv(name, value)
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    simulator.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0,
                                 export_retry_after_seconds=0)

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    yield run
    simulator.control.set_faults(export_retry_after_seconds=1)
    from bootstrap import install_services
    install_services(None)


def test_sync_invoices_then_import_one(pcsync, simulator):
    truth = {i["id"]: i for i in simulator.control.invoices()}
    code, _, err = pcsync("sync", "--provider", PROVIDER_ID, "--stream", "invoices", "--workers", "2")
    assert code == 0, err
    assert all(f"{invoice_id}: succeeded" in err for invoice_id in truth)
    assert "reconciled" in err and "mismatch" not in err
    g = next(i for i in truth if i.startswith("G"))
    code, out, err = pcsync("import-invoice", "--provider", PROVIDER_ID, "--invoice", g)
    result = json.loads(out)
    assert code == 0 and result["reconciliation"]["status"] == "reconciled" and result["state"] == "active"
    assert result["rowsWritten"] == result["rowsRemoved"] > 0  # a re-import replaces the previous one whole
    assert result["checksum"]["status"] in ("passed", "within_tolerance") and result["usageLines"] > 0
    code, out, err = pcsync("invoices", "csv", g, "mismatches", "--provider", PROVIDER_ID)
    assert code == 0 and out.startswith("subscription,customer,meter,recon_total,usage_total,difference"), err
    code, out, err = pcsync("invoices", "list", "--provider", PROVIDER_ID, "--json")
    listed = {i["id"]: i for i in json.loads(out)}
    assert listed[g]["importState"] == "active" and listed[g]["checksum"] in ("passed", "within_tolerance")
    code, out, _ = pcsync("import-invoice", "--provider", PROVIDER_ID, "--invoice", "G404404404")
    assert code == 2 and json.loads(out)["outcome"] == "rejected"
