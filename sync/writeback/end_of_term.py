"""A new-commerce subscription's end of term, explicitly (pure; no I/O).

Since Extended Service Terms (EST, enforced 2026-05-04) a licence-based subscription whose
auto-renew is off goes into a paid extension at term end, and an API update that only turns
auto-renew off can be converted to EST within 24 hours unless a cancel action is scheduled. So
pcsync never sends "auto-renew off" alone: each end-of-term action is Partner Center's documented
``scheduledActions`` entry sent together with ``autoRenewEnabled`` consistent with it (one
property for Partner Center's one-change-at-a-time rule):

* renew: ``autoRenewEnabled`` true + ``RenewToNewTerm``; then, in a PATCH of its own, the next
  term's instructions (quantity, term, billing cycle; they need auto-renew on);
* cancel at term end: ``autoRenewEnabled`` false + ``Cancel``;
* EST: ``autoRenewEnabled`` false + ``RenewToExtendedServiceTerm``.

Reading is defensive (camelCase or PascalCase, unknown action types kept as they are).
"""
from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any, Mapping

from shared.jsonutil import as_bool, as_int, get_path

# "API updates that only set auto-renew to false can be converted to EST within 24 hours"
SETTLING_TIME = timedelta(hours=24)
TERM_END = "TermEnd"
TERM_DURATIONS = ("P1M", "P1Y", "P3Y")
BILLING_CYCLES = ("monthly", "annual", "triennial")


class EndOfTerm(enum.StrEnum):
    """The end-of-term action a caller chooses (``action`` in a request)."""

    RENEW = "renew"
    CANCEL = "cancel"
    EST = "extendedServiceTerm"


# An end-of-term action as read from Partner Center: one of EndOfTerm, or neither.
UNSET = "unset"  # auto-renew off and no scheduled action: EST by default for eligible subscriptions

ACTION_TYPES = {EndOfTerm.RENEW: "RenewToNewTerm", EndOfTerm.CANCEL: "Cancel",
                EndOfTerm.EST: "RenewToExtendedServiceTerm"}
_BY_ACTION_TYPE = {value.lower(): action for action, value in ACTION_TYPES.items()}
_ACTION_NAMES = {"renew": EndOfTerm.RENEW, "cancel": EndOfTerm.CANCEL, "extendedserviceterm": EndOfTerm.EST,
                 "est": EndOfTerm.EST}


def parse_action(value: Any) -> str:
    """A request's ``action``, as its EndOfTerm value (raises ValueError with the field's message)."""
    action = _ACTION_NAMES.get(str(value).replace("_", "").replace("-", "").lower()) if isinstance(value, str) else None
    if action is None:
        raise ValueError("must be one of renew, cancel, extendedServiceTerm")
    return action.value


def parse_next_term(value: Any) -> dict[str, Any]:
    """A renewal's next-term instructions: ``quantity``, ``termDuration``, ``billingCycle``."""
    if not isinstance(value, Mapping) or not value:
        raise ValueError("must be an object with quantity, termDuration and/or billingCycle")
    names = {"quantity": "quantity", "termduration": "termDuration", "billingcycle": "billingCycle"}
    problems, parsed = [], {}
    for raw_key, raw in value.items():
        name = names.get(str(raw_key).replace("_", "").lower())
        if name is None:
            problems.append(f"unknown field {str(raw_key)[:40]!r}")
        elif name == "quantity":
            if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 100_000:
                problems.append("quantity must be a whole number between 1 and 100000")
            else:
                parsed[name] = raw
        else:
            allowed = TERM_DURATIONS if name == "termDuration" else BILLING_CYCLES
            match = next((a for a in allowed if isinstance(raw, str) and raw.strip().lower() == a.lower()), None)
            if match is None:
                problems.append(f"{name} must be one of {', '.join(allowed)}")
            else:
                parsed[name] = match
    if problems:
        raise ValueError("; ".join(problems))
    return parsed


# -- reading a subscription -------------------------------------------------------------------


