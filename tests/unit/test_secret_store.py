from shared.secrets import SecretStore, is_valid_secret_name


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
