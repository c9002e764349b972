"""New-commerce end of term (issue 11): scheduled actions, Extended Service Terms (EST), the
24-hour "auto-renew off becomes EST" trap, one change at a time, pending operations, and
renewal on the simulator clock.

Wire model (see simulator/STATUS.md, "End of term"):

* ``scheduledActions[]``: ``{actionType, scheduleType, effectiveDate, instructions}`` with
  ``actionType`` in Cancel | RenewToNewTerm | RenewToExtendedServiceTerm | Transition and
  ``scheduleType`` in TermEnd | CustomDate. ``instructions`` of a RenewToNewTerm action are the
  subscription's ``scheduledNextTermInstructions``.
* ``autoRenewEnabled`` must agree with the action: renew (RenewToNewTerm, Transition) -> true;
  Cancel or RenewToExtendedServiceTerm -> false.
* A subscription in EST shows ``isExtendedServiceTerm: true``, an ``offerName`` ending in
  " - Extended Service Term", monthly term and billing, and allows only cancellation.

Every function here expects the caller to hold the state lock.
"""
from __future__ import annotations

import datetime as dt
import zlib

from simulator.clock import iso, parse_iso
from simulator.data import NCE_PRODUCTS, Subscription
from simulator.pc_common import fail

CANCEL, RENEW, EST, TRANSITION = "Cancel", "RenewToNewTerm", "RenewToExtendedServiceTerm", "Transition"
ACTION_TYPES = (CANCEL, RENEW, EST, TRANSITION)
TERM_END, CUSTOM_DATE = "TermEnd", "CustomDate"
EST_SUFFIX = " - Extended Service Term"
RENEWING_ACTIONS = (RENEW, TRANSITION)
TERM_DAYS = {"P1M": 30, "P1Y": 365, "P3Y": 1095}
# the groups of properties Partner Center changes one at a time: the end of term is one change
# (auto-renew, its scheduled action and next-term instructions always travel together)
PROPERTY_GROUPS = {"quantity": "quantity", "status": "status", "friendly_name": "friendlyName",
                   "auto_renew": "endOfTerm", "scheduled_actions": "endOfTerm", "scheduled_next_term": "endOfTerm"}
PENDING_TEXT = ("Subscription is not ready to be updated: there's a pending operation on this subscription. "
                "Try again later.")
TRY_AGAIN_TEXT = "There's a pending operation on this subscription. Try again after 24 hours."
EST_ONLY_CANCEL = ("Update operations are no longer allowed for this subscription: it is in an Extended Service "
                   "Term, which can only be cancelled.")


# ---- what a subscription is -----------------------------------------------------------------

def is_software(sub: Subscription) -> bool:
    return str((sub.product_type or {}).get("id", "")).lower() == "software"


def est_eligible(sub: Subscription) -> bool:
    """License-based online services go into EST when they end without renewing; software does not."""
    return sub.nce and not is_software(sub)


def _stable_roll(text: str, modulo: int) -> int:
    return zlib.crc32(text.lower().encode()) % modulo


def seed_end_of_term(sub: Subscription) -> None:
    """The seeded end-of-term action, without drawing from the world's random stream (so the
    rest of the seeded data stays as it was): auto-renewing subscriptions renew; of the others,
    half are set to cancel at term end and half have no action (bound for EST at term end)."""
    if not sub.nce or sub.scheduled_actions:
        return
    if sub.auto_renew:
        sub.scheduled_actions = [action(RENEW)]
    elif _stable_roll(sub.id, 2) == 0:
        sub.scheduled_actions = [action(CANCEL)]


def action(action_type: str, schedule_type: str = TERM_END, effective: dt.datetime | None = None,
           instructions: dict | None = None) -> dict:
    return {"actionType": action_type, "scheduleType": schedule_type, "effectiveDate": effective,
            "instructions": instructions}


def end_of_term_action(sub: Subscription) -> str | None:
    """The action that applies at the end of the current term (None: nothing scheduled)."""
    found = next((a["actionType"] for a in sub.scheduled_actions if a["scheduleType"] == TERM_END), None)
    if found:
        return found
    return RENEW if sub.auto_renew else None


def render_lifecycle(sub: Subscription) -> dict:
    """The end-of-term fields of a new-commerce subscription's JSON."""
    body = {
        "scheduledActions": [{"actionType": a["actionType"], "scheduleType": a["scheduleType"],
                              "effectiveDate": iso(a["effectiveDate"] or sub.commitment_end),
                              "instructions": a["instructions"]} for a in sub.scheduled_actions],
        "isExtendedServiceTerm": sub.extended_service_term,
    }
    if sub.extended_service_term:
        body["extendedServiceTermStartDate"] = iso(sub.est_started or sub.commitment_end)
    return body