def scheduled_actions(subscription: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = get_path(subscription, "scheduledActions")
    return [dict(item) for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _term_end_action(subscription: Mapping[str, Any]) -> str | None:
    """The actionType scheduled for term end (the last one listed), lower-cased."""
    types = [str(get_path(a, "actionType") or "").lower() for a in scheduled_actions(subscription)
             if str(get_path(a, "scheduleType") or TERM_END).lower() == TERM_END.lower()]
    return types[-1] if types else None


def in_extended_service_term(subscription: Mapping[str, Any]) -> bool:
    """Whether the subscription is in EST now (the flag Partner Center renders, in its forms)."""
    for name in ("isExtendedServiceTerm", "isInExtendedServiceTerm", "extendedServiceTerm"):
        flag = as_bool(get_path(subscription, name))
        if flag is not None:
            return flag
    status = str(get_path(subscription, "status") or "").replace("_", "").lower()
    return status in ("extendedserviceterm", "extendedterm", "est")


def current_action(subscription: Mapping[str, Any]) -> str:
    """The end-of-term action Partner Center holds: an EndOfTerm value or UNSET."""
    action = _BY_ACTION_TYPE.get(_term_end_action(subscription) or "")
    if action is not None:
        return action.value
    return EndOfTerm.RENEW.value if as_bool(get_path(subscription, "autoRenewEnabled")) else UNSET


def next_term(subscription: Mapping[str, Any]) -> dict[str, Any]:
    """The next term's instructions, normalised to quantity / termDuration / billingCycle."""
    instructions = get_path(subscription, "scheduledNextTermInstructions")
    if not isinstance(instructions, Mapping):
        return {}
    found = {"quantity": as_int(get_path(instructions, "quantity")),
             "termDuration": get_path(instructions, "product", "termDuration"),
             "billingCycle": get_path(instructions, "product", "billingCycle")}
    return {name: (value.lower() if name == "billingCycle" and isinstance(value, str) else value)
            for name, value in found.items() if value is not None}


def product_kind(subscription: Mapping[str, Any]) -> str:
    """``productType.id`` (e.g. OnlineServices, Software, Azure), or "" when not given."""
    kind = get_path(subscription, "productType", "id") or get_path(subscription, "productType", "displayName")
    return str(kind or "")


def is_software(subscription: Mapping[str, Any]) -> bool:
    return "software" in product_kind(subscription).lower()


# -- what to send -----------------------------------------------------------------------------


def next_term_matches(wanted: Mapping[str, Any] | None, subscription: Mapping[str, Any]) -> bool:
    current = next_term(subscription)
    return all(current.get(name) == value for name, value in (wanted or {}).items())


def reached(action: str, wanted_next_term: Mapping[str, Any] | None, subscription: Mapping[str, Any]) -> bool:
    """Whether the subscription holds the end of term asked for, auto-renew consistent with it."""
    auto_renew = as_bool(get_path(subscription, "autoRenewEnabled"))
    held = _BY_ACTION_TYPE.get(_term_end_action(subscription) or "")
    if action == EndOfTerm.RENEW:
        return auto_renew is True and held in (None, EndOfTerm.RENEW) and next_term_matches(wanted_next_term,
                                                                                              subscription)
    return auto_renew is False and held == action


def _with_term_end(subscription: Mapping[str, Any], action: str) -> list[dict[str, Any]]:
    """The scheduled actions with the term-end entry replaced by ``action`` (others kept)."""
    kept = [a for a in scheduled_actions(subscription)
            if str(get_path(a, "scheduleType") or TERM_END).lower() != TERM_END.lower()]
    return [*kept, {"actionType": ACTION_TYPES[EndOfTerm(action)], "scheduleType": TERM_END}]


def next_term_instructions(subscription: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """``scheduledNextTermInstructions`` with the wanted parts: the product named by the
    subscription's offer id (product:sku:availability), existing instructions kept."""
    existing = get_path(subscription, "scheduledNextTermInstructions")
    body: dict[str, Any] = dict(existing) if isinstance(existing, Mapping) else {}
    product = dict(get_path(body, "product") or {})
    parts = str(get_path(subscription, "offerId") or "").split(":")
    if len(parts) == 3:
        for name, value in zip(("productId", "skuId", "availabilityId"), parts):
            product.setdefault(name, value)
    product.setdefault("termDuration", get_path(subscription, "termDuration"))
    product.setdefault("billingCycle", get_path(subscription, "billingCycle"))
    for name in ("termDuration", "billingCycle"):
        if name in wanted:
            product[name] = wanted[name]
    body["product"] = product
    body["quantity"] = wanted.get("quantity", get_path(body, "quantity") or get_path(subscription, "quantity"))
    return body


def next_step(action: str, wanted_next_term: Mapping[str, Any] | None,
              subscription: Mapping[str, Any]) -> dict[str, Any] | None:
    """The next PATCH towards the end of term asked for; None when it holds. The action and
    ``autoRenewEnabled`` go together (Partner Center counts them as one property and refuses
    them disagreeing; auto-renew off alone is the EST trap); the next term's instructions
    follow in a PATCH of their own, once auto-renew is on."""
    auto_renew = as_bool(get_path(subscription, "autoRenewEnabled"))
    held = _BY_ACTION_TYPE.get(_term_end_action(subscription) or "")
    wanted_auto_renew = action == EndOfTerm.RENEW
    if auto_renew is not wanted_auto_renew or held not in ((None, EndOfTerm.RENEW) if wanted_auto_renew
                                                           else (EndOfTerm(action),)):
        return {"autoRenewEnabled": wanted_auto_renew, "scheduledActions": _with_term_end(subscription, action)}
    if wanted_auto_renew and not next_term_matches(wanted_next_term, subscription):
        return {"scheduledNextTermInstructions": next_term_instructions(subscription, wanted_next_term or {})}
    return None


def drift(chosen: str, subscription: Mapping[str, Any]) -> str | None:
    """Why the subscription no longer holds the chosen end of term (None when it does)."""
    status = str(get_path(subscription, "status") or "").lower()
    if chosen == EndOfTerm.CANCEL and status in ("deleted", "expired", "disabled"):
        return None  # cancelled at term end, as chosen
    if in_extended_service_term(subscription) and chosen != EndOfTerm.EST:
        return f"the subscription is in Extended Service Term, but {chosen} was chosen"
    held = current_action(subscription)
    if held != chosen and not (chosen == EndOfTerm.EST and in_extended_service_term(subscription)):
        return f"Partner Center holds end-of-term action {held}, but {chosen} was chosen"
    return None


__all__ = [
    "ACTION_TYPES", "EndOfTerm", "SETTLING_TIME", "UNSET", "current_action", "drift", "in_extended_service_term",
    "is_software", "next_step", "next_term", "next_term_instructions", "parse_action", "parse_next_term",
    "product_kind", "reached", "scheduled_actions",
]
