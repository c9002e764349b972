"""Budgets per customer or subscription, and the alert when unbilled consumption crosses one.

A budget (table ``budgets``, partition = provider, row ``customer|<id>`` or
``subscription|<id>``) has an ``amount`` in the provider currency and a ``thresholdPercent``
(default 80). After each unbilled snapshot of the current period (:mod:`sync.invoices.unbilled`),
each subscription's consumption (the sum of its unbilled usage ``BillingPreTaxTotal``) is held
against its subscription budget and its customer's total against the customer budget; a
crossing is recorded once per period as a row of ``budgetalerts`` (row
``<period>|<scope>|<id>``, created only when absent), for the admin page to show.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from shared.alerts import Alert, Severity
from shared.clock import to_iso, utc_now
from shared.errors import NotFound, ValidationFailed
from shared.logging import get_logger
from shared.provider_ids import validate_provider_id
from shared.tables import escape_key

from ..resources import canonical_id
from .money import plain, to_decimal

log = get_logger(__name__)

BUDGETS_TABLE = "budgets"
ALERTS_TABLE = "budgetalerts"
DEFAULT_THRESHOLD_PERCENT = Decimal(80)


class BudgetScope(enum.StrEnum):
    CUSTOMER = "customer"
    SUBSCRIPTION = "subscription"


@dataclass(frozen=True)
class Budget:
    scope: BudgetScope
    target: str
    amount: Decimal
    threshold_percent: Decimal

    @property
    def threshold(self) -> Decimal:
        return self.amount * self.threshold_percent / 100

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope.value, "id": self.target, "amount": plain(self.amount),
                "thresholdPercent": plain(self.threshold_percent), "threshold": plain(self.threshold)}


def _positive(value: Any, name: str, problems: dict[str, str], *, limit: Decimal | None = None) -> Decimal | None:
    number = to_decimal(value) if not isinstance(value, bool) else None
    if number is None or number <= 0 or (limit is not None and number > limit):
        problems[name] = "must be a number above 0" + (f" and at most {limit}" if limit is not None else "")
        return None
    return number


def parse_budget(scope: str, target: str, body: Any) -> Budget:
    problems: dict[str, str] = {}
    try:
        kind = BudgetScope(str(scope).lower())
    except ValueError:
        raise ValidationFailed({"scope": "must be customer or subscription"}) from None
    if not isinstance(body, Mapping):
        raise ValidationFailed({"body": "must be a JSON object with amount (and thresholdPercent)"})
    amount = _positive(body.get("amount"), "amount", problems)
    threshold = DEFAULT_THRESHOLD_PERCENT if body.get("thresholdPercent") is None else \
        _positive(body.get("thresholdPercent"), "thresholdPercent", problems, limit=Decimal(1000))
    problems.update({k: "unknown field" for k in sorted(set(body) - {"amount", "thresholdPercent"})})
    text = str(target or "").strip()
    if not text or len(text) > 64 or any(c in text for c in "/\\#?|"):
        problems["id"] = f"must be a {kind.value} id"
    if problems:
        raise ValidationFailed(problems)
    return Budget(kind, canonical_id(text), amount, threshold)  # type: ignore[arg-type]


class BudgetService:
    def __init__(self, tables: Any, *, now: Callable[[], datetime] = utc_now):
        self.tables, self._now = tables, now

    def put(self, provider_id: str, scope: str, target: str, body: Any) -> dict[str, Any]:
        validate_provider_id(provider_id)
        budget = parse_budget(scope, target, body)
        self.tables.table(BUDGETS_TABLE).upsert_entity({
            "PartitionKey": escape_key(provider_id), "RowKey": escape_key(f"{budget.scope.value}|{budget.target}"),
            "scope": budget.scope.value, "target": budget.target, "amount": plain(budget.amount),
            "threshold_percent": plain(budget.threshold_percent), "updated_at": to_iso(self._now())}, replace=True)
        return budget.to_json()

    def delete(self, provider_id: str, scope: str, target: str) -> None:
        validate_provider_id(provider_id)
        table = self.tables.table(BUDGETS_TABLE)
        key = escape_key(f"{str(scope).lower()}|{canonical_id(target)}")
        if table.find_entity(escape_key(provider_id), key) is None:
            raise NotFound(f"no {scope} budget for {target}")
        table.delete_entity(escape_key(provider_id), key)

    def budgets(self, provider_id: str) -> Iterator[Budget]:
        for row in self.tables.table(BUDGETS_TABLE).list_entities(partition_key=escape_key(provider_id)):
            try:
                yield Budget(BudgetScope(row["scope"]), row["target"], to_decimal(row["amount"]) or Decimal(0),
                             to_decimal(row.get("threshold_percent")) or DEFAULT_THRESHOLD_PERCENT)
            except (KeyError, ValueError):
                log.warning("budget row %s of %s is not readable; skipped", row.get("RowKey"), provider_id)

    def overview(self, provider_id: str) -> dict[str, Any]:
        """The provider's budgets and the alerts recorded (the API's and the CLI's listing)."""
        validate_provider_id(provider_id)
        return {"budgets": [b.to_json() for b in self.budgets(provider_id)], "alerts": self.alerts(provider_id)}

    def alerts(self, provider_id: str) -> list[dict[str, Any]]:
        rows = self.tables.table(ALERTS_TABLE).list_entities(partition_key=escape_key(provider_id))
        return [{k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey")} for row in rows]

    def threshold_alerts(self, provider: Any) -> Iterator[Alert]:
        """The admin page's alert source: the crossings recorded for the newest period (a month
        whose consumption crossed a budget stays listed until the next month's first check)."""
        rows = self.alerts(provider.id)
        newest = max((str(row.get("period") or "") for row in rows), default="")
        for row in rows:
            if str(row.get("period") or "") != newest:
                continue
            scope, target = str(row.get("scope") or ""), str(row.get("target") or "")
            yield Alert("usage_threshold", Severity.WARNING, provider.id,
                        f"unbilled consumption {row.get('consumption')} of {scope} {target} crossed "
                        f"{row.get('threshold_percent')}% of its budget {row.get('budget')} in {newest}",
                        customer=target if scope == BudgetScope.CUSTOMER.value else None,
                        subscription=target if scope == BudgetScope.SUBSCRIPTION.value else None,
                        since=row.get("crossed_at"),
                        fix="review the consumption with the customer, or change the budget (pcsync budgets set)")

    def check(self, provider_id: str, period: str, consumption: Mapping[tuple[str, str], Decimal]) -> int:
        """Record each budget crossed by ``consumption`` ((customer, subscription) -> amount) once
        per period; returns how many alerts are new."""
        by_customer: dict[str, Decimal] = {}
        for (customer, _), amount in consumption.items():
            by_customer[customer] = by_customer.get(customer, Decimal(0)) + amount
        by_subscription = {subscription: amount for (_, subscription), amount in consumption.items()}
        new = 0
        for budget in self.budgets(provider_id):
            spent = (by_customer if budget.scope is BudgetScope.CUSTOMER else by_subscription).get(budget.target)
            if spent is not None and spent >= budget.threshold and budget.amount > 0:
                new += self._alert(provider_id, period, budget, spent)
        return new

    def _alert(self, provider_id: str, period: str, budget: Budget, spent: Decimal) -> int:
        table = self.tables.table(ALERTS_TABLE)
        key = escape_key(f"{period}|{budget.scope.value}|{budget.target}")
        if table.find_entity(escape_key(provider_id), key) is not None:
            return 0  # once per period
        table.upsert_entity({"PartitionKey": escape_key(provider_id), "RowKey": key, "period": period,
                             "scope": budget.scope.value, "target": budget.target, "consumption": plain(spent),
                             "budget": plain(budget.amount), "threshold_percent": plain(budget.threshold_percent),
                             "crossed_at": to_iso(self._now())})
        log.warning("budget crossed: %s %s of %s consumed %s of %s (threshold %s%%) in %s", budget.scope.value,
                    budget.target, provider_id, plain(spent), plain(budget.amount), plain(budget.threshold_percent),
                    period, extra={"provider_id": provider_id})
        return 1


__all__ = ["ALERTS_TABLE", "BUDGETS_TABLE", "Budget", "BudgetScope", "BudgetService", "parse_budget"]