def offer_name(sub: Subscription) -> str:
    return sub.offer_name + EST_SUFFIX if sub.extended_service_term else sub.offer_name


# ---- PATCH: parse, check, apply --------------------------------------------------------------

def parse_actions(raw_body: dict, sub: Subscription, now: dt.datetime) -> list[dict] | None:
    """The scheduled actions a PATCH body asks for (None: the body does not mention them)."""
    raw = next((v for k, v in raw_body.items() if str(k).lower() == "scheduledactions"), None)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise fail(400, 3000, "Invalid property: scheduledActions must be a list.", ["scheduledActions"])
    parsed = [_parse_action(item, sub, now) for item in raw]
    if sum(1 for a in parsed if a["scheduleType"] == TERM_END) > 1:
        raise fail(400, 3000, "Invalid property: scheduledActions may hold one TermEnd action.", ["scheduledActions"])
    return parsed


def _parse_action(item, sub: Subscription, now: dt.datetime) -> dict:
    if not isinstance(item, dict):
        raise fail(400, 3000, "Invalid property: each scheduled action must be an object.", ["scheduledActions"])
    fields = {str(k).lower(): v for k, v in item.items()}
    kind = next((t for t in ACTION_TYPES if t.lower() == str(fields.get("actiontype", "")).lower()), None)
    schedule = next((t for t in (TERM_END, CUSTOM_DATE) if t.lower() == str(fields.get("scheduletype")
                                                                             or TERM_END).lower()), None)
    if kind is None or schedule is None:
        raise fail(400, 3000, f"Invalid property: actionType must be one of {', '.join(ACTION_TYPES)} and "
                              f"scheduleType TermEnd or CustomDate.", ["scheduledActions"])
    effective = None
    if schedule == CUSTOM_DATE:
        try:
            effective = parse_iso(str(fields.get("effectivedate") or ""))
        except ValueError:
            raise fail(400, 3000, "Invalid property: a CustomDate action needs an ISO-8601 effectiveDate.",
                       ["effectiveDate"])
        if not now < effective <= sub.commitment_end or kind != CANCEL:
            raise fail(400, 3000, "Invalid property: only Cancel may use CustomDate, with an effectiveDate after "
                                  f"now and on or before the term end {iso(sub.commitment_end)}.", ["effectiveDate"])
    instructions = fields.get("instructions")
    if instructions is not None and (not isinstance(instructions, dict) or kind not in RENEWING_ACTIONS):
        raise fail(400, 3000, "Invalid property: instructions are an object, and only for RenewToNewTerm or "
                              "Transition.", ["instructions"])
    return action(kind, schedule, effective, instructions)


def check_change(sub: Subscription, changes: dict, now: dt.datetime, *, one_at_a_time: bool) -> None:
    """Partner Center's end-of-term rules for a PATCH's changes (before anything is applied)."""
    groups = sorted({PROPERTY_GROUPS[name] for name in changes})
    if one_at_a_time and len(groups) > 1:
        raise fail(400, 2000, "Only one subscription property can be updated per request; this request changes "
                              f"{', '.join(groups)}. Send one change, wait until the subscription is stable, then "
                              "send the next.", groups)
    if sub.extended_service_term:
        cancelling = changes.get("status") == "deleted" or \
            [a["actionType"] for a in changes.get("scheduled_actions") or []] == [CANCEL]
        if not cancelling or set(changes) - {"status", "scheduled_actions", "auto_renew"}:
            raise fail(400, 900279, EST_ONLY_CANCEL)
    if is_software(sub) and changes.get("quantity", sub.quantity) < sub.quantity:
        raise fail(400, 800090, "Subscription quantity cannot be decreased: software subscriptions allow no "
                                "seat reduction.")
    if "scheduled_actions" in changes or "auto_renew" in changes or "scheduled_next_term" in changes:
        _check_end_of_term(sub, changes)


def _check_end_of_term(sub: Subscription, changes: dict) -> None:
    auto_renew = changes.get("auto_renew", sub.auto_renew)
    actions = changes.get("scheduled_actions")
    for item in actions or []:
        wanted = item["actionType"] in RENEWING_ACTIONS
        if item["scheduleType"] == TERM_END and wanted != auto_renew:
            raise fail(400, 3000, f"Invalid property: scheduledActions {item['actionType']} requires "
                                  f"autoRenewEnabled {str(wanted).lower()} (renew: true with RenewToNewTerm; "
                                  "cancel: false with Cancel; EST: false with RenewToExtendedServiceTerm).",
                       ["scheduledActions", "autoRenewEnabled"])
        if item["actionType"] == EST and not est_eligible(sub):
            raise fail(400, 3000, "Invalid property: this subscription is not eligible for an Extended Service "
                                  "Term (software subscriptions end at term end).", ["scheduledActions"])
    if changes.get("scheduled_next_term") and not auto_renew:
        raise fail(400, 800093, "The subscription is not eligible to be auto-renewed: scheduledNextTermInstructions "
                                "need autoRenewEnabled true.")


