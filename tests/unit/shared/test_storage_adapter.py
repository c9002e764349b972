"""TableStore and QueuePublisher are built the same two ways (no call is made by building them)."""
from __future__ import annotations

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.queues import QueuePublisher
from shared.tables import TableStore

AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
           "TableEndpoint=http://127.0.0.1:1/devstoreaccount1;QueueEndpoint=http://127.0.0.1:2/devstoreaccount1;")


class Credential:
    def get_token(self, *scopes, **kwargs):  # never asked: nothing is sent
        raise AssertionError("no call expected")


def test_both_adapters_from_a_connection_string_or_a_service_url():
    for adapter, client, url in ((TableStore, TableServiceClient, "https://acct.table.core.windows.net"),
                                 (QueuePublisher, QueueServiceClient, "https://acct.queue.core.windows.net")):
        keyed = adapter.from_connection_string(AZURITE)
        assert isinstance(keyed, adapter) and isinstance(keyed._service, client)
        assert keyed._service.account_name == "devstoreaccount1"
        identity = adapter.from_service_url(url, Credential())
        assert isinstance(identity, adapter) and isinstance(identity._service, client)
        assert identity._service.url.rstrip("/") == url
