"""Blob storage adapter (azure-storage-blob): pcsync's own files, e.g. an invoice import's CSV
reports. The same account as the tables and queues (a connection string, or the blob service
URI with the app's credential); Azurite's blob endpoint locally."""
from __future__ import annotations

from typing import IO, Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from .storage import StorageAdapter


class BlobStore(StorageAdapter):
    """Built like the table store and the queue publisher (``from_connection_string`` or
    ``from_service_url``)."""

    service_client = BlobServiceClient

    def __init__(self, service: BlobServiceClient):
        super().__init__(service)
        self._ready: set[str] = set()

    def _container(self, name: str) -> Any:
        container = self._service.get_container_client(name)
        if name not in self._ready:
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            self._ready.add(name)
        return container

    def put(self, container: str, name: str, data: IO[bytes] | bytes, *, content_type: str = "text/csv") -> None:
        """Create or replace one blob."""
        self._container(container).upload_blob(
            name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type))

    def get(self, container: str, name: str) -> bytes | None:
        """The blob's bytes, or None when it does not exist."""
        try:
            return self._container(container).download_blob(name).readall()
        except ResourceNotFoundError:
            return None


class MemoryBlobs:
    """In-process blobs with the same interface (tests, benchmarks without storage)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}

    def put(self, container: str, name: str, data: IO[bytes] | bytes, *, content_type: str = "text/csv") -> None:
        self.blobs[(container, name)] = data if isinstance(data, bytes) else data.read()

    def get(self, container: str, name: str) -> bytes | None:
        return self.blobs.get((container, name))


__all__ = ["BlobStore", "MemoryBlobs"]
