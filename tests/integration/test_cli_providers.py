"""`pcsync provider ...` against Azurite, through cli.main."""
import json

import pytest

import cli

TENANT = "3b33e682-00c3-41ee-9dd2-a548adf56438"


@pytest.fixture
def pcsync(storage, monkeypatch, capsys):
    monkeypatch.setenv("PCSYNC_STORAGE", storage)

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    yield run
    from bootstrap import install_services
    install_services(None)


def test_set_show_list_disable(pcsync):
    code, out, _ = pcsync("provider", "set", "contoso", "--name", "Contoso US", "--country-code", "us",
                          "--currency-code", "usd", "--tenant-id", TENANT, "--azure-specialization", "kubernetes",
                          "--usage-mismatch-tolerance", "2.50")
    assert code == 0 and json.loads(out)["countryCode"] == "US"
    # a later set changes only what it names
    code, out, _ = pcsync("provider", "set", "contoso", "--billing-start-day", "10")
    shown = json.loads(out)
    assert code == 0 and shown["billingStartDay"] == 10 and shown["usageMismatchTolerance"] == "2.50"
    assert json.loads(pcsync("provider", "show", "contoso")[1])["azureSpecializations"] == ["kubernetes"]
    assert [p["id"] for p in json.loads(pcsync("provider", "list")[1])] == ["contoso"]
    code, out, _ = pcsync("provider", "disable", "contoso")
    assert code == 0 and json.loads(out)["enabled"] is False


def test_same_validation_as_the_api(pcsync):
    code, out, err = pcsync("provider", "set", "contoso", "--name", "x", "--country-code", "ZZ",
                            "--currency-code", "USD", "--tenant-id", "not-a-guid")
    assert code == 2 and out == ""
    assert "countryCode" in err and "tenantId" in err and "Traceback" not in err


def test_unknown_provider_is_a_clear_error(pcsync):
    code, _, err = pcsync("provider", "show", "nobody")
    assert code == 2 and "does not exist" in err


def test_disable_purge_says_whether_the_refresh_token_was_deleted(pcsync, monkeypatch):
    monkeypatch.delenv("PCSYNC_KEY_VAULT_URL", raising=False)
    pcsync("provider", "set", "contoso", "--name", "Contoso US", "--country-code", "US",
           "--currency-code", "USD", "--tenant-id", TENANT)
    code, out, err = pcsync("provider", "disable", "contoso", "--purge", "--yes")
    result = json.loads(out)
    assert code == 0 and result["purged"] is True and result["refreshTokenDeleted"] is False
    assert "PCSYNC_KEY_VAULT_URL" in result["refreshTokenReason"]
    assert pcsync("provider", "show", "contoso")[0] == 2


def test_a_key_vault_failure_is_a_clear_cli_error(pcsync, monkeypatch):
    from bootstrap import Services
    from shared.secrets import SecretStoreError

    class Unreachable:
        def delete_secret(self, name):
            raise SecretStoreError(f"Key Vault could not be reached to delete secret {name!r}", status=503)

    pcsync("provider", "set", "contoso", "--name", "Contoso US", "--country-code", "US",
           "--currency-code", "USD", "--tenant-id", TENANT)
    # the CLI builds its own Services: its Key Vault is the unreachable one
    monkeypatch.setattr(Services, "refresh_token_store", lambda services: Unreachable())
    code, out, err = pcsync("provider", "disable", "contoso", "--purge", "--yes")
    assert code == 2 and out == "" and "stopped before deleting anything" in err and "Traceback" not in err
    assert json.loads(pcsync("provider", "show", "contoso")[1])["enabled"] is False
