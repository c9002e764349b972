"""The write-back record: what was asked, where it stands, and what Partner Center answered.

One row per request in table ``writebackops``; the state column holds ``WritebackState`` values.
"""
from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from shared.clock import parse_iso, to_iso
from shared.tables import escape_key, unescape_key

from .request import WritebackRequest


class WritebackState(enum.StrEnum):
    """Where a write-back stands, as stored in column ``state`` (str-valued: stored values are
    these strings)."""

    ACCEPTED = "accepted"  # logged, waiting to be applied (or to be queued again)
    APPLYING = "applying"  # claimed by a delivery; a redelivery re-reads the resource first
    SUCCEEDED = "succeeded"  # Partner Center shows the change (or already did)
    # The one meaning of "rejected" in this package: the terminal state of a request that was
    # refused - by validation (a bad queue message), a local business rule, missing consent or
    # Partner Center itself. It is never retried; the reason (and code) say why.
    REJECTED = "rejected"
    FAILED = "failed"  # a transient failure; the message is redelivered, or resubmitted after poison
    PENDING_CONFIRMATION = "pending_confirmation"  # Partner Center answered 202; polling for the change
    UNCONFIRMED = "unconfirmed"  # 202, but the change was not visible after the bounded polls
    # A PATCH went out whose outcome was never seen (process killed, answer lost) and the field
    # has moved in Partner Center since: it is not sent again, so the newer upstream value stands.
    # Terminal; the reason holds the evidence (what was sent, when, from which etag, what is there now).
    CONFLICT = "conflict"
    # Held in the log until its ``effectiveDate``; the write-backs timer applies it when due.
    SCHEDULED = "scheduled"
    # An earlier write-back on the same subscription did not succeed (``blocked_by`` names it):
    # applying this one could build on a change that never happened. It waits until the blocker
    # is retried (and succeeds) or dismissed.
    BLOCKED = "blocked"
    # Waiting on someone outside pcsync: the customer's acceptance of an attestation link. The
    # write-backs timer re-checks it.
    WAITING = "waiting"
    # An operator dismissed it (``pcsync writeback dismiss``): final, never applied, and it no
    # longer blocks later write-backs on its subscription.
    DISMISSED = "dismissed"


FINAL_STATES = frozenset({WritebackState.SUCCEEDED, WritebackState.REJECTED, WritebackState.UNCONFIRMED,
                          WritebackState.CONFLICT, WritebackState.DISMISSED})
# Did not succeed and was not dismissed: blocks the later write-backs on its subscription.
BLOCKING_STATES = frozenset({WritebackState.FAILED, WritebackState.REJECTED, WritebackState.UNCONFIRMED,
                             WritebackState.CONFLICT, WritebackState.BLOCKED})
# ``retry`` starts these again; ``dismiss`` ends these (and scheduled, blocked, waiting ones).
RETRYABLE_STATES = frozenset({WritebackState.FAILED, WritebackState.REJECTED, WritebackState.UNCONFIRMED,
                              WritebackState.CONFLICT})
DISMISSABLE_STATES = RETRYABLE_STATES | {WritebackState.SCHEDULED, WritebackState.BLOCKED, WritebackState.WAITING}
# What an operator may do in each state, in WritebackState order: the list route sends this map
# (``states``) and the admin page builds its state filter and its Retry/Dismiss buttons from it.
OPERATOR_ACTIONS = {state.value: [action for action, allowed in (("retry", RETRYABLE_STATES),
                                                                 ("dismiss", DISMISSABLE_STATES)) if state in allowed]
                    for state in WritebackState}
# States in which a delivery holds the record (its claim lasts the service's lease from ``updated_at``).
CLAIMED_STATES = frozenset({WritebackState.APPLYING, WritebackState.PENDING_CONFIRMATION})


class EnqueueState(enum.StrEnum):
    """Column ``enqueue``: who puts the record's one queue message on the queue."""

    SENDING = "sending"  # a caller owns the enqueue (since ``enqueued_at``); others do not send
    SENT = "sent"  # the message is on the queue (or was already delivered)
    UNSENT = "unsent"  # the send failed; the next submission of the key sends it


