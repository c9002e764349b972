"""Accepting a write-back: the record's conditional insert and its one queue message.

One queue message per idempotency key, however many callers submit it at once: the caller whose
conditional insert created the record owns the enqueue (``enqueue=sending``), sends, and marks it
``sent``. A caller that finds the record sends nothing, unless the record is not on its way:

* the owner's send failed (``unsent``);
* the owner died between the insert and the send (``sending`` for longer than ENQUEUE_GRACE);
* the host gave up on it (``failed``: an operator resubmits);
* the delivery that claimed it died (``applying`` with a claim older than the lease).

It then takes the enqueue over with a replace-if-unchanged, so of several such callers exactly
one sends.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Callable

from shared.clock import to_iso
from shared.errors import Conflict
from shared.logging import get_logger
from shared.tables import escape_key

from ..names import WRITEBACK_QUEUE
from .log import WritebackLog
from .record import CLAIMED_STATES, EnqueueState, WritebackRecord, WritebackState
from .request import WritebackRequest

log = get_logger(__name__)

# How long the caller that created a record has to put its message on the queue (an insert and
# one queue send take milliseconds); only after that may a resubmission send it instead.
ENQUEUE_GRACE = timedelta(minutes=1)


def claim_expired(record: WritebackRecord, now: datetime, lease: timedelta) -> bool:
    """Whether a claimed record's delivery is presumed dead (no save for longer than the lease)."""
    return record.state in CLAIMED_STATES and (record.updated_at is None or now - record.updated_at >= lease)


class WritebackIntake:
    def __init__(self, log_store: WritebackLog, queues: Any, clock: Callable[[], datetime], claim_lease: timedelta):
        self.log_store = log_store
        self.queues = queues
        self.clock = clock
        self.claim_lease = claim_lease

    def find(self, provider_id: str, key: str) -> WritebackRecord | None:
        found = self.log_store.find(escape_key(provider_id), escape_key(key))
        return WritebackRecord.from_entity(*found) if found else None

    def accept(self, request: WritebackRequest, *, source: str, message_id: str | None = None,
               enqueue: EnqueueState | None = None) -> tuple[WritebackRecord, bool]:
        """Log the request as ``accepted`` (with ``enqueue`` when the caller will queue it); the
        same key again returns the existing record (Conflict when its request differs)."""
        for _ in range(3):
            existing = self.find(request.provider_id, request.idempotency_key)
            if existing is not None:
                if existing.fingerprint != request.fingerprint():
                    raise Conflict(f"idempotency key {request.idempotency_key!r} was already used for a different "
                                   f"request ({existing.operation} accepted {to_iso(existing.accepted_at)})")
                return existing, False
            now = self.clock()
            record = WritebackRecord.for_request(request, source=source, now=now)
            record.message_id, record.enqueue = message_id, enqueue
            record.enqueued_at = now if enqueue else None
            if self.log_store.create(record.to_entity()):
                log.info("write-back %s/%s accepted: %s", request.provider_id, request.idempotency_key,
                         request.operation, extra={"provider_id": request.provider_id,
                                                   "idempotency_key": request.idempotency_key})
                return record, True
        raise Conflict(f"idempotency key {request.idempotency_key!r} is being written concurrently; try again")

    def take_enqueue(self, record: WritebackRecord) -> WritebackRecord | None:
        """The record with this caller owning its enqueue, or None when the record is on its way
        (or finished) or another caller took the enqueue first."""
        now = self.clock()
        if record.state == WritebackState.FAILED:  # resubmitted after the host gave up: start over
            taken = replace(record, state=WritebackState.ACCEPTED, reason=None, error_code=None, finished_at=None,
                            updated_at=now)
        elif record.state == WritebackState.ACCEPTED and self._enqueue_abandoned(record, now):
            taken = replace(record, updated_at=now)
        elif claim_expired(record, now, self.claim_lease):
            taken = replace(record)  # updated_at kept: the claim stays expired, the next delivery takes it over
        else:
            return None
        taken.enqueue, taken.enqueued_at = EnqueueState.SENDING, now
        if not self.log_store.replace(taken.to_entity(), etag=record.etag):
            return None
        taken.etag = None
        return taken

    def _enqueue_abandoned(self, record: WritebackRecord, now: datetime) -> bool:
        if record.enqueue == EnqueueState.UNSENT:
            return True
        if record.enqueue == EnqueueState.SENT:
            return False
        since = record.enqueued_at or record.accepted_at  # no column: a record from before this field
        return since is None or now - since >= ENQUEUE_GRACE

    def enqueue(self, record: WritebackRecord, request: WritebackRequest) -> None:
        """Put the record's message on the queue (the caller owns the enqueue) and mark it."""
        try:
            self.queues.send_json(WRITEBACK_QUEUE, request.to_message())
        except Exception:
            self._mark(record, EnqueueState.UNSENT)  # so the next submission sends it at once
            raise
        self._mark(record, EnqueueState.SENT)

    def _mark(self, record: WritebackRecord, state: EnqueueState) -> None:
        """Best effort, replace-if-unchanged: when a delivery already moved the record on, the
        mark does not matter any more (only an ``accepted`` record is ever enqueued again)."""
        current = self.find(record.provider_id, record.idempotency_key)
        if current is None or current.enqueue != EnqueueState.SENDING:
            return
        current.enqueue = state
        if not self.log_store.replace(current.to_entity(), etag=current.etag):
            log.info("write-back %s/%s moved on before its enqueue was marked %s", record.provider_id,
                     record.idempotency_key, state, extra={"provider_id": record.provider_id,
                                                           "idempotency_key": record.idempotency_key})


__all__ = ["ENQUEUE_GRACE", "WRITEBACK_QUEUE", "WritebackIntake", "claim_expired"]
