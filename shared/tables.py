"""Table Storage repositories over azure-data-tables.

Batches are built per PartitionKey and never exceed 100 operations or ~4 MiB (the service
limits); Azurite answers an oversized batch with a malformed response instead of a clean 400,
so the limit is enforced here before anything is sent.

Every entity written is first fitted to the entity limits (:func:`fit_entity`): a string
column over 64 KiB (32K UTF-16 units) is truncated and ``<column>_truncated=True`` is set, and
an entity over 1 MiB has its longest strings shortened the same way. A batch the service
refuses for its content (HTTP 400/413) is split until the row at fault stands alone; that row
is rejected (``on_rejected`` is told why) and the others are stored.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, Mapping

from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceNotFoundError, ServiceRequestError,
                                   ServiceResponseError)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from .errors import NotFound
from .storage import StorageAdapter

MAX_BATCH_OPERATIONS = 100
# The service caps a batch payload at 4 MiB; stay clear of it to allow for envelope overhead.
MAX_BATCH_BYTES = 3_500_000
# Edm.String holds 64 KiB, i.e. 32,768 UTF-16 code units; a little is kept in hand.
MAX_STRING_UTF16_UNITS = 32_000
# An entity holds at most 1 MiB (the service's own accounting, see entity_bytes); likewise.
MAX_ENTITY_BYTES = 1_000_000
TRUNCATED_SUFFIX = "_truncated"
_KEY_COLUMNS = ("PartitionKey", "RowKey")
# Statuses that mean "this content is refused" (a row's fault), not "the service failed"
_ROW_FAULT_STATUSES = frozenset({400, 413})
# Characters Table Storage forbids in PartitionKey/RowKey, plus '%' so that escaping reverses.
_NEEDS_ESCAPE = re.compile("[/\\\\#?%\x00-\x1f\x7f-\x9f]")

Entity = dict[str, Any]


def escape_key(value: str) -> str:
    """Make any string safe as a PartitionKey/RowKey, reversibly (percent-style escapes)."""
    text = str(value)
    if _NEEDS_ESCAPE.search(text) is None:
        return text  # the common case (GUIDs, provider ids): one scan in C, no copy
    return _NEEDS_ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", text)


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


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def truncate_utf16(text: str, units: int) -> str:
    """``text`` cut to at most ``units`` UTF-16 code units, never inside a surrogate pair."""
    return text.encode("utf-16-le")[: units * 2].decode("utf-16-le", errors="ignore")


def entity_bytes(entity: Mapping[str, Any]) -> int:
    """An entity's size as Table Storage counts it: 4 bytes, the keys in UTF-16 (+8), and per
    property 8 bytes + its name in UTF-16 + its value (strings 4 + UTF-16; others at most 8)."""
    size = 4 + 8 + sum(2 * utf16_units(str(entity.get(key, ""))) for key in _KEY_COLUMNS)
    for name, value in entity.items():
        if name in _KEY_COLUMNS:
            continue
        if isinstance(value, str):
            value_size = 4 + 2 * utf16_units(value)
        elif isinstance(value, (bytes, bytearray)):
            value_size = 4 + len(value)
        else:
            value_size = 8
        size += 8 + 2 * utf16_units(name) + value_size
    return size


def fit_entity(entity: Mapping[str, Any]) -> Entity:
    """The entity within the service's limits: every string column capped at
    :data:`MAX_STRING_UTF16_UNITS` and the whole at :data:`MAX_ENTITY_BYTES`, by truncating the
    value and setting ``<column>_truncated=True``. An entity already within them is unchanged."""
    return _fitted(entity)[0]


def _fitted(entity: Mapping[str, Any]) -> tuple[Entity, int]:
    """:func:`fit_entity` and an estimate (erring high) of the result's share of a transaction body."""
    fitted = dict(entity)
    stored, body = _bounds(fitted)
    if stored <= MAX_ENTITY_BYTES:
        return fitted, body  # the common case, without encoding a string
    for name, value in entity.items():
        if name not in _KEY_COLUMNS and isinstance(value, str) and utf16_units(value) > MAX_STRING_UTF16_UNITS:
            fitted[name] = truncate_utf16(value, MAX_STRING_UTF16_UNITS)
            fitted[name + TRUNCATED_SUFFIX] = True
    while entity_bytes(fitted) > MAX_ENTITY_BYTES:
        strings = [n for n, v in fitted.items() if n not in _KEY_COLUMNS and isinstance(v, str) and v]
        if not strings:
            break  # nothing left to shorten: the service will refuse the row, and it fails alone
        longest = max(strings, key=lambda n: len(fitted[n]))
        fitted[longest] = truncate_utf16(fitted[longest], utf16_units(fitted[longest]) // 2)
        fitted[longest + TRUNCATED_SUFFIX] = True
    return fitted, _bounds(fitted)[1]


def _bounds(entity: Mapping[str, Any]) -> tuple[int, int]:
    """In one pass, cheaply: (an upper bound of the entity's size as the service counts it, an
    estimate of its share of a transaction body that errs high).

    Stored: a character is at most 2 UTF-16 units (4 bytes), another value at most 8 bytes; a
    string that may exceed the per-string limit makes it "too big" (over :data:`MAX_ENTITY_BYTES`),
    so that the caller measures exactly. Body: an ASCII character is written in at most 2 bytes of
    JSON (``\\"``, ``\\n``; only the rare other control characters take 6, and a batch the
    service refuses as too large is split anyway), any other at most 6 (``\\uXXXX``); a property's
    name, quotes and type annotation at most twice its name plus 40, bytes (base64) at most twice
    their length, any other value at most 40."""
    stored, body = 12, 200
    for name, value in entity.items():
        if isinstance(value, str):
            length = len(value)
            if 2 * length > MAX_STRING_UTF16_UNITS and name not in _KEY_COLUMNS:
                stored += MAX_ENTITY_BYTES
            stored += 4 * length + 4
            body += (2 if value.isascii() else 6) * length  # isascii() is O(1) on str
        elif isinstance(value, (bytes, bytearray)):
            stored += len(value) + 4
            body += 2 * len(value)
        else:
            stored += 8
            body += 40
        stored += 8 + 4 * len(name)
        body += 2 * len(name) + 40
    return stored, body


class RowsRejected(Exception):
    """Rows the service refused for their content; the other rows of their batches were stored."""

    def __init__(self, table: str, rejected: list[tuple[Entity, str]]):
        keys = ", ".join(f"{e['PartitionKey']}/{e['RowKey']}" for e, _ in rejected[:5])
        super().__init__(f"{table}: {len(rejected)} row(s) refused ({keys}): {rejected[0][1]}")
        self.rejected = rejected


Rejected = Callable[[Entity, str], None]


def _row_fault(exc: BaseException) -> str | None:
    """The reason when ``exc`` is the service refusing the content (a row's fault), else None."""
    if isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None) in _ROW_FAULT_STATUSES:
        code = getattr(exc, "error_code", None)
        message = str(getattr(exc, "message", None) or exc).strip().splitlines()[0][:300]
        return f"HTTP {exc.status_code}{f' {code}' if code else ''}: {message}"
    return None


