"""`pcsync --settings local.settings.json ...` is complete on its own (issue 9, point 17): the
file's AZURE_* values reach the app's credential, with no AZURE_* (or PCSYNC_*) variable in the
process environment and without writing any into it."""
from __future__ import annotations

import json
import os

import pytest

import cli
from devservices import register_and_consent, simulator_app_settings

PROVIDER_ID = "settings-file"


@pytest.fixture
def app_settings(simulator, storage, monkeypatch):
    """The simulator's app settings, and an environment that names none of them."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "PCSYNC_", "AzureWebJobs")):
            monkeypatch.delenv(name)
    simulator.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0, latency_ms=0)
    yield simulator_app_settings(simulator, storage)
    from bootstrap import install_services

    install_services(None)


@pytest.fixture
def pcsync(app_settings, tmp_path, capsys):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": app_settings}))

    def run(*argv):
        code = cli.main(["--settings", str(path), *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def services_like_the_cli(app_settings):
    """A Services built the way the CLI builds it: from the settings alone (no credential given)."""
    from bootstrap import Services
    from shared.settings import Settings

    return Services(Settings.from_environment(app_settings))


def test_consent_link_verify_and_sync_with_only_a_settings_file(pcsync, app_settings, simulator):
    services = services_like_the_cli(app_settings)
    # the app's client secret in the (simulated) Key Vault, written with the file's credential
    services.secrets.set_secret(services.settings.client_secret_name, simulator.client_secret)
    code, out, err = pcsync("provider", "set", PROVIDER_ID, "--name", "Settings file", "--country-code", "US",
                            "--currency-code", "USD", "--tenant-id", simulator.tenant_id)
    assert code == 0, err

    code, out, err = pcsync("consent-link", "--provider", PROVIDER_ID, "--json")
    assert code == 0, err
    assert json.loads(out)["consentUrl"].startswith(simulator.authority_host)

    outcome = register_and_consent(services, simulator, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    code, out, err = pcsync("verify", "--provider", PROVIDER_ID, "--json")
    assert code == 0, (out, err)
    assert json.loads(out)["passed"] is True

    code, out, err = pcsync("sync", "--provider", PROVIDER_ID, "--workers", "4")
    assert code == 0, err
    assert "sync summary" in err and "Traceback" not in err

    assert not [name for name in os.environ if name.startswith("AZURE_")]  # nothing written into the environment
    assert simulator.client_secret not in out + err


def test_the_credential_comes_from_the_typed_settings(app_settings):
    from azure.identity import ClientSecretCredential

    services = services_like_the_cli(app_settings)
    assert services.settings.azure_credential.client_id == app_settings["AZURE_CLIENT_ID"]
    assert app_settings["AZURE_CLIENT_SECRET"] not in repr(services.settings)
    assert isinstance(services.credential, ClientSecretCredential)


def test_an_unreadable_settings_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "local.settings.json"
    path.write_text("{not json")
    code = cli.main(["--settings", str(path), "provider", "list"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --settings {path}") and "Traceback" not in err
    code = cli.main(["--settings", str(tmp_path / "missing.json"), "provider", "list"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.json" in err and len(err.strip().splitlines()) == 1
