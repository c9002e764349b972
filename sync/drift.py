"""The drift report: what the full sweep had to change although no delta saw it.

Before a sweep reads anything, the delta catches up (the activity log up to now), so every change
that left an audit record or a webhook is already stored; whatever the sweep then writes (a row
new, changed or gone upstream) is drift: a change no trace told pcsync about. The sweep's writes go
through :class:`DriftTables`, which notes each one with its cause when the rows say it:

* ``est_conversion``: the subscription's offer or friendly name now says "Extended Service Term";
* ``renewal``: its ``commitmentEndDate`` moved later;
* otherwise the kind of write: ``added``, ``changed``, ``removed``.

Table ``driftreport``: per sweep one summary row (PartitionKey = provider id, RowKey = the sweep
id, which sorts newest first) with ``findings`` and ``by_type`` (JSON: resource type -> cause ->
rows), and one row per finding (PartitionKey ``<provider>|<sweep id>``, RowKey the synced row's
table, partition and key). The sweep's queue messages each add their findings; the summary is
recounted from the finding rows and only ever grows (etag-conditional), so concurrent messages
and redeliveries leave the right totals.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from shared.tables import escape_key

from .streams import AGREEMENTS, CUSTOMERS, SUBSCRIPTIONS

DRIFT_TABLE = "driftreport"
OBSERVED_TABLES = frozenset({CUSTOMERS.table, SUBSCRIPTIONS.table, AGREEMENTS.table})
EST_MARK = "extended service term"
SUMMARY_RETRIES = 8


def new_sweep_id(started: datetime) -> str:
    """Sorts newest first within a provider's partition (as ``syncruns`` does)."""
    return f"{10**13 - int(started.timestamp() * 1000):013d}-{uuid.uuid4().hex[:12]}"


def _text(row: Mapping[str, Any] | None, *names: str) -> str:
    return " ".join(str((row or {}).get(n) or "") for n in names).lower()


