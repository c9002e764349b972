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


FINAL_STATES = frozenset({WritebackState.SUCCEEDED, WritebackState.REJECTED, WritebackState.UNCONFIRMED,
                          WritebackState.CONFLICT})
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
    accepted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    etag: str | None = field(default=None, repr=False, compare=False)  # the table row's, for claims

    @classmethod
    def for_request(cls, request: WritebackRequest, *, source: str, now: datetime) -> "WritebackRecord":
        return cls(provider_id=request.provider_id, idempotency_key=request.idempotency_key,
                   customer_id=request.customer_id, operation=request.operation,
                   subscription_id=request.subscription_id, params=request.params(),
                   fingerprint=request.fingerprint(), source=source, requested_by=request.requested_by,
                   accepted_at=now, updated_at=now)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def request(self) -> WritebackRequest:
        params = self.params
        return WritebackRequest(
            idempotency_key=self.idempotency_key, provider_id=self.provider_id, customer_id=self.customer_id,
            operation=self.operation, subscription_id=self.subscription_id, quantity=params.get("quantity"),
            auto_renew=params.get("autoRenewEnabled"), contact=params.get("contact"),
            date_agreed=params.get("dateAgreed"), requested_by=self.requested_by,
        )

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
        }
        for name in ("accepted_at", "started_at", "finished_at", "updated_at", "enqueued_at"):
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
            local_update_reason=text("local_update_reason"), accepted_at=when("accepted_at"), started_at=when("started_at"),
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
        }


__all__ = ["CLAIMED_STATES", "EnqueueState", "FINAL_STATES", "LocalUpdate", "WritebackRecord", "WritebackState"]
