"""Alerts: the one alert type, and table ``alerts``, the one store of alert rows.

A feature that finds something an operator must act on (a subscription that entered Extended
Service Term without anyone choosing it, an end-of-term action that drifted) raises a row here
and clears it when the condition is gone; the admin page (``GET /api/alerts``) lists the open
rows of each provider next to the alerts it computes itself (consent about to expire).

Row: PartitionKey = the escaped provider id, RowKey = the escaped ``kind|customer|subscription``;
columns ``kind``, ``customer_id``, ``subscription_id``, ``message``, ``severity``, ``fix``,
``source`` (the feature that owns the row), ``detected_at`` (kept while the alert stays open),
``updated_at``, ``cleared`` and ``cleared_at``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping

from .clock import to_iso
from .tables import escape_key

ALERTS_TABLE = "alerts"
MAX_TEXT = 4000


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Alert:
    kind: str  # stable, e.g. "consent_expiring", "est_without_choice"
    severity: Severity
    provider: str
    message: str
    customer: str | None = None
    subscription: str | None = None
    since: str | None = None  # when it was detected (or, for an expiry, when it happens)
    fix: str | None = None

    @property
    def subject(self) -> str | None:
        """The row it is about (a subscription id, else a customer id)."""
        return self.subscription or self.customer

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": str(self.severity), "provider": self.provider,
                "customer": self.customer, "subscription": self.subscription, "subject": self.subject,
                "message": self.message, "since": self.since, "fix": self.fix}


def _severity(value: Any) -> Severity:
    try:
        return Severity(str(value))
    except ValueError:  # a row written before the column existed, or by a newer version
        return Severity.WARNING


class AlertRows:
    """Raise, clear and read the rows of table ``alerts`` (each write idempotent: a raise keeps
    the first ``detected_at`` of an alert that stays open)."""

    def __init__(self, tables: Any, clock: Callable[[], datetime]):
        self.tables = tables
        self.clock = clock

    @staticmethod
    def row_key(kind: str, customer_id: str, subscription_id: str) -> str:
        return escape_key(f"{kind}|{customer_id}|{subscription_id}")

    def raise_alert(self, provider_id: str, kind: str, customer_id: str, subscription_id: str, message: str, *,
                    source: str, severity: Severity = Severity.WARNING, fix: str | None = None) -> None:
        table = self.tables.table(ALERTS_TABLE)
        key = self.row_key(kind, customer_id, subscription_id)
        existing = table.find_entity(escape_key(provider_id), key)
        now = self.clock()
        detected = existing.get("detected_at") if existing and not existing.get("cleared") else now
        table.upsert_entity({"PartitionKey": escape_key(provider_id), "RowKey": key, "provider_id": provider_id,
                             "kind": kind, "customer_id": customer_id, "subscription_id": subscription_id,
                             "message": message[:MAX_TEXT], "severity": severity.value, "fix": (fix or "")[:MAX_TEXT],
                             "detected_at": detected, "updated_at": now, "cleared": False, "source": source},
                            replace=True)

    def clear(self, provider_id: str, kind: str, customer_id: str, subscription_id: str) -> None:
        table = self.tables.table(ALERTS_TABLE)
        existing = table.find_entity(escape_key(provider_id), self.row_key(kind, customer_id, subscription_id))
        if existing and not existing.get("cleared"):
            table.upsert_entity({**existing, "cleared": True, "cleared_at": self.clock()}, replace=True)

    def open_rows(self, provider_id: str, *, source: str | None = None) -> Iterator[dict[str, Any]]:
        """The provider's rows that are not cleared (of one source, or of all)."""
        for row in self.tables.table(ALERTS_TABLE).list_entities(partition_key=escape_key(provider_id)):
            if not row.get("cleared") and (source is None or row.get("source") == source):
                yield dict(row)

    def open_alerts(self, provider_id: str) -> list[Alert]:
        return [as_alert(provider_id, row) for row in self.open_rows(provider_id)]


def as_alert(provider_id: str, row: Mapping[str, Any]) -> Alert:
    detected = row.get("detected_at")
    return Alert(kind=str(row.get("kind") or "unknown"), severity=_severity(row.get("severity")),
                 provider=provider_id, message=str(row.get("message") or ""),
                 customer=str(row.get("customer_id") or "") or None,
                 subscription=str(row.get("subscription_id") or "") or None,
                 since=to_iso(detected) if isinstance(detected, datetime) else (str(detected) if detected else None),
                 fix=str(row.get("fix") or "") or None)


__all__ = ["ALERTS_TABLE", "Alert", "AlertRows", "Severity", "as_alert"]