def drift_cause(table: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """Why a row the sweep rewrote differs, when the rows say so."""
    if old is None or old.get("removed"):
        return "added"
    if table == SUBSCRIPTIONS.table:
        names = ("offerName", "friendlyName")
        if EST_MARK in _text(new, *names) and EST_MARK not in _text(old, *names):
            return "est_conversion"
        if str(new.get("commitmentEndDate") or "") > str(old.get("commitmentEndDate") or ""):
            return "renewal"
    return "changed"


@dataclass(frozen=True)
class Finding:
    table: str
    partition_key: str
    row_key: str
    customer_id: str
    row_id: str
    cause: str

    def entity(self, provider_id: str, sweep_id: str, noticed: datetime) -> dict[str, Any]:
        return {"PartitionKey": escape_key(f"{provider_id}|{sweep_id}"),
                "RowKey": escape_key(f"{self.table}|{self.partition_key}|{self.row_key}"),
                "resource_type": self.table, "customer_id": self.customer_id, "row_id": self.row_id,
                "cause": self.cause, "noticed_at": noticed}


class DriftRecorder:
    """The findings of one sweep run (thread-safe: the CLI's workers share one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.findings: list[Finding] = []

    def note(self, table: str, entity: Mapping[str, Any], cause: str) -> None:
        finding = Finding(table, entity["PartitionKey"], entity["RowKey"], str(entity.get("customer_id") or entity.get("id") or ""),
                          str(entity.get("id") or entity["RowKey"]), cause)
        with self._lock:
            self.findings.append(finding)

    def take(self) -> list[Finding]:
        with self._lock:
            taken, self.findings = self.findings, []
        return taken


class ObservedTable:
    """A synced table whose writes are noted as drift; everything else goes straight through."""

    def __init__(self, inner: Any, recorder: DriftRecorder):
        self._inner, self._recorder = inner, recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def upsert_entities(self, entities: Iterable[Mapping[str, Any]], *, replace: bool = True, **options: Any) -> int:
        return self._inner.upsert_entities(self._noted(entities, replace), replace=replace, **options)

    def upsert_entity(self, entity: Mapping[str, Any], *, replace: bool = False) -> None:
        self._inner.upsert_entity(next(self._noted([entity], replace)), replace=replace)

    def _noted(self, entities: Iterable[Mapping[str, Any]], replace: bool) -> Iterator[Mapping[str, Any]]:
        name = self._inner.name
        for entity in entities:
            if replace:  # a content write: compare with what is stored (drift is rare: one read each)
                old = self._inner.find_entity(entity["PartitionKey"], entity["RowKey"])
                self._recorder.note(name, {**(old or {}), **entity}, drift_cause(name, old, entity))
            elif entity.get("removed"):  # a tombstone (merge): read for its ids
                old = self._inner.find_entity(entity["PartitionKey"], entity["RowKey"]) or {}
                self._recorder.note(name, {**old, **entity}, "removed")
            yield entity


class DriftTables:
    """The table store as a sweep sees it: synced tables observed, the others as they are."""

    def __init__(self, inner: Any, recorder: DriftRecorder):
        self._inner, self.recorder = inner, recorder

    def table(self, name: str) -> Any:
        table = self._inner.table(name)
        return ObservedTable(table, self.recorder) if name in OBSERVED_TABLES else table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class DriftReports:
    """The ``driftreport`` table: a sweep's summary row and its finding rows."""

    def __init__(self, tables: Any):
        self.tables = tables

    def _table(self) -> Any:
        return self.tables.table(DRIFT_TABLE)

    def start(self, provider_id: str, sweep_id: str, started: datetime) -> None:
        entity = {"PartitionKey": escape_key(provider_id), "RowKey": sweep_id, "provider_id": provider_id,
                  "sweep_id": sweep_id, "started_at": started, "findings": 0, "by_type": "{}"}
        try:
            self._table().client.create_entity(entity)
        except ResourceExistsError:
            pass  # a repeated start keeps what was counted

    def add(self, provider_id: str, sweep_id: str, findings: list[Finding], noticed: datetime) -> None:
        """Store the findings (idempotent: one row per synced row), then recount the summary."""
        if not findings:
            return
        self._table().upsert_entities((f.entity(provider_id, sweep_id, noticed) for f in findings), replace=True)
        self._recount(provider_id, sweep_id)

    def counts(self, provider_id: str, sweep_id: str) -> dict[str, dict[str, int]]:
        by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in self._table().list_entities(partition_key=escape_key(f"{provider_id}|{sweep_id}"),
                                               select=["resource_type", "cause"]):
            by_type[row.get("resource_type") or "?"][row.get("cause") or "changed"] += 1
        return {t: dict(c) for t, c in by_type.items()}

    def _recount(self, provider_id: str, sweep_id: str) -> None:
        client = self._table().client
        for _ in range(SUMMARY_RETRIES):
            by_type = self.counts(provider_id, sweep_id)
            total = sum(sum(c.values()) for c in by_type.values())
            current = client.get_entity(escape_key(provider_id), sweep_id)
            if int(current.get("findings") or 0) >= total:
                return  # someone counted at least as much, later than us
            try:
                client.update_entity({**current, "findings": total, "by_type": json.dumps(by_type, sort_keys=True)},
                                     mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                     match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError:
                continue

    def latest(self, provider_id: str) -> dict[str, Any] | None:
        """The newest sweep's report: ``sweep_id``, ``started_at``, ``findings``, ``by_type``."""
        for row in self._table().list_entities(partition_key=escape_key(provider_id)):
            by_type = json.loads(row.get("by_type") or "{}")  # our own column
            return {"sweep_id": row["RowKey"], "started_at": row.get("started_at"),
                    "findings": int(row.get("findings") or 0), "by_type": by_type}
        return None


__all__ = ["DRIFT_TABLE", "DriftRecorder", "DriftReports", "DriftTables", "Finding", "drift_cause", "new_sweep_id"]
