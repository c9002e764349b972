"""The delta cursor: per provider, how far the activity log has been worked through.

Stored in table ``synccursors`` (PartitionKey = provider id, RowKey ``auditrecords``):
``position`` is the newest ``operationDate`` handled; ``seen_ids`` the ids (and dates) of the
records handled within ``OVERLAP`` before it. The log is asked for whole days and records can show up a little
after their ``operationDate``, so each delta reads again from ``position - OVERLAP`` and skips the
ids it already handled: nothing is missed and nothing is re-read twice. ``full_calls`` and
``full_sweep_at`` are the last full sweep's calls and start (the calls a delta saves are counted
against them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.clock import parse_iso, to_iso
from shared.tables import escape_key

CURSOR_TABLE = "synccursors"
CURSOR_ROW = "auditrecords"
OVERLAP = timedelta(minutes=30)
MAX_SEEN_IDS = 5000  # a row stays far below the 1 MiB entity limit


@dataclass
class DeltaCursor:
    provider_id: str
    position: datetime | None = None
    seen_ids: dict[str, datetime | None] = field(default_factory=dict)
    full_calls: int = 0
    full_sweep_at: datetime | None = None

    def read_from(self) -> datetime | None:
        return None if self.position is None else self.position - OVERLAP

    def is_new(self, record_id: str, at: datetime | None) -> bool:
        """Not handled before: newer than the overlap, or inside it and not among the seen ids."""
        if self.position is None or at is None:
            return record_id not in self.seen_ids
        if at < self.position - OVERLAP:
            return False
        return record_id not in self.seen_ids

    def advance(self, record_id: str, at: datetime | None) -> None:
        if at is not None and (self.position is None or at > self.position):
            self.position = at
        self.seen_ids[record_id] = at

    def kept_seen(self) -> dict[str, str]:
        """The ids worth keeping: those inside the overlap before the position (newest kept)."""
        horizon = None if self.position is None else self.position - OVERLAP
        keep = sorted(((at, rid) for rid, at in self.seen_ids.items()
                       if at is not None and (horizon is None or at >= horizon)))
        return {rid: _precise(at) for at, rid in keep[-MAX_SEEN_IDS:]}


def _precise(moment: datetime) -> str:
    """Microseconds kept (``to_iso`` keeps whole seconds): the position is compared exactly."""
    return moment.astimezone(timezone.utc).isoformat()


class CursorStore:
    def __init__(self, tables: Any):
        self.tables = tables

    def _table(self) -> Any:
        return self.tables.table(CURSOR_TABLE)

    def load(self, provider_id: str) -> DeltaCursor:
        row = self._table().find_entity(escape_key(provider_id), CURSOR_ROW) or {}
        try:
            stored = json.loads(row.get("seen_ids") or "{}")
            seen = {str(k): parse_iso(v) for k, v in stored.items()} if isinstance(stored, dict) else {}
        except ValueError:
            seen = {}  # a damaged list only costs re-reading the overlap's customers
        return DeltaCursor(provider_id, parse_iso(row.get("position")), seen, int(row.get("full_calls") or 0),
                           parse_iso(row.get("full_sweep_at")))

    def save(self, cursor: DeltaCursor) -> None:
        entity = {"PartitionKey": escape_key(cursor.provider_id), "RowKey": CURSOR_ROW,
                  "provider_id": cursor.provider_id,
                  "position": _precise(cursor.position) if cursor.position else "",
                  "seen_ids": json.dumps(cursor.kept_seen()),
                  "full_calls": cursor.full_calls,
                  "full_sweep_at": to_iso(cursor.full_sweep_at) if cursor.full_sweep_at else ""}
        self._table().upsert_entity(entity, replace=True)


__all__ = ["CURSOR_TABLE", "CursorStore", "DeltaCursor", "OVERLAP"]
