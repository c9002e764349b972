"""Reading the write-back log (``writebackops``) a page at a time, for ``pcsync writeback-list``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.tables import escape_key

from ..queries import DEFAULT_LIMIT, Page, Query, read_page

__all__ = ["DEFAULT_LIMIT", "WritebackFilter", "writeback_page"]
from ..resources import canonical_id
from .log import INVALID_PARTITION, WRITEBACK_TABLE
from .record import WritebackRecord, WritebackState


@dataclass(frozen=True)
class WritebackFilter:
    customer_id: str | None = None
    subscription_id: str | None = None
    state: str | None = None  # a WritebackState value


def writeback_page(tables: Any, provider_id: str | None, where: WritebackFilter = WritebackFilter(), *,
                   limit: int = DEFAULT_LIMIT, token: str | None = None) -> tuple[list[WritebackRecord], str | None]:
    """One provider's (None: every provider's) write-back records in idempotency-key order,
    filtered in the service (ids compared in the lower case the request validation stores)."""
    query = Query().partition(escape_key(provider_id)) if provider_id else \
        Query().where("PartitionKey ne @invalid", invalid=INVALID_PARTITION)
    if where.customer_id:
        query.equal("customer_id", canonical_id(where.customer_id))
    if where.subscription_id:
        query.equal("subscription_id", canonical_id(where.subscription_id))
    if where.state:
        query.equal("state", WritebackState(where.state).value)
    page: Page = read_page(tables.table(WRITEBACK_TABLE), query, select=None, limit=limit, token=token)
    return [WritebackRecord.from_entity(row) for row in page.rows], page.next_token

