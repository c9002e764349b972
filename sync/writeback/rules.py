"""Partner Center's update rules, decided locally before anything is written (pure; no I/O).

For a subscription change: what the change watches, the value it aims for, and whether to
PATCH, do nothing (already there) or refuse (a rule Partner Center would enforce anyway, with
its error code, so nothing is sent that is bound to fail). For an agreement confirmation: which
template to confirm and whether an existing agreement is the same one. And whether a provider
can take write-backs at all.
"""
from __future__ import annotations

import copy
import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from shared.clock import parse_iso, to_iso
from shared.jsonutil import as_bool, as_enum, as_int, get_path
from shared.providers import ConsentStatus, ProviderConnection

from ..resources import is_nce
from . import end_of_term
from .end_of_term import (
    EndOfTerm,
    current_action,
    in_extended_service_term,
    is_software,
    next_term,
    next_term_instructions,
    next_term_matches,
    scheduled_actions,
)
from .request import (
    AUTO_RENEW,
    AUTO_RENEW_OFF_ALONE,
    CANCEL,
    END_OF_TERM,
    FRIENDLY_NAME,
    QUANTITY,
    REACTIVATE,
    SUSPEND,
    WritebackRequest,
)

MCA_TYPE = "MicrosoftCustomerAgreement"


class DecisionKind(enum.StrEnum):
    PATCH = "patch"  # send the change
    NOOP = "noop"  # Partner Center already shows the target value
    REJECT = "reject"  # refuse the request: the record ends ``rejected`` with the decision's reason


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: str = ""
    code: str | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)  # field -> new value (PATCH)


def _patch(name: str, value: Any) -> Decision:
    return Decision(DecisionKind.PATCH, changes={name: value})


def _reject(reason: str, code: str | None = None) -> Decision:
    return Decision(DecisionKind.REJECT, reason, code)


