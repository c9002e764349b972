"""azure-keyvault-secrets SecretClient against the simulated vault over HTTPS."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient


@pytest.fixture(scope="module")
def secrets_client(sim):
    credential = ClientSecretCredential(sim.tenant_id, sim.client_id, sim.client_secret,
                                        authority=sim.authority_host, disable_instance_discovery=True,
                                        connection_verify=sim.ca_bundle)
    return SecretClient(vault_url=sim.key_vault_url, credential=credential, verify_challenge_resource=False,
                        connection_verify=sim.ca_bundle)


def test_set_get_versions_round_trip(secrets_client):
    first = secrets_client.set_secret("pc-refresh-token-p1", "first-value")
    second = secrets_client.set_secret("pc-refresh-token-p1", "second-value", content_type="text/plain")
    assert first.properties.version != second.properties.version
    assert secrets_client.get_secret("pc-refresh-token-p1").value == "second-value"
    assert secrets_client.get_secret("pc-refresh-token-p1", first.properties.version).value == "first-value"
    names = [p.name for p in secrets_client.list_properties_of_secrets()]
    assert "pc-refresh-token-p1" in names


def test_missing_secret_is_secret_not_found(secrets_client):
    with pytest.raises(ResourceNotFoundError) as info:
        secrets_client.get_secret("does-not-exist")
    assert info.value.error.code == "SecretNotFound"


def test_challenge_and_foreign_tokens(sim):
    http = sim.session()
    challenge = http.get(f"{sim.key_vault_url}/secrets/anything?api-version=7.5")
    assert challenge.status_code == 401
    header = challenge.headers["WWW-Authenticate"]
    assert f'authorization="{sim.authority_host}/{sim.tenant_id}"' in header
    assert 'resource="https://vault.azure.net"' in header
    forged = http.get(f"{sim.key_vault_url}/secrets/anything", headers={"Authorization": "Bearer abc.def.ghi"})
    assert forged.status_code == 401
