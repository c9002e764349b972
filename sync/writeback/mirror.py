"""The local copy of what a write-back changed: the ``subscriptions`` / ``agreements`` row,
built exactly as the sync engine builds it (same columns, raw, content hash), so the next sync
finds nothing to write."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

from ..rows import write_row_if_changed
from ..streams import AGREEMENTS, SUBSCRIPTIONS


class LocalMirror:
    def __init__(self, tables: Any, clock: Callable[[], datetime]):
        self._tables = tables
        self._clock = clock

    def subscription(self, provider_id: str, customer_id: str, subscription: Mapping[str, Any]) -> None:
        self._store(SUBSCRIPTIONS.table, SUBSCRIPTIONS.build_row(subscription, provider_id=provider_id,
                                                                 customer_id=customer_id))

    def agreement(self, provider_id: str, customer_id: str, agreement: Mapping[str, Any]) -> None:
        self._store(AGREEMENTS.table, AGREEMENTS.build_row(agreement, provider_id=provider_id, customer_id=customer_id))

    def _store(self, table_name: str, row: dict[str, Any] | None) -> None:
        write_row_if_changed(self._tables.table(table_name), row, stamp=self._clock())


__all__ = ["LocalMirror"]