class LocalUpdate(enum.StrEnum):
    """Column ``local_update``: whether the local ``subscriptions``/``agreements`` row follows."""

    STORED = "stored"
    FAILED = "failed"  # Partner Center has the change; the local row does not (the next sync stores it)


@dataclass
class WritebackRecord:
    provider_id: str
    idempotency_key: str
    customer_id: str = ""
    operation: str = ""
    subscription_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    state: WritebackState = WritebackState.ACCEPTED
    reason: str | None = None
    error_code: str | None = None
    attempts: int = 0
    request_id: str | None = None
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    location: str | None = None
    source: str = ""
    requested_by: str | None = None
    message_id: str | None = None
    # the PATCH that went out: etag it was computed from, MS-RequestId, when, the changes, and
    # ``answer`` once Partner Center's answer is known (absent: it may or may not have landed)
    sent: dict[str, Any] | None = None
    enqueue: EnqueueState | None = None
    enqueued_at: datetime | None = None
    local_update: LocalUpdate | None = None
    local_update_reason: str | None = None
    blocked_by: str | None = None  # the idempotency key of the write-back this one waits behind
    scheduled_for: datetime | None = None  # when a scheduled write-back becomes due
    # what pcsync re-checks after Partner Center's settling time (an end-of-term action: drift)
    verification: dict[str, Any] | None = None
    attestation: dict[str, Any] | None = None  # agreement.confirm: the attestation state machine
    warnings: list[str] = field(default_factory=list)
    accepted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    etag: str | None = field(default=None, repr=False, compare=False)  # the table row's, for claims

    @classmethod
    def for_request(cls, request: WritebackRequest, *, source: str, now: datetime) -> "WritebackRecord":
        due = parse_iso(request.effective_date) if request.effective_date else None
        scheduled = due is not None and due > now
        return cls(provider_id=request.provider_id, idempotency_key=request.idempotency_key,
                   customer_id=request.customer_id, operation=request.operation,
                   subscription_id=request.subscription_id, params=request.params(),
                   fingerprint=request.fingerprint(), source=source, requested_by=request.requested_by,
                   state=WritebackState.SCHEDULED if scheduled else WritebackState.ACCEPTED,
                   scheduled_for=due if scheduled else None, accepted_at=now, updated_at=now)

    @property
    def order_moment(self) -> datetime | None:
        """Where the record stands in its subscription's order: when it is due (submission, or
        the effective date of a scheduled one)."""
        return self.scheduled_for or self.accepted_at

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def request(self) -> WritebackRequest:
        return WritebackRequest.from_params(self.params, idempotency_key=self.idempotency_key,
                                            provider_id=self.provider_id, customer_id=self.customer_id,
                                            operation=self.operation, subscription_id=self.subscription_id,
                                            requested_by=self.requested_by)

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": escape_key(self.provider_id),
            "RowKey": escape_key(self.idempotency_key),
            "idempotency_key": self.idempotency_key,
            "provider_id": self.provider_id,
            "customer_id": self.customer_id,
            "operation": self.operation,
            "subscription_id": self.subscription_id or "",
            "params": json.dumps(self.params, sort_keys=True),
            "fingerprint": self.fingerprint,
            "state": WritebackState(self.state).value,  # a plain str for the table SDK
            "reason": (self.reason or "")[:4000],
            "error_code": self.error_code or "",
            "attempts": self.attempts,
            "request_id": self.request_id or "",
            "correlation_id": self.correlation_id,
            "before": json.dumps(self.before, sort_keys=True) if self.before is not None else "",
            "after": json.dumps(self.after, sort_keys=True) if self.after is not None else "",
            "location": self.location or "",
            "source": self.source,
            "requested_by": self.requested_by or "",
            "message_id": self.message_id or "",
            "sent": json.dumps(self.sent, sort_keys=True) if self.sent is not None else "",
            "enqueue": EnqueueState(self.enqueue).value if self.enqueue else "",
            "local_update": LocalUpdate(self.local_update).value if self.local_update else "",
            "local_update_reason": (self.local_update_reason or "")[:4000],
            "blocked_by": self.blocked_by or "",
            "verification": _dumps(self.verification),
            "verification_state": str((self.verification or {}).get("state") or ""),
            "attestation": _dumps(self.attestation),
            "warnings": json.dumps(self.warnings) if self.warnings else "",
        }
        for name in ("accepted_at", "started_at", "finished_at", "updated_at", "enqueued_at", "scheduled_for"):
            value = getattr(self, name)
            if value is not None:
                entity[name] = value
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any], etag: str | None = None) -> "WritebackRecord":
        def text(name: str) -> str | None:
            value = entity.get(name)
            return None if value in (None, "") else str(value)

        def loads(name: str) -> Any:  # our own columns, written by to_entity
            value = text(name)
            return json.loads(value) if value else None

        def when(name: str) -> datetime | None:
            return parse_iso(entity.get(name))

        return cls(
            provider_id=text("provider_id") or unescape_key(entity["PartitionKey"]),
            idempotency_key=text("idempotency_key") or unescape_key(entity["RowKey"]),
            customer_id=text("customer_id") or "", operation=text("operation") or "",
            subscription_id=text("subscription_id"), params=loads("params") or {},
            fingerprint=text("fingerprint") or "", state=WritebackState(text("state") or WritebackState.ACCEPTED),
            reason=text("reason"),
            error_code=text("error_code"), attempts=int(entity.get("attempts") or 0), request_id=text("request_id"),
            correlation_id=text("correlation_id") or str(uuid.uuid4()), before=loads("before"), after=loads("after"),
            location=text("location"), source=text("source") or "", requested_by=text("requested_by"),
            message_id=text("message_id"), sent=loads("sent"),
            enqueue=EnqueueState(text("enqueue")) if text("enqueue") else None, enqueued_at=when("enqueued_at"),
            local_update=LocalUpdate(text("local_update")) if text("local_update") else None,
            local_update_reason=text("local_update_reason"), blocked_by=text("blocked_by"),
            scheduled_for=when("scheduled_for"), verification=loads("verification"), attestation=loads("attestation"),
            warnings=loads("warnings") or [], accepted_at=when("accepted_at"), started_at=when("started_at"),
            finished_at=when("finished_at"), updated_at=when("updated_at"), etag=etag,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "idempotencyKey": self.idempotency_key, "provider": self.provider_id, "customer": self.customer_id,
            "operation": self.operation, "subscription": self.subscription_id, "params": self.params,
            "state": WritebackState(self.state).value, "reason": self.reason, "errorCode": self.error_code,
            "attempts": self.attempts, "requestId": self.request_id, "correlationId": self.correlation_id,
            "before": self.before, "after": self.after, "location": self.location, "source": self.source,
            "requestedBy": self.requested_by, "sent": self.sent,
            "enqueue": self.enqueue.value if self.enqueue else None, "enqueuedAt": to_iso(self.enqueued_at),
            "localUpdate": self.local_update.value if self.local_update else None,
            "localUpdateReason": self.local_update_reason, "acceptedAt": to_iso(self.accepted_at),
            "startedAt": to_iso(self.started_at), "finishedAt": to_iso(self.finished_at),
            "updatedAt": to_iso(self.updated_at),
            # the list route's contract (the admin page reads these names)
            "key": self.idempotency_key, "blockedBy": self.blocked_by, "submittedAt": to_iso(self.accepted_at),
            "error": self.error_text(), "scheduledFor": to_iso(self.scheduled_for),
            "verification": self.verification, "attestation": self.attestation, "warnings": list(self.warnings),
        }

    def error_text(self) -> str | None:
        """What went wrong, for a record that did not succeed (None otherwise)."""
        if self.state in (WritebackState.SUCCEEDED, WritebackState.ACCEPTED, WritebackState.APPLYING,
                          WritebackState.PENDING_CONFIRMATION, WritebackState.SCHEDULED):
            return None
        if self.state == WritebackState.BLOCKED:
            return f"blocked by write-back {self.blocked_by!r}" + (f": {self.reason}" if self.reason else "")
        code = f" [{self.error_code}]" if self.error_code else ""
        return f"{self.reason or self.state}{code}"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if value is not None else ""


__all__ = ["BLOCKING_STATES", "CLAIMED_STATES", "DISMISSABLE_STATES", "EnqueueState", "FINAL_STATES", "OPERATOR_ACTIONS",
           "RETRYABLE_STATES", "LocalUpdate", "WritebackRecord", "WritebackState"]