def apply_end_of_term(sub: Subscription, changes: dict, now: dt.datetime, trap_hours: float) -> None:
    """Set auto-renew, the scheduled actions and the next-term instructions consistently, and arm
    the 24-hour trap when auto-renew was only turned off."""
    if "auto_renew" in changes:
        sub.auto_renew = changes["auto_renew"]
    actions = changes.get("scheduled_actions")
    instructions = changes.get("scheduled_next_term", sub.scheduled_next_term)
    if actions is None:
        actions = [a for a in sub.scheduled_actions if (a["actionType"] in RENEWING_ACTIONS) == sub.auto_renew]
        if sub.auto_renew and not any(a["scheduleType"] == TERM_END for a in actions):
            actions.append(action(RENEW))
    renew = next((a for a in actions if a["actionType"] == RENEW), None)
    if renew is not None:
        if "scheduled_actions" in changes and "scheduled_next_term" not in changes:
            instructions = renew["instructions"]
        renew["instructions"] = instructions
    sub.scheduled_actions = actions
    sub.scheduled_next_term = instructions if sub.auto_renew else None
    sub.est_conversion_at = None
    if not sub.auto_renew and end_of_term_action(sub) is None and est_eligible(sub):
        # "API updates that only set auto-renew to false can be converted to EST within 24 hours"
        sub.est_conversion_at = now + dt.timedelta(hours=trap_hours)


def after_change(sub: Subscription, changes: dict, now: dt.datetime, pending_seconds: float) -> None:
    """A mid-term (immediate) change deletes the changes scheduled for renewal; every accepted
    change leaves the subscription pending for a while."""
    if "quantity" in changes or "status" in changes:
        sub.scheduled_next_term = None
        sub.scheduled_actions = [dict(a, instructions=None) for a in sub.scheduled_actions
                                 if a["actionType"] != TRANSITION]
        if sub.auto_renew and not any(a["scheduleType"] == TERM_END for a in sub.scheduled_actions):
            sub.scheduled_actions.append(action(RENEW))
    if pending_seconds > 0:
        sub.pending_until = now + dt.timedelta(seconds=pending_seconds)


def refuse_if_pending(sub: Subscription, now: dt.datetime) -> None:
    if sub.pending_until is not None and now < sub.pending_until:
        wait = max(1, int((sub.pending_until - now).total_seconds() + 0.999))
        raise fail(409, 900278, PENDING_TEXT, [str(wait)])


# ---- the clock: trap conversions and renewals ------------------------------------------------

def advance(subscriptions, now: dt.datetime, cancellation_days: int) -> list[tuple[Subscription, str, dt.datetime]]:
    """Apply everything that became due by ``now``; returns (subscription, what happened, when)."""
    happened = []
    for sub in subscriptions:
        if not sub.nce or sub.status in ("deleted", "expired"):
            continue
        if sub.est_conversion_at is not None and now >= sub.est_conversion_at:
            due, sub.est_conversion_at = sub.est_conversion_at, None
            if end_of_term_action(sub) is None:
                sub.scheduled_actions = [action(EST)]
                sub.version += 1
                happened.append((sub, "auto-renew off converted to RenewToExtendedServiceTerm", due))
        custom = next((a for a in sub.scheduled_actions if a["scheduleType"] == CUSTOM_DATE), None)
        if custom is not None and now >= custom["effectiveDate"]:
            _end(sub, "expired", custom["effectiveDate"])
            happened.append((sub, "cancelled on its custom date", custom["effectiveDate"]))
            continue
        guard = 0
        while sub.status not in ("deleted", "expired") and now >= sub.commitment_end and guard < 60:
            ended = sub.commitment_end
            happened.append((sub, _term_end(sub, cancellation_days), ended))
            guard += 1
    return happened


def _term_end(sub: Subscription, cancellation_days: int) -> str:
    ended = sub.commitment_end
    chosen = end_of_term_action(sub)
    if sub.extended_service_term:
        # EST continues month by month until cancelled
        sub.commitment_end = ended + dt.timedelta(days=30)
        sub.cancellation_allowed_until = sub.commitment_end
        sub.version += 1
        return "EST continued"
    if chosen in RENEWING_ACTIONS:
        _renew(sub, ended, cancellation_days)
        return "renewed"
    if chosen == EST or (chosen is None and est_eligible(sub)):
        _enter_est(sub, ended)
        return "entered EST" if chosen == EST else "entered EST without an EST action"
    _end(sub, "expired", ended)
    return "cancelled at term end"


