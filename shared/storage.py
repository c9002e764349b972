"""What the table store, the queue publisher and the blob store share: each wraps one Azure Storage service
client, built either from a connection string (Azurite, account keys) or identity-based from the
service URL and an Entra token credential (no account key)."""
from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from azure.core.credentials import TokenCredential

Adapter = TypeVar("Adapter", bound="StorageAdapter")


class StorageAdapter:
    """Base of :class:`~shared.tables.TableStore`, :class:`~shared.queues.QueuePublisher` and
    :class:`~shared.blobs.BlobStore`;
    ``service_client`` is the SDK's service client class, which both constructors build."""

    service_client: ClassVar[Any]

    def __init__(self, service: Any):
        self._service = service

    @classmethod
    def from_connection_string(cls: type[Adapter], connection_string: str, **client_options: Any) -> Adapter:
        return cls(cls.service_client.from_connection_string(connection_string, **client_options))

    @classmethod
    def from_service_url(cls: type[Adapter], url: str, credential: TokenCredential, **client_options: Any) -> Adapter:
        """Identity-based: the service URL and an Entra token credential."""
        return cls(cls.service_client(url, credential=credential, **client_options))


__all__ = ["StorageAdapter"]
