"""Write-back: change Partner Center on the partner's behalf, once, with a record of what happened.

A write-back request (HTTP ``POST /api/writebacks``, a message another system puts on queue
``writebacks``, or ``pcsync writeback``) is

1. validated strictly (request.py: one message per bad field; unknown fields refused);
2. logged in table ``writebackops`` under its idempotency key (intake.py, log.py, record.py):
   ``accepted``, with exactly one queue message per key however many callers submit it at once;
3. applied by the queue trigger: ``applying`` -> ``succeeded`` | ``rejected`` (refused: a
   business rule from rules.py, missing consent or an ApiFault, with the reason and code) |
   ``failed`` (transient; the message is retried, and the last delivery records the reason before
   the message goes to ``writebacks-poison``) | ``pending_confirmation`` (Partner Center answered
   202: poll until the change is visible, then ``succeeded``, or ``unconfirmed`` after a bounded
   number of polls) | ``conflict`` (a PATCH whose answer was never seen, and the field moved in
   Partner Center since: not sent again);
4. mirrored into the local ``subscriptions`` / ``agreements`` row, built exactly as the sync
   engine builds it, so the next sync writes nothing; when that fails the record still says what
   Partner Center did, and ``local_update=failed`` with the reason (the next sync stores the row).

Applying is idempotent under at-least-once delivery: a finished record is never applied again;
a claimed one (``applying``) belongs to its delivery for CLAIM_LEASE after its last save, and a
delivery that finds it claimed puts its message back on the queue for when the lease ends, when
the claim is taken over if the record is still unfinished. An unfinished record re-reads the
resource first. Before each PATCH the record notes what is sent (``sent``: the etag it is
computed from, the MS-RequestId, when, the change) and afterwards Partner Center's answer; a PATCH
without a known answer (killed, answer lost) is settled from the fresh resource (rules.landing):
etag unchanged - it did not land, send it again; field at the target - ``succeeded``; anything
else - ``conflict``, never a second PATCH over a newer upstream value. So the transport does not
replay a PATCH (a replay of one that landed would be refused 2055 and hide that it landed). Every
PATCH carries its etag (body and ``If-Match``); a stale etag (400/2055) on a send whose outcome is
otherwise known means someone changed the subscription between our read and our write: if the
field we change moved, the request is rejected (known not applied), otherwise it is recomputed on
the fresh resource and sent once more.

Tokens never reach this module: it talks to Partner Center through ``PartnerCenterClient``.
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping

from shared.clock import utc_now
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.jsonutil import JsonRejected, parse_json_text
from shared.logging import get_logger
from shared.tables import escape_key

from .alerts import EndOfTermChoices
from .applier import (
    CLAIM_LEASE,
    MAX_DELIVERIES,
    RETRYABLE_ERRORS,
    WRITEBACK_POISON_QUEUE,
    ApplyFailed,
    ClaimHeld,
    ClientFactory,
    WaitingForEarlier,
    WritebackApplier,
)
from .intake import WRITEBACK_QUEUE, WritebackIntake
from .log import INVALID_PARTITION, WritebackLog
from .mirror import LocalMirror
from .preview import preview
from .queries import DEFAULT_LIMIT, WritebackFilter, writeback_page
from .record import (DISMISSABLE_STATES, OPERATOR_ACTIONS, RETRYABLE_STATES, EnqueueState, WritebackRecord,
                     WritebackState)
from .request import WritebackRequest, parse_request
from .rules import provider_refusal
from .subscription_apply import subscription_path

if TYPE_CHECKING:
    from .schedule import TimerReport

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
# How long a write-back that waits for an earlier one on its subscription is put back on the queue.
WAIT_FOR_EARLIER_SECONDS = 30


@dataclass
class Submission:
    record: WritebackRecord
    created: bool  # a new record (False: the same request was seen before)
    queued: bool  # a message was put on the queue now


class WritebackService:
    def __init__(
        self,
        *,
        log_store: WritebackLog,
        tables: Any,
        providers: Any,
        queues: Any = None,
        client_factory: ClientFactory,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        confirm_polls: int = 5,
        confirm_interval: float = 2.0,
        claim_lease: timedelta = CLAIM_LEASE,
    ):
        self.log_store = log_store
        self.tables = tables
        self.providers = providers
        self.queues = queues
        self.client_factory = client_factory
        self.clock = clock
        self.intake = WritebackIntake(log_store, queues, clock, claim_lease)
        self.choices = EndOfTermChoices(tables, clock)
        self.applier = WritebackApplier(log_store=log_store, providers=providers, client_factory=client_factory,
                                        mirror=LocalMirror(tables, clock), clock=clock, sleep=sleep,
                                        confirm_polls=confirm_polls, confirm_interval=confirm_interval,
                                        claim_lease=claim_lease, on_settled=self.release_followers,
                                        on_end_of_term=self._remember_choice)

    # -- the log -------------------------------------------------------------------------

    def find_record(self, provider_id: str, key: str) -> WritebackRecord | None:
        return self.intake.find(provider_id, key)

    def get_record(self, key: str, provider_id: str | None = None) -> WritebackRecord:
        """The record for an idempotency key (``provider_id`` narrows it; needed only when two
        providers used the same key). Raises NotFound / Conflict."""
        if provider_id:
            record = self.find_record(provider_id, key)
            if record is None:
                raise NotFound(f"no write-back {key!r} for provider {provider_id!r}")
            return record
        rows = [r for r in self.log_store.by_row_key(escape_key(key)) if r[0].get("PartitionKey") != INVALID_PARTITION]
        if not rows:
            raise NotFound(f"no write-back {key!r}")
        if len(rows) > 1:
            raise Conflict(f"write-back key {key!r} is used by several providers; add ?provider=")
        return WritebackRecord.from_entity(*rows[0])

    def apply(self, record: WritebackRecord, *, delivery: int = 1,
              max_deliveries: int = MAX_DELIVERIES) -> WritebackRecord:
        """Apply an accepted record (applier.py): at most once in effect."""
        return self.applier.apply(record, delivery=delivery, max_deliveries=max_deliveries)

    # -- accepting -----------------------------------------------------------------------

    def accept(self, request: WritebackRequest, *, source: str, message_id: str | None = None,
               enqueue: EnqueueState | None = None) -> tuple[WritebackRecord, bool]:
        """Log the request as ``accepted``; the same key again returns the existing record
        (Conflict when its request differs). Returns (record, created)."""
        return self.intake.accept(request, source=source, message_id=message_id, enqueue=enqueue)

    def _parse_for_known_provider(self, body: Any) -> WritebackRequest:
        request = parse_request(body, now=self.clock())
        if self.providers.find_provider(request.provider_id) is None:
            raise NotFound(f"unknown provider {request.provider_id!r}")
        return request

    def submit(self, body: Any, *, source: str = "http") -> Submission:
        """HTTP/CLI front door: validate, check the provider, log, enqueue. The same request
        again returns its record; one queue message per key (see intake.py): a repeat is queued
        only when the record is not on its way (never sent, the host gave up, its delivery died)."""
        request = self._parse_for_known_provider(body)
        record, created = self.accept(request, source=source, enqueue=EnqueueState.SENDING)
        if record.state == WritebackState.SCHEDULED:  # held in the log; the timer applies it when due
            return Submission(record, created, queued=False)
        owned = record if created else self.intake.take_enqueue(record)
        if owned is None:
            return Submission(record, created, queued=False)
        self.intake.enqueue(owned, request)
        return Submission(owned, created, queued=True)

    def run_now(self, body: Any, *, source: str = "cli") -> WritebackRecord:
        """Validate, log and apply in this process (CLI, demo); transient failures are recorded
        as ``failed`` and not raised; a record another delivery holds is returned as it stands."""
        request = self._parse_for_known_provider(body)
        record, _ = self.accept(request, source=source)
        try:
            return self.apply(record, delivery=1, max_deliveries=1)
        except ApplyFailed:
            return self.find_record(record.provider_id, record.idempotency_key) or record
        except (ClaimHeld, WaitingForEarlier) as held:
            return held.record

    def handle_message(self, body: bytes | str, *, message_id: str = "", dequeue_count: int = 1) -> WritebackRecord:
        """Queue trigger work. Never raises for bad input (recorded as rejected); raises
        ApplyFailed for transient Partner Center failures so the host redelivers."""
        try:
            data = parse_json_text(body, max_bytes=MAX_MESSAGE_BYTES)
        except JsonRejected as exc:
            return self._reject_invalid(message_id, ValidationFailed({"body": f"message body is {exc}"}), None)
        try:
            request = parse_request(data, now=self.clock())
        except ValidationFailed as exc:
            return self._reject_invalid(message_id, exc, data)
        try:
            record, _ = self.accept(request, source="queue", message_id=message_id, enqueue=EnqueueState.SENT)
        except Conflict as exc:
            return self._reject_message(message_id, str(exc), provider_id=request.provider_id,
                                        key=request.idempotency_key)
        try:
            return self.apply(record, delivery=dequeue_count, max_deliveries=MAX_DELIVERIES)
        except (ClaimHeld, WaitingForEarlier) as held:
            return self._deliver_later(request, held)

    def _deliver_later(self, request: WritebackRequest, held: ClaimHeld | WaitingForEarlier) -> WritebackRecord:
        """The record is held by another delivery (or waits for an earlier write-back on its
        subscription): this message comes back when the lease ends (the record is then
        finished, or its claim is taken over), instead of spending the host's few redeliveries
        while the holder works."""
        if isinstance(held, WaitingForEarlier):
            delay = WAIT_FOR_EARLIER_SECONDS
        else:
            delay = max(1, math.ceil((held.until - self.clock()).total_seconds()) + 1)
        self.queues.send_json(WRITEBACK_QUEUE, request.to_message(), delay_seconds=delay)
        log.info("write-back %s/%s is held by another delivery; delivered again in %ss", request.provider_id,
                 request.idempotency_key, delay, extra={"provider_id": request.provider_id,
                                                        "idempotency_key": request.idempotency_key})
        return held.record

    # -- operators: retry, dismiss, preview ----------------------------------------------

    def retry(self, key: str, provider_id: str | None = None) -> WritebackRecord:
        """Start a record that did not succeed again (queued once more). Conflict (409) when its
        state does not allow it. A ``failed`` or ``unconfirmed`` record keeps what it sent, so
        the next delivery still settles that PATCH from Partner Center first; a ``conflict`` is
        the operator's decision to apply on the fresh resource."""
        record = self.get_record(key, provider_id)
        if record.state not in RETRYABLE_STATES:
            raise Conflict(f"write-back {key!r} is {record.state}; only "
                           f"{', '.join(sorted(s.value for s in RETRYABLE_STATES))} write-backs can be retried")
        retried = replace(record, state=WritebackState.ACCEPTED, reason=None, error_code=None, finished_at=None,
                          blocked_by=None, updated_at=self.clock(), enqueue=EnqueueState.SENDING,
                          enqueued_at=self.clock(), sent=None if record.state == WritebackState.CONFLICT else record.sent)
        if not self.log_store.replace(retried.to_entity(), etag=record.etag):
            raise Conflict(f"write-back {key!r} changed while it was being retried; try again")
        retried.etag = None
        self.intake.enqueue(retried, retried.request())
        log.info("write-back %s/%s retried (was %s)", record.provider_id, key, record.state,
                 extra={"provider_id": record.provider_id, "idempotency_key": key})
        return self.find_record(record.provider_id, key) or retried

    def dismiss(self, key: str, provider_id: str | None = None) -> WritebackRecord:
        """End a record without applying it; the later write-backs it blocked go on. Conflict
        (409) when its state does not allow it (on its way, or already final)."""
        record = self.get_record(key, provider_id)
        if record.state not in DISMISSABLE_STATES:
            raise Conflict(f"write-back {key!r} is {record.state}; only "
                           f"{', '.join(sorted(s.value for s in DISMISSABLE_STATES))} write-backs can be dismissed")
        now = self.clock()
        dismissed = replace(record, state=WritebackState.DISMISSED, finished_at=now, updated_at=now,
                            reason=f"dismissed by an operator (was {record.state}"
                                   + (f": {record.reason})" if record.reason else ")"))
        if not self.log_store.replace(dismissed.to_entity(), etag=record.etag):
            raise Conflict(f"write-back {key!r} changed while it was being dismissed; try again")
        dismissed.etag = None
        self.release_followers(dismissed)
        return dismissed

    def release_followers(self, record: WritebackRecord) -> None:
        """A record succeeded or was dismissed: the later ones it blocked are queued again (each
        checks its order again when delivered)."""
        if not record.subscription_id or self.queues is None:
            return
        for follower in self.applier.order.blocked_followers(record):
            released = replace(follower, state=WritebackState.ACCEPTED, blocked_by=None, reason=None,
                               updated_at=self.clock(), enqueue=EnqueueState.SENDING, enqueued_at=self.clock())
            if self.log_store.replace(released.to_entity(), etag=follower.etag):
                released.etag = None
                self.intake.enqueue(released, released.request())

    def _remember_choice(self, record: WritebackRecord, action: str) -> None:
        self.choices.remember(record.provider_id, record.customer_id, record.subscription_id or "", action,
                              record.idempotency_key)

    def preview(self, body: Any) -> dict[str, Any]:
        """Whether the request would be accepted now, at renewal or never, and why; reads the
        subscription (GET) and writes nothing, neither to Partner Center nor to the log."""
        request = self._parse_for_known_provider(body)
        provider = self.providers.find_provider(request.provider_id)
        refusal = provider_refusal(request.provider_id, provider)
        if refusal is not None:
            return {"allowed": False, "when": "never", "reason": refusal[0], "code": refusal[1], "warnings": []}
        subscription = None
        if request.subscription_id:
            probe = WritebackRecord.for_request(request, source="preview", now=self.clock())
            client = self.client_factory(provider, probe)
            subscription = client.get_json(subscription_path(probe), customer_id=request.customer_id)
        return {"operation": request.operation, "subscription": request.subscription_id,
                **preview(request, subscription, self.clock())}

    def run_timer(self) -> "TimerReport":
        """The write-backs timer's work (schedule.py): due scheduled records, waiting
        attestations, end-of-term re-checks and alerts, for every enabled provider."""
        from .schedule import WritebackTimer

        return WritebackTimer(self).run(list(self.providers.list_providers(enabled_only=True)))

    def list_records(self, provider_id: str, where: WritebackFilter, *, limit: int = DEFAULT_LIMIT,
                     token: str | None = None) -> dict[str, Any]:
        """The list route's page: ``{"items": [record JSON], "next": token or None, "states":
        {state: the operator actions it allows}}``."""
        records, next_token = writeback_page(self.tables, provider_id, where, limit=limit, token=token)
        return {"items": [record.to_json() for record in records], "next": next_token,
                "states": OPERATOR_ACTIONS}

    def _reject_invalid(self, message_id: str, exc: ValidationFailed, data: Any) -> WritebackRecord:
        """An invalid message, recorded with the provider and key it names (when it names them
        as text), so whoever sent it can find it."""
        named = data if isinstance(data, Mapping) else {}
        return self._reject_message(message_id, f"invalid write-back message: {exc}", problems=exc.problems,
                                    provider_id=_named(named, "provider", 64), key=_named(named, "idempotencyKey", 128))

    def _reject_message(self, message_id: str, reason: str, *, provider_id: str | None = None,
                        key: str | None = None, problems: Mapping[str, str] | None = None) -> WritebackRecord:
        """A queue message that cannot be logged under its own key: kept in the ``_invalid``
        partition, keyed by the queue message id, so it is visible and never retried."""
        now = self.clock()
        record = WritebackRecord(provider_id=INVALID_PARTITION, idempotency_key=message_id or uuid.uuid4().hex,
                                 state=WritebackState.REJECTED, reason=reason, source="queue", message_id=message_id,
                                 accepted_at=now, finished_at=now, updated_at=now,
                                 params={"problems": dict(problems or {}), "provider": provider_id, "key": key})
        entity = record.to_entity()
        entity["provider_id"] = provider_id or ""
        self.log_store.replace(entity)
        log.warning("write-back message %s rejected: %s", message_id, reason,
                    extra={"message_id": message_id, "provider_id": provider_id, "idempotency_key": key})
        return record


def _named(message: Mapping[str, Any], name: str, limit: int) -> str | None:
    """A text field of an invalid message, cut to ``limit`` characters; None when absent or not text."""
    value = message.get(name)
    return (value[:limit] or None) if isinstance(value, str) else None


__all__ = [
    "ApplyFailed", "CLAIM_LEASE", "ClaimHeld", "MAX_DELIVERIES", "MAX_MESSAGE_BYTES", "RETRYABLE_ERRORS", "Submission",
    "WRITEBACK_POISON_QUEUE", "WRITEBACK_QUEUE", "WritebackService",
]
