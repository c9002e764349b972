"""Preview a write-back: would Partner Center accept it now, only at renewal, or never, and why
(pure; the service reads the subscription with a GET and calls no write API).

The answer names the dates that decide it (the cancellation/reduction window's end, the term's
end, the effective date) and warns when an immediate change would delete Partner Center's
scheduled changes ("If you make a mid-term (immediate) change before your renewal date, all
scheduled changes ... are deleted").
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Mapping

from shared.clock import parse_iso, to_iso
from shared.jsonutil import as_bool, get_path

from ..resources import is_nce
from .end_of_term import is_software, next_term, scheduled_actions
from .request import CANCEL, CONFIRM_AGREEMENT, QUANTITY, REACTIVATE, SUSPEND, WritebackRequest
from .rules import DecisionKind, decide, end_of_term_action, snapshot

# Immediate changes that Partner Center counts as mid-term changes.
MID_TERM_OPERATIONS = frozenset({QUANTITY, SUSPEND, REACTIVATE, CANCEL})


class PreviewWhen(enum.StrEnum):
    NOW = "now"  # accepted now
    SCHEDULED = "scheduled"  # held until its effectiveDate, then applied
    AT_RENEWAL = "atRenewal"  # only as a change at renewal (term end)
    NEVER = "never"  # refused whenever it is sent
    UNCHANGED = "unchanged"  # Partner Center already shows it


def _dates(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {"now": to_iso(now), "cancellationAllowedUntilDate": get_path(subscription, "cancellationAllowedUntilDate"),
            "commitmentEndDate": get_path(subscription, "commitmentEndDate"), "effectiveDate": request.effective_date}


def _warnings(request: WritebackRequest, subscription: Mapping[str, Any]) -> list[str]:
    if request.operation not in MID_TERM_OPERATIONS or request.at_renewal or not is_nce(subscription):
        return []
    scheduled = [a for a in scheduled_actions(subscription)
                 if str(get_path(a, "actionType") or "").lower() != "renewtonewterm"]
    if next_term(subscription) or scheduled:
        return ["this is a mid-term change: Partner Center deletes the subscription's scheduled changes "
                "(next-term instructions and scheduled actions) when it applies it; pcsync re-checks after "
                "applying and the record warns when they are gone"]
    return []


def _at_renewal_instead(request: WritebackRequest, subscription: Mapping[str, Any], code: str | None) -> str | None:
    """What to send instead when the change is possible only at renewal (None: not possible then either)."""
    if not is_nce(subscription) or str(get_path(subscription, "status") or "").lower() != "active":
        return None
    if request.operation == QUANTITY and code == "800090" and not is_software(subscription):
        end = get_path(subscription, "commitmentEndDate")
        if not as_bool(get_path(subscription, "autoRenewEnabled")):
            return (f"a reduction can take effect at renewal ({end}) after choosing renew: subscription.endOfTerm "
                    "renew with nextTerm.quantity")
        return f"a reduction can take effect at renewal ({end}): submit it with atRenewal: true"
    if request.operation == CANCEL and code == "900117":
        return (f"it can end at term end ({get_path(subscription, 'commitmentEndDate')}): choose cancel at term end "
                "(subscription.endOfTerm with action cancel)")
    return None


def preview(request: WritebackRequest, subscription: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """``{allowed, when, reason, code, dates, warnings, current}`` for the request on the resource."""
    if request.operation == CONFIRM_AGREEMENT or subscription is None:
        return {"allowed": True, "when": PreviewWhen.NOW.value, "reason": "the attestation starts: the customer "
                "gets a link to accept the Microsoft Customer Agreement", "code": None,
                "dates": {"now": to_iso(now)}, "warnings": []}
    decision = decide(request, subscription, now)
    answer: dict[str, Any] = {"dates": _dates(request, subscription, now), "warnings": _warnings(request, subscription),
                              "current": {k: v for k, v in snapshot(subscription).items() if k != "etag"},
                              "code": decision.code}
    due = parse_iso(request.effective_date) if request.effective_date else None
    if decision.kind is DecisionKind.NOOP:
        return {**answer, "allowed": True, "when": PreviewWhen.UNCHANGED.value, "reason": decision.reason}
    if decision.kind is DecisionKind.PATCH:
        if due is not None and due > now:
            when, reason = PreviewWhen.SCHEDULED, f"held until {to_iso(due)}, then applied (re-checked then)"
        elif request.at_renewal or end_of_term_action(request, subscription):
            when, reason = PreviewWhen.AT_RENEWAL, "accepted now as a change that takes effect at renewal " \
                f"({get_path(subscription, 'commitmentEndDate')})"
        else:
            when, reason = PreviewWhen.NOW, "accepted now"
        return {**answer, "allowed": True, "when": when.value, "reason": reason}
    instead = _at_renewal_instead(request, subscription, decision.code)
    if instead:
        return {**answer, "allowed": False, "when": PreviewWhen.AT_RENEWAL.value,
                "reason": f"{decision.reason}; {instead}"}
    return {**answer, "allowed": False, "when": PreviewWhen.NEVER.value, "reason": decision.reason}


__all__ = ["PreviewWhen", "preview"]
