"""`pcsync doctor`'s Key Vault credential check (auth/doctor_checks.py) with fake vaults."""
from __future__ import annotations

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from auth.doctor_checks import app_checks, credential_check
from shared.settings import Settings, StorageSettings
from tests.fakes.auth import FakeSecrets, provider

SETTINGS = Settings(storage=StorageSettings(connection_string="UseDevelopmentStorage=true"),
                    key_vault_url="https://pcsync.vault.azure.net", client_id="35bf992d-c9e9-4616-a12e-7696a6cecc1b")


class RefusingVault:
    def __init__(self, exc: Exception):
        self.exc = exc

    def get_secret(self, name: str) -> str:
        raise self.exc


def test_the_secret_is_read_and_never_shown():
    check = credential_check(SETTINGS, lambda: FakeSecrets({"pcsync-client-secret": "v3ry-s3cret"}))
    assert check.line() == ("[ok] key vault: client secret 'pcsync-client-secret' read from "
                            "https://pcsync.vault.azure.net")


def test_a_missing_secret_names_the_secret_to_store():
    check = credential_check(SETTINGS, lambda: FakeSecrets())
    assert check.failed and check.fix == "store the app registration's client secret in the vault as secret " \
                                         "'pcsync-client-secret'"


def test_a_403_names_the_key_vault_role():
    error = HttpResponseError(message="Caller is not authorized")
    error.status_code = 403
    check = credential_check(SETTINGS, lambda: RefusingVault(error))
    assert check.evidence == "https://pcsync.vault.azure.net: HTTP 403"
    assert check.fix.startswith("give the app's identity the Key Vault Secrets User role on the vault")


def test_no_token_for_the_vault_points_at_the_app_identity():
    check = credential_check(SETTINGS, lambda: RefusingVault(ClientAuthenticationError("no managed identity")))
    assert check.failed and "managed identity" in check.fix


def test_a_certificate_that_is_not_pem_is_a_fail():
    settings = Settings(storage=SETTINGS.storage, key_vault_url=SETTINGS.key_vault_url,
                        client_certificate_name="pcsync-cert")
    check = credential_check(settings, lambda: FakeSecrets({"pcsync-cert": "not a certificate"}))
    assert check.failed and "PEM" in check.evidence


def test_without_a_working_credential_no_token_is_asked_for():
    checks = app_checks(SETTINGS, lambda: FakeSecrets(), [provider(), provider(id="off", enabled=False)])
    assert [c.line() for c in checks[2:]] == ["[info] entra app contoso: not checked — fix the key vault check first"]
    assert checks[1].name == "entra app redirect uri" and checks[1].status == "info"
