from datetime import datetime, timezone

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from shared.secrets import SecretStore, SecretStoreError, is_valid_secret_name


class AnyCredential:
    def get_token(self, *scopes, **kwargs):  # pragma: no cover - never called: no request is sent
        raise AssertionError("no request expected")


def test_challenge_resource_check_stays_on_for_real_key_vault_hosts():
    real = SecretStore.create("https://contoso.vault.azure.net", AnyCredential())
    local = SecretStore.create("https://127.0.0.1:8443", AnyCredential(), ca_bundle="/tmp/ca.pem")
    assert _verify_flag(real) is True
    assert _verify_flag(local) is False


def _verify_flag(store):
    return store._client._client._config.authentication_policy._verify_challenge_resource


def test_secret_names_follow_key_vault_rules():
    assert is_valid_secret_name("pcsync-refresh-token-microsoft-us")
    assert not is_valid_secret_name("bad_name")
    assert not is_valid_secret_name("x" * 128)


class FakeDeletedSecret:
    deleted_date = datetime(2025, 1, 1, tzinfo=timezone.utc)
    scheduled_purge_date = datetime(2025, 4, 1, tzinfo=timezone.utc)


class FakePoller:
    def __init__(self):
        self.waited = False

    def result(self):
        return FakeDeletedSecret()

    def wait(self, timeout=None):  # pragma: no cover - delete_secret must not wait
        self.waited = True


class FakeClient:
    def __init__(self, error=None):
        self.error, self.deleted, self.poller = error, [], FakePoller()

    def begin_delete_secret(self, name):
        self.deleted.append(name)
        if self.error:
            raise self.error
        return self.poller


def _http_error(status, code=None):
    error = HttpResponseError(message=f"({code}) refused" if code else "refused")
    error.status_code = status
    return error


def test_delete_secret_returns_what_key_vault_answered_without_polling():
    client = FakeClient()
    deleted = SecretStore(client).delete_secret("pcsync-refresh-token-p1")
    assert client.deleted == ["pcsync-refresh-token-p1"] and not client.poller.waited
    assert deleted.name == "pcsync-refresh-token-p1" and deleted.recoverable_until.month == 4


def test_delete_of_a_missing_secret_is_success():
    assert SecretStore(FakeClient(ResourceNotFoundError("SecretNotFound"))).delete_secret("gone") is None


@pytest.mark.parametrize("error,status,words", [
    (ServiceRequestError("connection refused"), 503, "could not be reached"),
    (_http_error(503), 503, "try again later"),
    (_http_error(429), 503, "try again later"),
    (_http_error(403), 502, "Key Vault Secrets Officer"),
    (ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token ... long text"), 502,
     "could not authenticate"),
])
def test_delete_failures_become_clear_secret_store_errors(error, status, words):
    with pytest.raises(SecretStoreError) as info:
        SecretStore(FakeClient(error)).delete_secret("pcsync-refresh-token-p1")
    assert info.value.status == status and words in str(info.value)
    assert "pcsync-refresh-token-p1" in str(info.value) and "long text" not in str(info.value)
