"""Unbilled estimates: the current and previous billing period before their invoices exist.

The unbilled timer (``PCSYNC_SCHEDULE_UNBILLED``, daily) and ``pcsync sync --stream unbilled``
read, per enabled provider in its currency, the Graph unbilled reconciliation and unbilled
daily-rated usage exports (``billingPeriod`` ``current`` and ``last``; the v1 unbilled API is
retired) into tables ``unbilledlineitems`` and ``unbilledusage``. Billing periods are calendar
months (new commerce); rows are partitioned ``<provider>|<currency>|<YYYY-MM>|<customer>`` and
written under a fresh generation, and table ``unbilledsnapshots`` (row
``<currency>|<YYYY-MM>|<recon|usage>``) names the generation that is complete, so a snapshot
replaces that period's previous one only once it is whole; older rows are then deleted. An
export that has no data (``5000``) is an empty snapshot, not a failure.

After the current period's usage, consumption per subscription goes to the budget check
(:mod:`sync.invoices.budgets`).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

from shared.clock import to_iso, utc_now
from shared.logging import get_logger
from shared.providers import ProviderConnection
from shared.tables import escape_key

from ..engine import SyncService, for_each_active_provider
from ..runs import RunOutcome, TimerOutcome
from .importer import unless_no_data
from .lines import RECON_COLUMNS, USAGE_COLUMNS, Column, build_row
from .store import PartitionedWriter, sweep

log = get_logger(__name__)

UNBILLED_LINES_TABLE = "unbilledlineitems"
UNBILLED_USAGE_TABLE = "unbilledusage"
SNAPSHOTS_TABLE = "unbilledsnapshots"
PERIODS = {"current": 0, "previous": 1}  # pcsync's name -> months back
_GRAPH_PERIOD = {"current": "current", "previous": "last"}
_KINDS: dict[str, tuple[str, tuple[Column, ...], bool]] = {
    "recon": (UNBILLED_LINES_TABLE, RECON_COLUMNS, False),
    "usage": (UNBILLED_USAGE_TABLE, USAGE_COLUMNS, True),
}


def period_month(now: datetime, months_back: int) -> str:
    year, month = now.year, now.month - months_back
    while month < 1:
        year, month = year - 1, month + 12
    return f"{year:04d}-{month:02d}"


@dataclass
class UnbilledOutcome(TimerOutcome):
    lines: dict[str, int] = field(default_factory=dict)  # "current"/"previous" -> reconciliation lines
    usage: dict[str, int] = field(default_factory=dict)
    alerts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider_id, "outcome": RunOutcome(self.outcome).value, "lines": self.lines,
                "usage": self.usage, "alerts": self.alerts, "error": self.error}


class UnbilledService:
    def __init__(self, sync: SyncService, *, budgets: Any = None, workers: int = 4,
                 now: Callable[[], datetime] = utc_now):
        self.sync, self.budgets, self.workers, self._now = sync, budgets, workers, now

    @property
    def tables(self) -> Any:
        return self.sync.tables

    def sync_all_providers(self) -> list[UnbilledOutcome]:
        return for_each_active_provider(self.sync.providers, self.sync_provider, UnbilledOutcome, "unbilled sync")

    def sync_provider(self, provider: ProviderConnection) -> UnbilledOutcome:
        outcome = UnbilledOutcome(provider.id, RunOutcome.SUCCEEDED)
        graph = self.sync.clients.graph(provider).bind()
        now = self._now()
        for name, back in PERIODS.items():
            month = period_month(now, back)
            for kind in _KINDS:
                count, consumption = self._snapshot(provider, graph, kind, name, month)
                (outcome.usage if kind == "usage" else outcome.lines)[name] = count
                if kind == "usage" and name == "current" and self.budgets is not None:
                    outcome.alerts += self.budgets.check(provider.id, month, consumption)
        log.info("unbilled %s: lines %s usage %s, %d new budget alert(s)", provider.id, outcome.lines, outcome.usage,
                 outcome.alerts, extra={"provider_id": provider.id})
        return outcome

    def _snapshot(self, provider: ProviderConnection, graph: Any, kind: str, period: str,
                  month: str) -> tuple[int, dict[tuple[str, str], Decimal]]:
        table_name, columns, usage = _KINDS[kind]
        currency = provider.currency_code
        scope = f"{currency}|{month}"  # the partition prefix after the provider, as an invoice id is
        generation = uuid.uuid4().hex[:16]
        consumption: dict[tuple[str, str], Decimal] = {}
        manifest, no_data = unless_no_data(lambda: graph.export_unbilled(usage, currency, _GRAPH_PERIOD[period]))
        rows = iter(()) if no_data is not None else graph.iter_rows(manifest)
        writer = PartitionedWriter(self.tables.table(table_name), workers=self.workers)
        count = 0
        try:
            for index, item in enumerate(rows):
                line = build_row(item, columns, provider_id=provider.id, invoice_id=scope, source=kind, index=index,
                                 generation=generation)
                entity = line.entity
                entity.pop("invoice_id", None)
                entity.update({"period": month, "billing_period": period, "snapshot_currency": currency})
                if usage:
                    key = (line.customer_id or "", line.subscription_id or "")
                    consumption[key] = consumption.get(key, Decimal(0)) + (line.amount("billingPreTaxTotal")
                                                                           or Decimal(0))
                writer.add(entity)
                count += 1
        finally:
            writer.close()
        self._complete(provider.id, f"{scope}|{kind}", generation, count, month, period)
        sweep(self.tables.table(table_name), provider.id, scope, generation)
        return count, consumption

    def _complete(self, provider_id: str, key: str, generation: str, count: int, month: str, period: str) -> None:
        self.tables.table(SNAPSHOTS_TABLE).upsert_entity({
            "PartitionKey": escape_key(provider_id), "RowKey": escape_key(key), "generation": generation,
            "lines": count, "period": month, "billing_period": period, "taken_at": to_iso(self._now())},
            replace=True)

    def counts(self, provider_id: str) -> dict[str, dict[str, int]]:
        """Lines of the newest snapshots by kind and period name ("current", "previous")."""
        now = self._now()
        found: dict[str, dict[str, int]] = {"recon": {}, "usage": {}}
        for name, back in PERIODS.items():
            month = period_month(now, back)
            for row in self.tables.table(SNAPSHOTS_TABLE).list_entities(partition_key=escape_key(provider_id)):
                parts = str(row["RowKey"]).split("|")
                if len(parts) == 3 and parts[1] == month and parts[2] in found:
                    found[parts[2]][name] = int(row.get("lines") or 0)
        return found


__all__ = ["PERIODS", "SNAPSHOTS_TABLE", "UNBILLED_LINES_TABLE", "UNBILLED_USAGE_TABLE", "UnbilledOutcome",
           "UnbilledService", "period_month"]
