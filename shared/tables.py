"""Table Storage repositories over azure-data-tables.

Batches are built per PartitionKey and never exceed 100 operations or ~4 MiB (the service
limits); Azurite answers an oversized batch with a malformed response instead of a clean 400,
so the limit is enforced here before anything is sent.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from .errors import NotFound

MAX_BATCH_OPERATIONS = 100
# The service caps a batch payload at 4 MiB; stay clear of it to allow for envelope overhead.
MAX_BATCH_BYTES = 3_500_000
# Characters Table Storage forbids in PartitionKey/RowKey, plus '%' so that escaping reverses.
_FORBIDDEN_KEY_CHARS = set("/\\#?%")

Entity = dict[str, Any]


def escape_key(value: str) -> str:
    """Make any string safe as a PartitionKey/RowKey, reversibly (percent-style escapes)."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in _FORBIDDEN_KEY_CHARS or code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"%{code:02X}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_key(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "%" and _is_hex(value[i + 1 : i + 3]):
            out.append(chr(int(value[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789ABCDEFabcdef" for c in text)


def _estimated_bytes(entity: Mapping[str, Any]) -> int:
    return len(json.dumps(entity, default=str)) + 200


class TableRepository:
    """One table. Verbs follow the Azure SDK contracts (get_ raises, delete_ is idempotent)."""

    def __init__(self, client: TableClient):
        self._client = client

    @property
    def name(self) -> str:
        return self._client.table_name

    @property
    def client(self) -> TableClient:
        """The SDK client, for the few callers that need conditional writes (etags)."""
        return self._client

    def upsert_entity(self, entity: Mapping[str, Any], *, replace: bool = False) -> None:
        self._client.upsert_entity(dict(entity), mode=UpdateMode.REPLACE if replace else UpdateMode.MERGE)

    def upsert_entities(self, entities: Iterable[Mapping[str, Any]], *, replace: bool = True) -> int:
        """Upsert any number of entities in per-partition transactions; returns how many were written."""
        mode = UpdateMode.REPLACE if replace else UpdateMode.MERGE
        pending: dict[str, list[Entity]] = defaultdict(list)
        pending_bytes: dict[str, int] = defaultdict(int)
        written = 0

        def flush(partition: str) -> int:
            batch = pending.pop(partition, [])
            pending_bytes.pop(partition, None)
            if batch:
                self._client.submit_transaction([("upsert", e, {"mode": mode}) for e in batch])
            return len(batch)

        for entity in entities:
            entity = dict(entity)
            partition = entity["PartitionKey"]
            size = _estimated_bytes(entity)
            batch = pending[partition]
            if any(e["RowKey"] == entity["RowKey"] for e in batch):
                # the service refuses duplicate rows in one batch; the later one wins
                written += flush(partition)
            elif len(batch) >= MAX_BATCH_OPERATIONS or pending_bytes[partition] + size > MAX_BATCH_BYTES:
                written += flush(partition)
            pending[partition].append(entity)
            pending_bytes[partition] += size
        for partition in list(pending):
            written += flush(partition)
        return written

    def get_entity(self, partition_key: str, row_key: str) -> Entity:
        try:
            return dict(self._client.get_entity(partition_key, row_key))
        except ResourceNotFoundError as exc:
            raise NotFound(f"{self.name}: no row {partition_key}/{row_key}") from exc

    def find_entity(self, partition_key: str, row_key: str) -> Entity | None:
        try:
            return dict(self._client.get_entity(partition_key, row_key))
        except ResourceNotFoundError:
            return None

    def list_entities(
        self,
        *,
        partition_key: str | None = None,
        query: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        select: list[str] | None = None,
    ) -> Iterator[Entity]:
        params = dict(parameters or {})
        clauses = []
        if partition_key is not None:
            clauses.append("PartitionKey eq @pk")
            params["pk"] = partition_key
        if query:
            clauses.append(f"( {query} )")  # the SDK substitutes @params only between spaces
        kwargs: dict[str, Any] = {}
        if select:
            kwargs["select"] = select
        if clauses:
            rows = self._client.query_entities(" and ".join(clauses), parameters=params, **kwargs)
        else:
            rows = self._client.list_entities(**kwargs)
        for row in rows:
            yield dict(row)

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        self._client.delete_entity(partition_key, row_key)  # succeeds when the row is missing


class TableStore:
    """Hands out repositories, creating each table on first use."""

    def __init__(self, service: TableServiceClient):
        self._service = service
        self._ready: dict[str, TableRepository] = {}

    @classmethod
    def from_connection_string(cls, connection_string: str, **client_options: Any) -> "TableStore":
        return cls(TableServiceClient.from_connection_string(connection_string, **client_options))

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: TokenCredential, **client_options: Any) -> "TableStore":
        """Identity-based: the table service URL and an Entra token credential (no account key)."""
        return cls(TableServiceClient(endpoint, credential=credential, **client_options))

    def table(self, name: str) -> TableRepository:
        repo = self._ready.get(name)
        if repo is None:
            try:
                self._service.create_table(name)
            except ResourceExistsError:
                pass
            repo = self._ready[name] = TableRepository(self._service.get_table_client(name))
        return repo
