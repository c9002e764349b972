"""Identity-based storage (PCSYNC_STORAGE__tableServiceUri / __queueServiceUri) against an Azurite
that accepts only bearer tokens over HTTPS. The token credential stands in for the managed
identity; our Settings, Services, TableStore and QueuePublisher are the real ones."""
import base64
import json
import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.storage.queue import QueueClient

from bootstrap import Services
from shared.settings import Settings
from sync.writeback.log import TableWritebackLog
from tests.support import STORAGE_AUDIENCE, STORAGE_TEST_OPTIONS, StorageTokenCredential


def identity_runtime(azurite_oauth, credential) -> Services:
    settings = Settings.from_environment({
        "PCSYNC_STORAGE__tableServiceUri": azurite_oauth.table_service_uri,
        "PCSYNC_STORAGE__queueServiceUri": azurite_oauth.queue_service_uri,
        "PCSYNC_CA_BUNDLE": azurite_oauth.ca_bundle,  # Azurite's generated certificate
    })
    assert settings.storage.identity_based
    return Services(settings, credential=credential, storage_options=STORAGE_TEST_OPTIONS)


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


def test_runtime_reads_and_writes_tables_and_queues_with_a_bearer_token(azurite_oauth):
    credential = StorageTokenCredential()
    runtime = identity_runtime(azurite_oauth, credential)

    table = runtime.tables.table(unique("identityrows"))
    rows = [{"PartitionKey": "p", "RowKey": f"{i:04d}", "n": i} for i in range(150)]
    assert table.upsert_entities(rows) == 150  # two transactions (100 + 50)
    assert sorted(r["n"] for r in table.list_entities(partition_key="p")) == list(range(150))
    assert table.get_entity("p", "0149")["n"] == 149

    queue = unique("identity-queue")
    runtime.queues.send_json(queue, {"provider": "p1", "customer": "c1"})
    raw = QueueClient(azurite_oauth.queue_service_uri, queue, credential=credential,
                      connection_verify=azurite_oauth.ca_bundle, **STORAGE_TEST_OPTIONS).receive_message()
    assert json.loads(base64.b64decode(raw.content)) == {"customer": "c1", "provider": "p1"}  # base64 kept

    # every token was asked for Azure Storage, and nothing fell back to a key
    assert credential.scopes and all(s == (f"{STORAGE_AUDIENCE}/.default",) for s in credential.scopes)


def test_writeback_log_uses_the_runtime_storage(azurite_oauth):
    runtime = identity_runtime(azurite_oauth, StorageTokenCredential())
    log = TableWritebackLog.from_store(runtime.tables)
    entity = {"PartitionKey": "p1", "RowKey": unique("key"), "state": "accepted"}
    assert log.create(entity) is True and log.create(entity) is False
    found, etag = log.find("p1", entity["RowKey"])
    assert found["state"] == "accepted" and etag


def test_a_token_for_another_audience_is_refused_clearly(azurite_oauth):
    runtime = identity_runtime(azurite_oauth, StorageTokenCredential(audience="https://vault.azure.net"))
    with pytest.raises(ClientAuthenticationError) as table_error:
        runtime.tables.table(unique("refused"))
    with pytest.raises(ClientAuthenticationError) as queue_error:
        runtime.queues.send_json(unique("refused-queue"), {"x": 1})
    for error in (table_error.value, queue_error.value):
        assert error.status_code == 403
        assert "AuthenticationFailed" in str(error) and "Invalid token audience" in str(error)


def test_the_ca_bundle_is_what_lets_the_clients_trust_azurite(azurite_oauth):
    from azure.core.exceptions import ServiceRequestError

    settings = Settings.from_environment({"PCSYNC_STORAGE__tableServiceUri": azurite_oauth.table_service_uri,
                                          "PCSYNC_STORAGE__queueServiceUri": azurite_oauth.queue_service_uri})
    runtime = Services(settings, credential=StorageTokenCredential(), storage_options=STORAGE_TEST_OPTIONS)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        runtime.tables.table(unique("untrusted"))