# Statuses that mean "try again later": the request did not take effect, or an upsert repeats it
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def transient_failure(exc: BaseException) -> bool:
    """Whether a failed write may simply be sent again: a connection reset or timeout (also one
    the SDK wraps), or a service answer that says so. Only idempotent writes (upserts, deletes)
    should be."""
    if isinstance(exc, (ConnectionError, TimeoutError, ServiceRequestError, ServiceResponseError)):
        return True
    return isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None) in _TRANSIENT_STATUSES


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
        self._client.upsert_entity(fit_entity(entity), mode=UpdateMode.REPLACE if replace else UpdateMode.MERGE)

    def upsert_entities(self, entities: Iterable[Mapping[str, Any]], *, replace: bool = True,
                        on_rejected: Rejected | None = None) -> int:
        """Upsert any number of entities in per-partition transactions; returns how many were
        written. A row the service refuses fails alone: ``on_rejected(entity, reason)`` is
        called for it (without a handler, :class:`RowsRejected` is raised once the rest is stored)."""
        mode = UpdateMode.REPLACE if replace else UpdateMode.MERGE
        pending: dict[str, list[Entity]] = defaultdict(list)
        pending_bytes: dict[str, int] = defaultdict(int)
        pending_keys: dict[str, set[str]] = defaultdict(set)
        rejected: list[tuple[Entity, str]] = []
        written = 0

        def flush(partition: str) -> int:
            batch = pending.pop(partition, [])
            pending_bytes.pop(partition, None)
            pending_keys.pop(partition, None)
            return self._submit(batch, mode, rejected)

        for entity in entities:
            entity, size = _fitted(entity)
            partition = entity["PartitionKey"]
            batch = pending[partition]
            if entity["RowKey"] in pending_keys[partition]:
                # the service refuses duplicate rows in one batch; the later one wins
                written += flush(partition)
            elif len(batch) >= MAX_BATCH_OPERATIONS or pending_bytes[partition] + size > MAX_BATCH_BYTES:
                written += flush(partition)
            pending[partition].append(entity)
            pending_keys[partition].add(entity["RowKey"])
            pending_bytes[partition] += size
        for partition in list(pending):
            written += flush(partition)
        if rejected and on_rejected is None:
            raise RowsRejected(self.name, rejected)
        for entity, reason in rejected:
            on_rejected(entity, reason)  # type: ignore[misc]
        return written

    def _submit(self, batch: list[Entity], mode: UpdateMode, rejected: list[tuple[Entity, str]]) -> int:
        """One transaction; when the service refuses its content, each half again, so that the
        row at fault ends up alone (and in ``rejected``) and every other row is stored."""
        if not batch:
            return 0
        try:
            self._client.submit_transaction([("upsert", e, {"mode": mode}) for e in batch])
            return len(batch)
        except HttpResponseError as exc:
            reason = _row_fault(exc)
            if reason is None:
                raise
            if len(batch) == 1:
                rejected.append((batch[0], reason))
                return 0
        middle = len(batch) // 2
        return self._submit(batch[:middle], mode, rejected) + self._submit(batch[middle:], mode, rejected)

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


class TableStore(StorageAdapter):
    """Hands out repositories, creating each table on first use."""

    service_client = TableServiceClient

    def __init__(self, service: TableServiceClient):
        super().__init__(service)
        self._ready: dict[str, TableRepository] = {}

    def table(self, name: str) -> TableRepository:
        repo = self._ready.get(name)
        if repo is None:
            try:
                self._service.create_table(name)
            except ResourceExistsError:
                pass
            repo = self._ready[name] = TableRepository(self._service.get_table_client(name))
        return repo
