"""The write-back log, table ``writebackops``: conditional create and claim over azure-data-tables.

PartitionKey is the provider id and RowKey the idempotency key (both escaped); queue messages
that name no usable provider or key are kept in partition ``_invalid``, keyed by message id.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

WRITEBACK_TABLE = "writebackops"
INVALID_PARTITION = "_invalid"  # rejected queue messages that name no usable provider/key; not a provider id

Found = tuple[dict[str, Any], str | None]  # an entity and its etag


class WritebackLog(Protocol):
    def find(self, partition_key: str, row_key: str) -> Found | None: ...

    def create(self, entity: Mapping[str, Any]) -> bool: ...

    def replace(self, entity: Mapping[str, Any], *, etag: str | None = None) -> bool: ...

    def by_row_key(self, row_key: str) -> list[Found]: ...

    def for_subscription(self, partition_key: str, customer_id: str, subscription_id: str) -> list[Found]: ...

    def in_state(self, state: str) -> list[Found]: ...

    def verifications_pending(self) -> list[Found]: ...


class TableWritebackLog:
    """``writebackops`` with the two conditional writes idempotency needs: insert-if-absent
    (two requests with one key cannot both be accepted) and replace-if-unchanged (a claim)."""

    def __init__(self, client: Any):
        self._client = client

    @classmethod
    def from_store(cls, tables: Any) -> "TableWritebackLog":
        """Over the runtime's TableStore, so the log uses the same account, credential and client
        options as every other table (connection string or identity-based)."""
        return cls(tables.table(WRITEBACK_TABLE).client)

    def find(self, partition_key: str, row_key: str) -> Found | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None
        return dict(entity), entity.metadata.get("etag")

    def create(self, entity: Mapping[str, Any]) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._client.create_entity(dict(entity))
        except ResourceExistsError:
            return False
        return True

    def replace(self, entity: Mapping[str, Any], *, etag: str | None = None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        if etag is None:
            self._client.upsert_entity(dict(entity), mode=UpdateMode.REPLACE)
            return True
        try:
            self._client.update_entity(dict(entity), mode=UpdateMode.REPLACE, etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True

    def by_row_key(self, row_key: str) -> list[Found]:
        return self._query("RowKey eq @rk", rk=row_key)

    def for_subscription(self, partition_key: str, customer_id: str, subscription_id: str) -> list[Found]:
        """One subscription's records (ids as the validation stores them: lower case)."""
        return self._query("PartitionKey eq @pk and customer_id eq @c and subscription_id eq @s",
                           pk=partition_key, c=customer_id, s=subscription_id)

    def in_state(self, state: str) -> list[Found]:
        """Every provider's records in one state (the timer's scheduled and waiting ones: few)."""
        return self._query("state eq @state", state=state)

    def verifications_pending(self) -> list[Found]:
        """Succeeded end-of-term records still to be re-checked after the settling time."""
        return self._query("verification_state eq @v", v="pending")

    def _query(self, text: str, **parameters: str) -> list[Found]:
        rows = self._client.query_entities(text, parameters=parameters)
        return [(dict(row), row.metadata.get("etag")) for row in rows]


__all__ = ["INVALID_PARTITION", "TableWritebackLog", "WRITEBACK_TABLE", "WritebackLog"]
