"""What the end-of-term write-backs leave behind for operators: the chosen action per
subscription (table ``endofterm``) and alert rows (table ``alerts``, shared/alerts.py, which the
admin page lists with its own).

Alerts kept here, one row per (kind, customer, subscription), raised and cleared by the
write-backs timer from the synced ``subscriptions`` rows (so they follow the next sync):

* ``est_without_choice``: the subscription is in Extended Service Term and nobody chose EST
  through pcsync (Microsoft's EST backfill, the 24-hour auto-renew-off trap, a portal edit);
* ``end_of_term_drift``: Partner Center no longer holds the end-of-term action chosen here.
"""
from __future__ import annotations

import enum
import json
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping

from shared.alerts import ALERTS_TABLE, AlertRows, Severity
from shared.tables import escape_key

from ..queries import Query
from ..streams import SUBSCRIPTIONS
from .end_of_term import EndOfTerm, drift

CHOICES_TABLE = "endofterm"
SOURCE = "writeback"  # the rows of table ``alerts`` this module owns


class AlertKind(enum.StrEnum):
    EST_WITHOUT_CHOICE = "est_without_choice"
    END_OF_TERM_DRIFT = "end_of_term_drift"


def _choice_partition(provider_id: str, customer_id: str) -> str:
    return escape_key(f"{provider_id}|{customer_id}")


class EndOfTermChoices:
    """The end-of-term action chosen for each subscription through pcsync (the last one wins)."""

    def __init__(self, tables: Any, clock: Callable[[], datetime]):
        self.tables = tables
        self.clock = clock

    def remember(self, provider_id: str, customer_id: str, subscription_id: str, action: str, key: str) -> None:
        self.tables.table(CHOICES_TABLE).upsert_entity({
            "PartitionKey": _choice_partition(provider_id, customer_id), "RowKey": escape_key(subscription_id),
            "provider_id": provider_id, "customer_id": customer_id, "subscription_id": subscription_id,
            "action": action, "idempotency_key": key, "chosen_at": self.clock(),
        }, replace=True)

    def chosen(self, provider_id: str, customer_id: str, subscription_id: str) -> str | None:
        row = self.tables.table(CHOICES_TABLE).find_entity(_choice_partition(provider_id, customer_id),
                                                           escape_key(subscription_id))
        return str(row["action"]) if row and row.get("action") else None


def provider_subscriptions(tables: Any, provider_id: str, *, where: Query | None = None) -> Iterator[dict[str, Any]]:
    """Every live synced subscription row of a provider (all its customer partitions)."""
    query = (where or Query()).partition_prefix(escape_key(f"{provider_id}|"))
    for entity in tables.table(SUBSCRIPTIONS.table).client.query_entities(query.text, parameters=query.parameters):
        row = dict(entity)
        if not row.get("removed"):
            yield row


def row_as_subscription(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields end_of_term reads, from a synced row (its kept columns)."""
    def loads(name: str) -> Any:
        text = row.get(name)
        return json.loads(text) if isinstance(text, str) and text else None

    return {"status": row.get("status"), "autoRenewEnabled": row.get("autoRenewEnabled"),
            "isInExtendedServiceTerm": row.get("isExtendedServiceTerm"), "scheduledActions": loads("scheduledActions"),
            "scheduledNextTermInstructions": loads("scheduledNextTermInstructions"),
            "offerId": row.get("offerId"), "productType": {"id": row.get("productType")}}


# What each kind means for the operator (stored with the row: the admin page shows it).
SEVERITY = {AlertKind.EST_WITHOUT_CHOICE: Severity.CRITICAL, AlertKind.END_OF_TERM_DRIFT: Severity.WARNING}
FIX = {
    # in EST Partner Center takes no change but a cancellation
    AlertKind.EST_WITHOUT_CHOICE: "ask the customer; cancel it (write-back subscription.cancel) unless they want "
                                  "the paid extension",
    AlertKind.END_OF_TERM_DRIFT: "set the end-of-term action again (write-back subscription.endOfTerm) and check "
                                 "it after Partner Center's settling time",
}


class Alerts:
    """The write-back's alert rows in table ``alerts`` (shared/alerts.py, ``source=writeback``)."""

    def __init__(self, tables: Any, clock: Callable[[], datetime]):
        self.rows = AlertRows(tables, clock)

    def raise_alert(self, provider_id: str, kind: AlertKind, customer_id: str, subscription_id: str,
                    message: str) -> None:
        self.rows.raise_alert(provider_id, kind.value, customer_id, subscription_id, message, source=SOURCE,
                              severity=SEVERITY[kind], fix=FIX[kind])

    def clear(self, provider_id: str, kind: AlertKind, customer_id: str, subscription_id: str) -> None:
        self.rows.clear(provider_id, kind.value, customer_id, subscription_id)

    def open_rows(self, provider_id: str) -> Iterator[dict[str, Any]]:
        return self.rows.open_rows(provider_id, source=SOURCE)


def end_of_term_findings(tables: Any, provider_id: str, clock: Callable[[], datetime]) -> list[dict[str, Any]]:
    """For each synced new-commerce subscription: EST without a chosen EST, and drift from the
    action chosen here. One dict per finding (kind, customer, subscription, message, ...)."""
    choices = EndOfTermChoices(tables, clock)
    findings: list[dict[str, Any]] = []
    for row in provider_subscriptions(tables, provider_id, where=Query().equal("isNce", True)):
        customer, sid = str(row.get("customer_id") or ""), str(row.get("id") or "")
        chosen = choices.chosen(provider_id, customer, sid)
        subscription = row_as_subscription(row)
        base = {"customer": customer, "subscription": sid, "offerName": row.get("offerName"),
                "commitmentEndDate": row.get("commitmentEndDate"), "chosen": chosen}
        if row.get("isExtendedServiceTerm") and chosen != EndOfTerm.EST:
            findings.append({**base, "kind": AlertKind.EST_WITHOUT_CHOICE.value,
                             "message": "in Extended Service Term without EST chosen"
                                        + (f" ({chosen} was chosen)" if chosen else "")})
        elif chosen:
            reason = drift(chosen, subscription)
            if reason:
                findings.append({**base, "kind": AlertKind.END_OF_TERM_DRIFT.value, "message": reason})
    return findings


def sweep(tables: Any, provider_id: str, clock: Callable[[], datetime]) -> list[dict[str, Any]]:
    """Raise an alert per finding and clear the ones that no longer hold; the findings."""
    alerts = Alerts(tables, clock)
    findings = end_of_term_findings(tables, provider_id, clock)
    raised = {(f["kind"], f["customer"], f["subscription"]) for f in findings}
    for finding in findings:
        alerts.raise_alert(provider_id, AlertKind(finding["kind"]), finding["customer"], finding["subscription"],
                           finding["message"])
    for row in list(alerts.open_rows(provider_id)):
        found = (row.get("kind"), row.get("customer_id"), row.get("subscription_id"))
        if found not in raised and found[0] in {k.value for k in AlertKind}:
            alerts.clear(provider_id, AlertKind(found[0]), str(found[1]), str(found[2]))
    return findings


__all__ = ["ALERTS_TABLE", "AlertKind", "Alerts", "CHOICES_TABLE", "EndOfTermChoices", "end_of_term_findings",
           "provider_subscriptions", "row_as_subscription", "sweep"]
