"""What the operator asks before a renewal, from the synced tables (reads only):

* the renewal horizon: subscriptions whose term ends within N days, with their end-of-term
  action, the last day a seat reduction or cancellation is still allowed
  (``cancellationAllowedUntilDate``) and the price basis of what follows; monthly terms that
  renew unchanged are the monthly auto-renew noise and are left out unless asked for;
* each customer's agreement state: whether it may order (an MCA accepted on or after
  2023-04-01, or an attestation that ended in ``agreement_created``) or is blocked.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping

from shared.clock import parse_iso, to_iso
from shared.tables import escape_key

from ..queries import Query
from ..streams import AGREEMENTS, CUSTOMERS
from .alerts import provider_subscriptions
from .attestation import REATTEST_BEFORE, AttestationState
from .end_of_term import EndOfTerm
from .log import WRITEBACK_TABLE
from .record import WritebackRecord
from .request import CONFIRM_AGREEMENT


def price_basis(row: Mapping[str, Any], action: str) -> str:
    """How what follows the term is priced (2025-04-01 rules; EST since 2026-05-04)."""
    if action == EndOfTerm.CANCEL:
        return "ends at term end: nothing follows"
    if action in (EndOfTerm.EST, "unset"):
        return "Extended Service Term: monthly list price +3 % (+23 % where no monthly plan exists), billed monthly"
    term, cycle = str(row.get("termDuration") or "").upper(), str(row.get("billingCycle") or "").lower()
    if term == "P1M":
        return "monthly term (+20 % over the annual term)"
    if cycle == "monthly":
        return f"{term or 'term'} billed monthly (+5 % over paying the term up front)"
    return f"{term or 'term'} billed {cycle or 'per term'}"


def renewals(tables: Any, provider_id: str, *, days: int, now: datetime, include_all: bool = False) -> list[dict]:
    """Active new-commerce subscriptions whose term ends within ``days``, soonest first."""
    horizon = now + timedelta(days=days)
    found = []
    for row in provider_subscriptions(tables, provider_id, where=Query().equal("isNce", True)):
        end = parse_iso(row.get("commitmentEndDate"))
        if end is None or not now <= end <= horizon or str(row.get("status") or "").lower() != "active":
            continue
        action = str(row.get("endOfTermAction") or ("renew" if row.get("autoRenewEnabled") else "unset"))
        unchanged = action == EndOfTerm.RENEW and not row.get("scheduledNextTermInstructions")
        if str(row.get("termDuration") or "").upper() == "P1M" and unchanged and not include_all:
            continue
        found.append({"id": row.get("id"), "customer": row.get("customer_id"), "offerName": row.get("offerName"),
                      "quantity": row.get("quantity"), "termEnd": to_iso(end), "termDuration": row.get("termDuration"),
                      "billingCycle": row.get("billingCycle"), "endOfTerm": action,
                      "extendedServiceTerm": bool(row.get("isExtendedServiceTerm")),
                      "lastReductionDay": row.get("cancellationAllowedUntilDate"),
                      "nextTerm": row.get("scheduledNextTermInstructions"), "priceBasis": price_basis(row, action)})
    return sorted(found, key=lambda item: (item["termEnd"], str(item["id"])))


def _rows(table: Any, query: Query) -> Iterator[dict[str, Any]]:
    for entity in table.client.query_entities(query.text, parameters=query.parameters):
        yield dict(entity)


def _latest_confirmation(tables: Any, provider_id: str, customer_id: str) -> WritebackRecord | None:
    query = Query().partition(escape_key(provider_id)).equal("customer_id", customer_id) \
        .equal("operation", CONFIRM_AGREEMENT)
    records = [WritebackRecord.from_entity(row) for row in _rows(tables.table(WRITEBACK_TABLE), query)]
    return max(records, key=lambda r: to_iso(r.accepted_at) or "", default=None)


def customer_agreement_state(tables: Any, provider_id: str, customer: Mapping[str, Any]) -> dict[str, Any]:
    """One customer's agreement state, its time and evidence, and whether ordering is blocked."""
    customer_id = str(customer.get("id"))
    agreements = [row for row in _rows(tables.table(AGREEMENTS.table),
                                       Query().partition(AGREEMENTS.partition_key(provider_id, customer_id)))
                  if not row.get("removed")]
    newest = max((str(row.get("dateAgreed") or "") for row in agreements), default="")
    record = _latest_confirmation(tables, provider_id, customer_id)
    attestation = (record.attestation or {}) if record else {}
    if newest >= REATTEST_BEFORE:
        state, since, evidence = AttestationState.AGREEMENT_CREATED.value, newest, f"agreement dated {newest}"
    elif attestation.get("state"):
        state, since = attestation["state"], attestation.get("at")
        evidence = f"write-back {record.idempotency_key}: " + (attestation.get("link") or record.reason or "")
    else:
        state, since = AttestationState.REQUIRED.value, newest or None
        evidence = f"agreement dated {newest} predates {REATTEST_BEFORE}" if newest else "no agreement synced"
    return {"customer": customer_id, "companyName": customer.get("companyName"), "state": state, "since": since,
            "blocked": state != AttestationState.AGREEMENT_CREATED, "evidence": evidence}


def agreement_status(tables: Any, provider_id: str, *, blocked_only: bool = False) -> list[dict[str, Any]]:
    """Every synced customer's agreement state (blocked ones first)."""
    customers = [row for row in _rows(tables.table(CUSTOMERS.table), Query().partition(escape_key(provider_id)))
                 if not row.get("removed")]
    states = [customer_agreement_state(tables, provider_id, customer) for customer in customers]
    if blocked_only:
        states = [state for state in states if state["blocked"]]
    return sorted(states, key=lambda s: (not s["blocked"], s["customer"]))


__all__ = ["agreement_status", "customer_agreement_state", "price_basis", "renewals"]
