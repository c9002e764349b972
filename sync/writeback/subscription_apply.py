"""Applying a subscription write-back: GET, decide, PATCH one property, confirm (a mixin of
WritebackApplier; see applier.py for the claim and the record's states).

Partner Center accepts one subscription property change at a time, so a request that needs
several (an end-of-term action: the scheduled action, then ``autoRenewEnabled``, then the next
term's instructions) is applied as steps: each step PATCHes one property from the fresh resource,
is polled until Partner Center shows it, and the request is decided again on what it shows.
Refusals that mean "not now" (409 a pending operation, "not ready to be updated", ``900278``
"try again later") were refused before anything ran, so they are sent again with backoff.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping
from urllib.parse import quote

from shared.clock import to_iso
from shared.jsonutil import get_path
from shared.logging import get_logger
from shared.partner_center_errors import BadRequestError, ConflictError, NotFoundError, PartnerCenterError

from .end_of_term import SETTLING_TIME
from .record import WritebackRecord, WritebackState
from .request import WritebackRequest
from .wire import error_code as _code
from .wire import refused as _refused
from .rules import (
    Decision,
    DecisionKind,
    Landing,
    conflict_reason,
    decide,
    end_of_term_action,
    landing,
    patched,
    reached,
    snapshot,
    step_visible,
    target_value,
    unanswered,
    watched_field,
)

log = get_logger(__name__)

MAX_STEPS = 4  # an end of term takes at most three properties; one more to see it settle
# Backoff between sends refused as "not now" (seconds); then the record is ``failed`` and the
# queue's redelivery tries again later.
BUSY_BACKOFF = (2.0, 5.0, 10.0, 20.0)
BUSY_CODES = frozenset({"900278"})
BUSY_WORDS = ("not ready to be updated", "try again later", "pending operation", "being processed")


class PartnerCenterBusy(Exception):
    """Partner Center kept refusing a change as "not now"; transient (nothing was applied)."""


def is_busy(exc: PartnerCenterError) -> bool:
    """A refusal that means "try again later": nothing ran, sending again is safe."""
    text = str(exc.description or exc).lower()
    return (isinstance(exc, ConflictError) or str(exc.code or "") in BUSY_CODES
            or any(word in text for word in BUSY_WORDS))


def subscription_path(record: WritebackRecord) -> str:
    return (f"/customers/{quote(record.customer_id, safe='')}"
            f"/subscriptions/{quote(record.subscription_id or '', safe='')}")


class SubscriptionSteps:
    """The subscription half of WritebackApplier (uses its _save/_finish/_succeed/_reject)."""

    def _apply_subscription(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        path = subscription_path(record)
        try:
            subscription = client.get_json(path, customer_id=record.customer_id)
        except NotFoundError as exc:
            return self._reject(record, "the subscription does not exist in Partner Center", code=_code(exc))
        if record.before is None:
            record.before = snapshot(subscription)
        record.sent = record.sent or self._legacy_sent(record, request)
        if unanswered(record.sent):
            settled = self._after_unanswered(record, request, subscription)
            if settled is not None:
                return settled
        for _ in range(MAX_STEPS):
            outcome = self._one_step(record, request, client, path, subscription)
            if isinstance(outcome, WritebackRecord):
                return outcome
            subscription = outcome
        return self._reject(record, f"Partner Center did not settle on the change after {MAX_STEPS} steps")

    def _one_step(self, record: WritebackRecord, request: WritebackRequest, client: Any, path: str,
                  subscription: Mapping[str, Any]) -> WritebackRecord | Mapping[str, Any]:
        """Decide and send one PATCH (re-reading once on a stale etag): the finished record, or
        the fresh resource when more steps are needed."""
        read_at = self.clock()
        for round_ in (1, 2):
            decision = decide(request, subscription, self.clock())
            if decision.kind is not DecisionKind.PATCH:
                return self._settle(record, request, subscription, decision)
            try:
                answer = self._send_patch(record, client, path, subscription, decision)
            except BadRequestError as exc:
                if exc.code != "2055":
                    return self._reject(record, _refused("the change", exc), code=exc.code)
                fresh = client.get_json(path, customer_id=record.customer_id)
                settled = self._after_stale_etag(record, request, subscription, fresh, read_at, last=round_ == 2)
                if settled is not None:
                    return settled
                subscription, read_at = fresh, self.clock()
                continue
            return self._after_subscription_write(record, request, client, path, answer, decision)
        raise AssertionError("unreachable: the second round always settles")

    def _after_unanswered(self, record: WritebackRecord, request: WritebackRequest,
                          fresh: Mapping[str, Any]) -> WritebackRecord | None:
        """Settle an earlier PATCH without a known answer from the fresh resource; None when it
        did not land (etag unchanged: the caller sends it again from the same etag) or when it
        landed as one step of several (the caller goes on with the next)."""
        sent = record.sent or {}
        verdict = landing(request, sent, fresh)
        if verdict is Landing.NOT_LANDED:
            log.info("write-back %s/%s: the PATCH sent at %s did not land (etag unchanged); sending it again",
                     record.provider_id, record.idempotency_key, sent.get("at"),
                     extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
            return None
        if verdict is Landing.REACHED and not reached(request, fresh):
            sent["answer"] = "landed"  # its step shows: known applied, the next step follows
            return None
        self._mirror_subscription(record, fresh)
        if verdict is Landing.REACHED:
            name = watched_field(request, fresh)
            return self._succeeded(record, request, fresh, f"{name} is {json.dumps(target_value(request, fresh))} in "
                                   f"Partner Center: the PATCH sent at {sent.get('at')} landed (or an equal change did)")
        return self._finish(record, WritebackState.CONFLICT, conflict_reason(request, sent, fresh),
                            after=snapshot(fresh))

    def _settle(self, record: WritebackRecord, request: WritebackRequest, subscription: Mapping[str, Any],
                decision: Decision) -> WritebackRecord:
        """A decision that sends nothing: already there (succeeded) or refused (rejected)."""
        self._mirror_subscription(record, subscription)
        if decision.kind is DecisionKind.NOOP:
            reason = decision.reason if not record.sent else None  # after our steps: no "already there"
            return self._succeeded(record, request, subscription, reason)
        return self._reject(record, decision.reason, code=decision.code)

    def _send_patch(self, record: WritebackRecord, client: Any, path: str, subscription: Mapping[str, Any],
                    decision: Decision) -> Any:
        etag = get_path(subscription, "attributes", "etag")
        name = next(iter(decision.changes))
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        for attempt, pause in enumerate((*BUSY_BACKOFF, None), start=1):
            record.request_id = self._request_id(record, f"PATCH|{etag}" + (f"|{attempt}" if attempt > 1 else ""))
            record.sent = {"etag": etag, "requestId": record.request_id, "at": to_iso(self.clock()),
                           "changes": dict(decision.changes), "from": snapshot(subscription).get(name)}
            self._save(record)  # what goes out is on record before the call does
            try:
                # not replayed by the transport: a replay of a PATCH that landed is refused 2055, which
                # would hide that it landed; an unanswered PATCH is settled from the fresh resource instead
                answer = client.send_json("PATCH", path, patched(subscription, decision.changes), headers=headers,
                                          customer_id=record.customer_id, replay_safe=False,
                                          request_id=record.request_id)
            except PartnerCenterError as exc:
                if not isinstance(exc, self.ambiguous_errors):  # refused before it ran: known not applied
                    record.sent["answer"] = f"refused {_code(exc)}"
                if isinstance(exc, self.ambiguous_errors) or not is_busy(exc):
                    raise
                if pause is None:
                    raise PartnerCenterBusy(f"Partner Center refused the change {attempt} times as not possible "
                                            f"now ({_code(exc)}: {exc.description or exc})") from exc
                log.info("write-back %s/%s: Partner Center busy (%s); sending again in %ss", record.provider_id,
                         record.idempotency_key, _code(exc), pause,
                         extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
                self.sleep(pause)
                continue
            record.sent["answer"] = str(answer.status)
            return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _after_stale_etag(self, record: WritebackRecord, request: WritebackRequest, read: Mapping[str, Any],
                          fresh: Mapping[str, Any], read_at: datetime, *, last: bool) -> WritebackRecord | None:
        """Settle a PATCH refused for a stale etag (so known not applied: it was sent once and
        any earlier one was settled), given the fresh resource; None means the field we change
        did not move, so the caller recomputes on ``fresh`` and sends once more."""
        name = watched_field(request, fresh)
        if reached(request, fresh):
            self._mirror_subscription(record, fresh)
            return self._succeeded(record, request, fresh, f"{name} already "
                                   f"{json.dumps(target_value(request, fresh))} after an etag refresh")
        was, now_value = snapshot(read)[name], snapshot(fresh)[name]
        if was != now_value:
            self._mirror_subscription(record, fresh)
            return self._reject(record, f"changed in Partner Center since {to_iso(read_at)}: {name} was "
                                f"{json.dumps(was)}, is now {json.dumps(now_value)}; not applied, resubmit if "
                                "still wanted", code="2055")
        if last:
            return self._reject(record, "the subscription kept changing in Partner Center (stale etag twice); "
                                "not applied", code="2055")
        log.info("write-back %s/%s: stale etag, %s unchanged; retrying once on the fresh resource",
                 record.provider_id, record.idempotency_key, name,
                 extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
        return None

    def _after_subscription_write(self, record: WritebackRecord, request: WritebackRequest, client: Any, path: str,
                                  answer: Any, decision: Decision) -> WritebackRecord | Mapping[str, Any]:
        stepped = end_of_term_action(request) is not None or request.at_renewal
        if answer.status == 202:
            return self._confirm_accepted(record, request, client, answer.location or path, decision, stepped)
        current = answer.body if get_path(answer.body, "id") else client.get_json(path, customer_id=record.customer_id)
        if stepped and not reached(request, current):
            return self._until_visible(record, client, path, current, decision)
        self._mirror_subscription(record, current)
        return self._succeeded(record, request, current)

    def _until_visible(self, record: WritebackRecord, client: Any, path: str, current: Mapping[str, Any],
                       decision: Decision) -> Mapping[str, Any]:
        """Poll until this step shows (a stable state) before the next step is decided on it."""
        for _ in range(self.confirm_polls):
            if step_visible(decision.changes, current):
                break
            self._save(record)
            self.sleep(self.confirm_interval)
            current = client.get_json(path, customer_id=record.customer_id)
        return current

    def _confirm_accepted(self, record: WritebackRecord, request: WritebackRequest, client: Any, location: str,
                          decision: Decision, stepped: bool) -> WritebackRecord | Mapping[str, Any]:
        """Partner Center answered 202: poll ``location`` a bounded number of times for the change."""
        record.state, record.location = WritebackState.PENDING_CONFIRMATION, location
        for poll in range(1, self.confirm_polls + 1):
            self._save(record)  # renews the claim while polling
            self.sleep(self.confirm_interval)
            current = client.get_json(location, customer_id=record.customer_id)
            if reached(request, current):
                self._mirror_subscription(record, current)
                return self._succeeded(record, request, current, f"confirmed after 202 on poll {poll}")
            if stepped and step_visible(decision.changes, current):
                record.state = WritebackState.APPLYING
                return current
        return self._finish(record, WritebackState.UNCONFIRMED, f"Partner Center accepted the change (202) but it "
                            f"was not visible after {self.confirm_polls} polls of {location}")

    def _succeeded(self, record: WritebackRecord, request: WritebackRequest, current: Mapping[str, Any],
                   reason: str | None = None) -> WritebackRecord:
        """Succeed, noting what Partner Center deleted on the way (a mid-term change deletes the
        scheduled changes) and, for an end of term, when it is re-checked for drift."""
        after = snapshot(current)
        action = end_of_term_action(request, current)
        before = record.before or {}
        if action is None and before.get("nextTerm") and not after.get("nextTerm") and not request.at_renewal:
            record.warnings.append(f"Partner Center deleted the scheduled next-term changes "
                                   f"{json.dumps(before['nextTerm'], sort_keys=True)} with this mid-term change; "
                                   "set them again if still wanted")
        if action is None and before.get("endOfTerm") not in (None, after.get("endOfTerm")):
            record.warnings.append(f"the end-of-term action changed from {before['endOfTerm']} to "
                                   f"{after.get('endOfTerm')} with this change; check it")
        if action is not None:
            now = self.clock()
            record.verification = {"state": "pending", "action": action, "checkAt": to_iso(now + SETTLING_TIME)}
            self.end_of_term_chosen(record, action)
        return self._succeed(record, reason, after=after)


__all__ = ["BUSY_BACKOFF", "MAX_STEPS", "PartnerCenterBusy", "SubscriptionSteps", "is_busy", "subscription_path"]