def snapshot(subscription: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a write-back can change, plus the etag: what ``before``/``after`` record."""
    return {
        "quantity": as_int(get_path(subscription, "quantity")),
        "status": as_enum(get_path(subscription, "status")),
        "autoRenewEnabled": as_bool(get_path(subscription, "autoRenewEnabled")),
        "friendlyName": get_path(subscription, "friendlyName"),
        "endOfTerm": current_action(subscription) if is_nce(subscription) else None,
        "nextTerm": next_term(subscription) or None,
        "nextTermQuantity": next_term(subscription).get("quantity"),
        "extendedServiceTerm": in_extended_service_term(subscription),
        "etag": get_path(subscription, "attributes", "etag"),
    }


def end_of_term_action(request: WritebackRequest, subscription: Mapping[str, Any] | None = None) -> str | None:
    """The end-of-term action the request sets: ``subscription.endOfTerm``, or
    ``subscription.autoRenew`` with an action on a new-commerce subscription; None otherwise."""
    if request.operation == END_OF_TERM:
        return request.action
    if request.operation == AUTO_RENEW and request.action and (subscription is None or is_nce(subscription)):
        return request.action
    return None


def watched_field(request: WritebackRequest, subscription: Mapping[str, Any] | None = None) -> str:
    if end_of_term_action(request, subscription):
        return "endOfTerm"
    if request.operation == QUANTITY and request.at_renewal:
        return "nextTermQuantity"
    return {QUANTITY: "quantity", AUTO_RENEW: "autoRenewEnabled", FRIENDLY_NAME: "friendlyName"}.get(
        request.operation, "status")


def target_value(request: WritebackRequest, subscription: Mapping[str, Any] | None = None) -> Any:
    action = end_of_term_action(request, subscription)
    if action:
        return action
    return {
        QUANTITY: request.quantity, AUTO_RENEW: request.auto_renew, SUSPEND: "suspended",
        REACTIVATE: "active", CANCEL: "deleted", FRIENDLY_NAME: request.friendly_name,
    }[request.operation]


def reached(request: WritebackRequest, subscription: Mapping[str, Any]) -> bool:
    action = end_of_term_action(request, subscription)
    if action:
        return end_of_term.reached(action, request.next_term, subscription)
    return snapshot(subscription)[watched_field(request, subscription)] == target_value(request, subscription)


def cancellation_window(subscription: Mapping[str, Any], now: datetime) -> tuple[bool, str]:
    """(open now, the end as text for reasons) of a new-commerce subscription's cancellation window."""
    end = parse_iso(get_path(subscription, "cancellationAllowedUntilDate"))
    return end is not None and now <= end, to_iso(end) if end else "no date given"


def _not_active(subscription: Mapping[str, Any], what: str) -> Decision | None:
    status = snapshot(subscription)["status"]
    if status == "suspended":
        return _reject(f"{what} cannot change on a suspended subscription; reactivate it first", "800091")
    if status != "active":
        return _reject(f"{what} can only change on an active subscription (status {status})")
    return None


def _quantity(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    target, current = request.quantity, snapshot(subscription)["quantity"]
    refused = _not_active(subscription, "the quantity")
    if refused:
        return refused
    if request.at_renewal:
        return _next_term_quantity(target, subscription)
    if is_nce(subscription) and current is not None and target < current:
        if is_software(subscription):
            return _reject("software subscriptions allow no seat reduction", "800090")
        window_open, window_end = cancellation_window(subscription, now)
        if not window_open:
            return _reject(f"new-commerce quantity cannot be decreased after the cancellation window "
                           f"(cancellationAllowedUntilDate {window_end}); only increases are allowed now", "800090")
        refundable = as_int(get_path(subscription, "refundableQuantity", "totalQuantity"))
        if refundable is not None and current - target > refundable:
            return _reject(f"new-commerce quantity can be decreased by at most {refundable} now "
                           f"(refundableQuantity), not by {current - target}", "800090")
    return _patch("quantity", target)


def _next_term_quantity(target: int, subscription: Mapping[str, Any]) -> Decision:
    """A quantity for the next term: Partner Center's scheduled change (auto-renew must be on)."""
    if not is_nce(subscription):
        return _reject("a quantity at renewal is new-commerce only (scheduled changes)")
    if not as_bool(get_path(subscription, "autoRenewEnabled")):
        return _reject("scheduled changes need auto-renew on: set subscription.endOfTerm renew first "
                       f"(the end of term is {current_action(subscription)})")
    return _patch("scheduledNextTermInstructions", next_term_instructions(subscription, {"quantity": target}))


def _end_of_term(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    action = end_of_term_action(request, subscription)
    if request.operation == AUTO_RENEW and not action:
        if is_nce(subscription) and request.auto_renew is False:  # a record from before the rule
            return _reject(AUTO_RENEW_OFF_ALONE)
        return _not_active(subscription, "auto-renew") or _patch("autoRenewEnabled", request.auto_renew)
    if not is_nce(subscription):
        return _reject("end-of-term actions are new-commerce only; a legacy subscription takes "
                       "subscription.autoRenew true|false")
    refused = _not_active(subscription, "the end-of-term action")
    if refused:
        return refused
    step = end_of_term.next_step(action, request.next_term, subscription)
    if step is None:  # reached; decide() answers before this
        return Decision(DecisionKind.NOOP, f"the end of term is already {action}")
    return Decision(DecisionKind.PATCH, changes=step)


def _friendly_name(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    return _not_active(subscription, "the name") or _patch("friendlyName", request.friendly_name)


def _suspend(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    status = snapshot(subscription)["status"]
    if status != "active":
        return _reject(f"only an active subscription can be suspended (status {status})")
    return _patch("status", "suspended")


def _reactivate(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    status = snapshot(subscription)["status"]
    if status != "suspended":
        return _reject(f"only a suspended subscription can be reactivated (status {status})")
    return _patch("status", "active")


def _cancel(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    status = snapshot(subscription)["status"]
    if not is_nce(subscription):
        return _reject("legacy license-based subscriptions cannot be cancelled; suspend them instead")
    if status not in ("active", "suspended"):
        return _reject(f"the subscription cannot be cancelled in status {status}")
    window_open, window_end = cancellation_window(subscription, now)
    if not window_open and not in_extended_service_term(subscription):  # EST: cancel any time
        return _reject(f"the cancellation window has passed (cancellationAllowedUntilDate {window_end}); "
                       "Partner Center no longer allows cancelling it; choose cancel at term end "
                       "(subscription.endOfTerm cancel)", "900117")
    return _patch("status", "deleted")


_RULES: dict[str, Callable[[WritebackRequest, Mapping[str, Any], datetime], Decision]] = {
    QUANTITY: _quantity, AUTO_RENEW: _end_of_term, END_OF_TERM: _end_of_term, SUSPEND: _suspend,
    REACTIVATE: _reactivate, CANCEL: _cancel, FRIENDLY_NAME: _friendly_name,
}


def est_refusal(request: WritebackRequest, subscription: Mapping[str, Any]) -> Decision | None:
    """A subscription in Extended Service Term takes no change but a cancellation."""
    if not in_extended_service_term(subscription):
        return None
    if request.operation == CANCEL or end_of_term_action(request, subscription) == EndOfTerm.CANCEL:
        return None
    return _reject("the subscription is in Extended Service Term, which allows only cancel "
                   "(subscription.cancel, or subscription.endOfTerm cancel)", "900279")


def decide(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    """Partner Center's update rules, checked on the fresh resource before any PATCH."""
    rule = _RULES.get(request.operation)
    if rule is None:
        raise ValueError(f"not a subscription operation: {request.operation}")
    if reached(request, subscription):
        name, target = watched_field(request, subscription), target_value(request, subscription)
        return Decision(DecisionKind.NOOP, f"{name} is already {json.dumps(target)} in Partner Center")
    if snapshot(subscription)["status"] in ("deleted", "expired"):
        return _reject(f"the subscription is {snapshot(subscription)['status']} in Partner Center and cannot be "
                       "updated", "2011")
    return est_refusal(request, subscription) or rule(request, subscription, now)


def step_visible(changes: Mapping[str, Any], subscription: Mapping[str, Any]) -> bool:
    """Whether a PATCH's one change shows on the resource (its part of a split request landed)."""
    if not changes:
        return False
    for name, value in changes.items():
        if name == "scheduledActions":
            wanted = [str(get_path(a, "actionType")).lower() for a in value]
            if [str(get_path(a, "actionType")).lower() for a in scheduled_actions(subscription)] != wanted:
                return False
        elif name == "scheduledNextTermInstructions":
            wanted = {"quantity": value.get("quantity"), "termDuration": get_path(value, "product", "termDuration"),
                      "billingCycle": get_path(value, "product", "billingCycle")}
            if not next_term_matches({k: v for k, v in wanted.items() if v is not None}, subscription):
                return False
        elif get_path(subscription, name) != value:
            return False
    return True


# -- a PATCH whose answer was never seen ------------------------------------------------------


class Landing(enum.StrEnum):
    """What the fresh resource says about a PATCH that went out without a known answer."""

    NOT_LANDED = "not_landed"  # the resource still has the etag the PATCH was computed from
    REACHED = "reached"  # the field shows the target (ours landed, or an equal change)
    MOVED = "moved"  # the resource changed and the field is not the target: not ours to overwrite


def unanswered(sent: Mapping[str, Any] | None) -> bool:
    """Whether a PATCH went out that may have landed: no answer seen (killed, answer lost) or a
    202 (accepted, maybe not visible yet). A refusal (4xx) or a 200 is a known outcome."""
    return bool(sent) and get_path(sent, "answer") in (None, "202")


def landing(request: WritebackRequest, sent: Mapping[str, Any], fresh: Mapping[str, Any]) -> Landing:
    """Whether the unanswered PATCH ``sent`` landed, from the fresh resource. A PATCH changes
    the etag when it lands, so an unchanged etag proves it did not; a changed one with the field
    elsewhere than our target cannot tell ours from someone else's edit (e.g. suspended by us,
    then reactivated in the portal), so it is never answered by sending again."""
    if reached(request, fresh) or step_visible(get_path(sent, "changes") or {}, fresh):
        return Landing.REACHED
    if snapshot(fresh)["etag"] == get_path(sent, "etag"):
        return Landing.NOT_LANDED
    return Landing.MOVED


def conflict_reason(request: WritebackRequest, sent: Mapping[str, Any], fresh: Mapping[str, Any]) -> str:
    name, target = watched_field(request, fresh), json.dumps(target_value(request, fresh))
    outcome = ("Partner Center accepted it (202)" if get_path(sent, "answer") == "202"
               else "its answer was never seen")
    return (f"possibly applied at {get_path(sent, 'at')} (PATCH MS-RequestId {get_path(sent, 'requestId')} from etag "
            f"{get_path(sent, 'etag')}: {name} {json.dumps(get_path(sent, 'from'))} -> {target}; {outcome}), "
            f"changed in Partner Center since to {json.dumps(snapshot(fresh)[name])}: not sent again, so the newer "
            f"value stands; submit a new request if {target} is still wanted")


def patched(subscription: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The full resource (as read, so its ``attributes.etag`` guards the write) with the change."""
    body = copy.deepcopy(dict(subscription))
    for name, value in changes.items():
        existing = next((k for k in body if k.lower() == name.lower()), name)
        body[existing] = value
    return body


# -- providers --------------------------------------------------------------------------------


def provider_refusal(provider_id: str, provider: ProviderConnection | None) -> tuple[str, str | None] | None:
    """(reason, code) when the provider cannot take write-backs now; None when it can."""
    if provider is None:
        return f"provider {provider_id!r} does not exist", None
    if not provider.enabled:
        return f"provider {provider_id!r} is disabled", None
    problem = _consent_problem(provider)
    if problem:
        return (f"consent needed: the provider's consent is {problem}; an administrator must consent again, "
                "then resubmit", "consent")
    return None


def _consent_problem(provider: ProviderConnection) -> str | None:
    """Why the provider's consent cannot carry a write-back, or None. Stricter than
    ``consent_blocked``: a provider that never finished consenting cannot write either."""
    if provider.consent_status == ConsentStatus.NONE:
        return "none (never consented)"
    if provider.consent_status == ConsentStatus.PENDING and not provider.consented_at:
        return "pending (consent not completed)"
    blocked = provider.consent_blocked
    return blocked.value if blocked else None


# -- agreements -------------------------------------------------------------------------------


def agreement_template(metadata: Any) -> str | None:
    """The Microsoft Customer Agreement template to confirm (the lowest version rank), or None
    when Partner Center lists none (agreement confirmation exists only in the public cloud)."""
    templates = [t for t in (get_path(metadata, "items") or []) if isinstance(t, Mapping)
                 and str(get_path(t, "agreementType") or MCA_TYPE).lower() == MCA_TYPE.lower()
                 and get_path(t, "templateId")]
    if not templates:
        return None
    return str(get_path(min(templates, key=lambda t: as_int(get_path(t, "versionRank")) or 0), "templateId"))


def same_agreement(item: Mapping[str, Any], template_id: str, contact: Mapping[str, str]) -> bool:
    """Whether an agreement Partner Center lists is the confirmation we would create."""
    def norm(value: Any) -> str:
        return str(value or "").strip().lower()
    return (norm(get_path(item, "templateId")) == norm(template_id)
            and all(norm(get_path(item, "primaryContact", k)) == norm(contact.get(k))
                    for k in ("firstName", "lastName", "email", "phoneNumber")))


def agreement_summary(item: Mapping[str, Any]) -> dict[str, Any]:
    """What a confirmation's record shows as ``after``."""
    return {"templateId": get_path(item, "templateId"), "type": get_path(item, "type"),
            "dateAgreed": get_path(item, "dateAgreed"), "contactEmail": get_path(item, "primaryContact", "email"),
            "userId": get_path(item, "userId")}


__all__ = [
    "Decision", "DecisionKind", "Landing", "MCA_TYPE", "agreement_summary", "agreement_template", "cancellation_window",
    "conflict_reason", "decide", "end_of_term_action", "est_refusal", "step_visible", "landing", "patched", "provider_refusal", "reached", "same_agreement", "snapshot", "target_value",
    "unanswered", "watched_field",
]