def _renew(sub: Subscription, ended: dt.datetime, cancellation_days: int) -> None:
    instructions = sub.scheduled_next_term or {}
    lowered = {str(k).lower(): v for k, v in instructions.items()}
    product = {str(k).lower(): v for k, v in (lowered.get("product") or {}).items()}
    term = product.get("termduration") or sub.term_duration
    if term in TERM_DAYS:
        sub.term_duration = term
    if product.get("billingcycle"):
        sub.billing_cycle = str(product["billingcycle"]).lower()
    if all(product.get(k) for k in ("productid", "skuid", "availabilityid")):
        sub.offer_id = f"{product['productid']}:{product['skuid']}:{product['availabilityid']}"
    quantity = lowered.get("quantity")
    if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity >= 1:
        sub.quantity = quantity
    sub.effective_start = ended
    sub.commitment_end = ended + dt.timedelta(days=TERM_DAYS.get(sub.term_duration, 365))
    sub.cancellation_allowed_until = ended + dt.timedelta(days=cancellation_days)
    sub.scheduled_next_term = None
    sub.scheduled_actions = [action(RENEW)]
    sub.version += 1


def _enter_est(sub: Subscription, ended: dt.datetime) -> None:
    sub.extended_service_term, sub.est_started = True, ended
    sub.auto_renew, sub.scheduled_actions, sub.scheduled_next_term = False, [], None
    sub.term_duration, sub.billing_cycle = "P1M", "monthly"
    sub.effective_start = ended
    sub.commitment_end = ended + dt.timedelta(days=30)
    sub.cancellation_allowed_until = sub.commitment_end  # EST may be cancelled at any time
    sub.version += 1


def _end(sub: Subscription, status: str, when: dt.datetime) -> None:
    sub.status, sub.auto_renew, sub.scheduled_actions, sub.scheduled_next_term = status, False, [], None
    sub.commitment_end = min(sub.commitment_end, when)
    sub.version += 1


def backfill(subscriptions, ids: set[str] | None, now: dt.datetime, immediately: bool) -> list[str]:
    """Microsoft's EST backfill: non-auto-renewing license-based subscriptions without a Cancel
    action get RenewToExtendedServiceTerm (``immediately``: they enter EST now)."""
    changed = []
    for sub in subscriptions:
        if ids is not None and sub.id.lower() not in ids:
            continue
        if sub.status in ("deleted", "expired") or not est_eligible(sub) or sub.auto_renew \
                or sub.extended_service_term or end_of_term_action(sub) == CANCEL:
            continue
        if immediately:
            _enter_est(sub, now)
        else:
            sub.scheduled_actions, sub.est_conversion_at = [action(EST)], None
            sub.version += 1
        changed.append(sub.id)
    return changed


# ---- control API: subscriptions made to order ------------------------------------------------

END_OF_TERM = {"renew": RENEW, "cancel": CANCEL, "est": EST, "none": None}


def typed(key: str, value, kind: type):
    """``value`` as ``kind`` (bool, int, float or str), or ValueError naming ``key``."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)) \
            and (kind is float or float(value).is_integer()):
        return kind(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{key} must be of type {kind.__name__}")


def seed_subscription_options(sub: Subscription, body: dict, now: dt.datetime) -> None:
    """POST /_sim/customers/{id}/subscriptions extras: ``software`` (bool), ``autoRenewEnabled``
    (bool), ``ends_in_days`` (number), ``end_of_term`` (renew|cancel|est|none) and
    ``extended_service_term`` (bool: in EST already). New-commerce subscriptions only; bad input
    raises ValueError."""
    if not sub.nce:
        return
    if "software" in body:
        product = NCE_PRODUCTS[4] if typed("software", body["software"], bool) else NCE_PRODUCTS[0]
        sub.offer_id, sub.offer_name = f"{product[0]}:{product[1]}:{product[2]}", product[3]
        sub.friendly_name, sub.product_type = product[3], {"id": product[4], "displayName": product[5]}
    if "autoRenewEnabled" in body:
        sub.auto_renew = typed("autoRenewEnabled", body["autoRenewEnabled"], bool)
        sub.scheduled_actions = []
    if "ends_in_days" in body:
        days = typed("ends_in_days", body["ends_in_days"], float)
        sub.commitment_end = (now + dt.timedelta(days=days)).replace(microsecond=0)
    if "end_of_term" in body:
        chosen = body["end_of_term"]
        if not isinstance(chosen, str) or chosen not in END_OF_TERM:
            raise ValueError(f"end_of_term must be one of {sorted(END_OF_TERM)}")
        sub.auto_renew = chosen == "renew"
        sub.scheduled_actions = [action(END_OF_TERM[chosen])] if END_OF_TERM[chosen] else []
    if "end_of_term" not in body:
        seed_end_of_term(sub)
    if body.get("extended_service_term") is True:
        backfill([sub], None, now, immediately=True)
