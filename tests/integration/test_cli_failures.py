"""The command line under failures (issue 9, points 10 and 7): a failed run is recorded and the
others go on, the command ends with its summary and a non-zero exit code; an expected failure is
one `error:` line (the traceback only with --debug); an unreachable storage or Key Vault answers
within seconds naming the setting; `sync --customer` takes the id in any case."""
from __future__ import annotations

import os
import threading
import time

import pytest

import cli
from devservices import azurite_connection_string, free_ports, register_and_consent, simulator_app_settings

PROVIDER_ID = "cli-failures"


@pytest.fixture
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("AZURE_", "PCSYNC_", "AzureWebJobs")):
            monkeypatch.delenv(name)
    yield monkeypatch
    from bootstrap import install_services

    install_services(None)


def run_cli(capsys, *argv):
    started = time.monotonic()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err, time.monotonic() - started


class BlipOnce:
    """A provider's token source whose ``fail_on``-th token request (App+User or app-only) fails the way an Entra
    ID or Key Vault blip does; every other request gets a real token."""

    def __init__(self, inner, *, fail_on: int):
        from auth.entra import IdentityProviderUnavailable

        self._inner, self._fail_on, self._calls = inner, fail_on, 0
        self._lock = threading.Lock()
        self._error = IdentityProviderUnavailable

    def access_token(self, **options):
        self._maybe_fail()
        return self._inner.access_token(**options)

    def app_access_token(self, **options):
        """The app-only token most calls send (shared/token_choice.py) counts as a token request too."""
        self._maybe_fail()
        return self._inner.app_access_token(**options)

    def _maybe_fail(self):
        with self._lock:
            self._calls += 1
            failing = self._calls == self._fail_on
        if failing:
            raise self._error("Entra ID token endpoint failed for provider cli-failures (ConnectionError); "
                              "try again later")

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def consented(sim_runtime, simulator, clean_environment):
    for name, value in simulator_app_settings(simulator, sim_runtime.settings.storage.connection_string).items():
        clean_environment.setenv(name, value)
    outcome = register_and_consent(sim_runtime, simulator, PROVIDER_ID)
    assert outcome.succeeded, outcome.message
    return sim_runtime


def sync_runs(services):
    from sync.runs import SYNC_RUNS_TABLE

    return list(services.tables.table(SYNC_RUNS_TABLE).list_entities())


def test_one_token_blip_fails_one_run_and_the_others_go_on(consented, simulator, clean_environment, capsys):
    sources = {}

    def token_source(provider):
        return sources.setdefault(provider.id, BlipOnce(consented.tokens.for_provider(provider), fail_on=3))

    services = consented.derive(token_sources=token_source)
    clean_environment.setattr(cli, "build_services", lambda args, settings=None: services)
    customers = len(simulator.control.customers())

    code, _, err, _ = run_cli(capsys, "sync", "--provider", PROVIDER_ID, "--workers", "4")

    assert code == 1, err
    assert "sync summary" in err and "Traceback" not in err
    assert "Entra ID token endpoint failed" in " ".join(err.split())  # the failed run is listed with its error
    runs = sync_runs(services)
    assert len(runs) == 1 + 2 * customers  # every run executed and recorded
    assert [r["outcome"] for r in runs].count("failed") == 1


def test_debug_prints_the_failed_runs_traceback(consented, clean_environment, capsys):
    sources = {}

    def token_source(provider):
        return sources.setdefault(provider.id, BlipOnce(consented.tokens.for_provider(provider), fail_on=1))

    services = consented.derive(token_sources=token_source)
    clean_environment.setattr(cli, "build_services", lambda args, settings=None: services)
    code, _, err, _ = run_cli(capsys, "--debug", "sync", "--provider", PROVIDER_ID, "--stream", "customers")
    assert code == 1 and "Traceback" in err and "IdentityProviderUnavailable" in err


def test_sync_customer_takes_the_id_in_any_case(consented, simulator, capsys):
    customer_id = simulator.control.customers()[0]["id"]
    code, _, err, _ = run_cli(capsys, "sync", "--provider", PROVIDER_ID, "--customer", f" {customer_id.upper()} ")
    assert code == 0, err
    runs = sync_runs(consented)
    assert {r["stream"] for r in runs} == {"subscriptions", "agreements"}
    assert {r["customer_id"] for r in runs} == {customer_id.lower()}


def dead_storage() -> str:
    (port,) = free_ports(1)
    return azurite_connection_string(port, port, port)


def test_unreachable_storage_is_one_line_naming_the_setting_within_seconds(clean_environment, capsys):
    connection = dead_storage()
    clean_environment.setenv("PCSYNC_STORAGE", connection)
    port = connection.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0]
    for argv in (("provider", "list"), ("sync", "--provider", "nobody"),
                 ("writeback", "--provider", "p1", "--customer", "c", "--subscription", "s", "--quantity", "2",
                  "--queue")):
        code, out, err, elapsed = run_cli(capsys, *argv)
        assert code == 2 and out == "", argv
        assert err.startswith(f"error: PCSYNC_STORAGE: storage at http://127.0.0.1:{port} could not be reached"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert elapsed < 15, (argv, elapsed)


def test_debug_adds_the_traceback(clean_environment, capsys):
    clean_environment.setenv("PCSYNC_STORAGE", dead_storage())
    code, _, err, _ = run_cli(capsys, "--debug", "provider", "list")
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("error: PCSYNC_STORAGE: storage at")


def test_unreachable_key_vault_is_one_line_naming_the_setting_within_seconds(storage, simulator, clean_environment,
                                                                             capsys):
    (port,) = free_ports(1)
    vault = f"https://127.0.0.1:{port}"
    for name, value in simulator_app_settings(simulator, storage).items():
        clean_environment.setenv(name, value)
    clean_environment.setenv("PCSYNC_KEY_VAULT_URL", vault)
    code, _, err, _ = run_cli(capsys, "provider", "set", PROVIDER_ID, "--name", "Key Vault down", "--country-code",
                              "US", "--currency-code", "USD", "--tenant-id", simulator.tenant_id)
    assert code == 0, err
    code, out, err, elapsed = run_cli(capsys, "consent-link", "--provider", PROVIDER_ID)
    assert code == 2 and out == ""
    assert err.startswith(f"error: PCSYNC_KEY_VAULT_URL: Key Vault at {vault} could not be reached"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert elapsed < 15, elapsed


def test_a_refused_webhook_url_is_one_line_about_the_registration(storage, clean_environment, capsys):
    clean_environment.setenv("PCSYNC_STORAGE", storage)
    code, out, err, _ = run_cli(capsys, "webhook", "register", "--provider", "p1", "--url", "ftp://example.test/x")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.splitlines() == ["error: the webhook registration is not valid:", "  url: must be an https URL (http only for localhost)"]
