"""azure-keyvault-secrets SecretClient against the simulated vault over HTTPS."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
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


def test_delete_moves_the_secret_to_the_deleted_collection(secrets_client):
    secrets_client.set_secret("pc-delete-me", "to-be-deleted")
    secrets_client.set_secret("pc-keep-me", "kept")
    poller = secrets_client.begin_delete_secret("pc-delete-me")
    deleted = poller.result()  # the DELETE's DeletedSecretBundle, without polling
    assert deleted.name == "pc-delete-me"
    assert deleted.recovery_id.endswith("/deletedsecrets/pc-delete-me")
    assert deleted.deleted_date and deleted.scheduled_purge_date > deleted.deleted_date
    assert deleted.properties.recoverable_days == 90
    poller.wait(timeout=10)  # polls GET /deletedsecrets/{name} until it answers 200
    assert poller.done()
    assert secrets_client.get_deleted_secret("pc-delete-me").recovery_id == deleted.recovery_id
    with pytest.raises(ResourceNotFoundError) as info:
        secrets_client.get_secret("pc-delete-me")
    assert info.value.error.code == "SecretNotFound"
    assert "pc-delete-me" not in [p.name for p in secrets_client.list_properties_of_secrets()]
    assert secrets_client.get_secret("pc-keep-me").value == "kept"


def test_deleting_an_unknown_or_deleted_secret_is_secret_not_found(secrets_client):
    with pytest.raises(ResourceNotFoundError) as info:
        secrets_client.begin_delete_secret("never-existed")
    assert info.value.error.code == "SecretNotFound"
    secrets_client.set_secret("pc-delete-twice", "value-1")
    secrets_client.begin_delete_secret("pc-delete-twice")
    with pytest.raises(ResourceNotFoundError):
        secrets_client.begin_delete_secret("pc-delete-twice")
    with pytest.raises(ResourceNotFoundError):
        secrets_client.get_deleted_secret("never-existed")


def test_a_deleted_name_cannot_be_reused_until_recovered(secrets_client):
    secrets_client.set_secret("pc-reuse", "old-value")
    secrets_client.begin_delete_secret("pc-reuse")
    with pytest.raises(ResourceExistsError) as info:
        secrets_client.set_secret("pc-reuse", "new-value")
    assert "deleted but recoverable" in str(info.value)
    recovered = secrets_client.begin_recover_deleted_secret("pc-reuse")
    recovered.wait(timeout=10)
    assert secrets_client.get_secret("pc-reuse").value == "old-value"
    secrets_client.set_secret("pc-reuse", "new-value")
    assert secrets_client.get_secret("pc-reuse").value == "new-value"
    with pytest.raises(ResourceNotFoundError):
        secrets_client.get_deleted_secret("pc-reuse")
