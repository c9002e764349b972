"""Applying one write-back record to Partner Center, at most once in effect (see service.py for
the whole flow and the meaning of the states).

A delivery claims the record (``applying``) for CLAIM_LEASE after its last save. Before a PATCH
the record notes what goes out (``sent``: the etag it is computed from, the MS-RequestId, when,
the change) and afterwards the answer; a PATCH whose answer was never seen is settled from the
fresh resource (rules.landing) and never answered by computing a new PATCH on a resource that
moved. The local row follows Partner Center; when it cannot be stored the record says so
(``local_update=failed``) and still records what Partner Center did.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from shared import telemetry
from shared.clock import to_iso
from shared.errors import ConsentRequired, Conflict
from shared.logging import get_logger
from shared.partner_center_errors import PartnerCenterError, ServiceError, TransportError
from shared.providers import ProviderConnection
from shared.tables import escape_key

from ..runs import RETRYABLE_ERRORS
from .attestation import AttestationSteps
from .intake import WRITEBACK_QUEUE, claim_expired
from .log import WritebackLog
from .mirror import LocalMirror
from .ordering import SubscriptionOrder, blocked_reason
from .record import CLAIMED_STATES, FINAL_STATES, LocalUpdate, WritebackRecord, WritebackState
from .request import CONFIRM_AGREEMENT, WritebackRequest
from .rules import provider_refusal, unanswered, watched_field
from .subscription_apply import PartnerCenterBusy, SubscriptionSteps
from .wire import error_code as _error_code
from .wire import refused as _refused
from .wire import request_id

log = get_logger(__name__)

WRITEBACK_POISON_QUEUE = f"{WRITEBACK_QUEUE}-poison"
MAX_DELIVERIES = 5  # host.json extensions.queues.maxDequeueCount
# A PATCH that failed this way may have run (a 5xx, a reset, a timeout, a cut-short answer)
AMBIGUOUS_ERRORS: tuple[type[BaseException], ...] = (ServiceError, TransportError)
# How long a delivery's claim on a record lasts after the record's last save (the claim, before
# the PATCH, on a 202, each poll); then the next delivery takes it over, so no record stays
# ``applying``. Longer than one application takes: a normal one takes seconds, and between two
# saves there are at most two Partner Center calls, each bounded by the transport's retry budget
# (RetryPolicy.max_elapsed, 5 minutes). Taking over too early is still safe: the taker settles
# the earlier PATCH from ``sent`` before sending anything.
CLAIM_LEASE = timedelta(minutes=15)


class ApplyFailed(Exception):
    """Raised out of the queue trigger so the host redelivers (the record says ``failed``)."""


class WaitingForEarlier(Exception):
    """An earlier write-back on the same subscription is still on its way: apply this one later."""

    def __init__(self, record: WritebackRecord, earlier: WritebackRecord):
        super().__init__(f"write-back {record.idempotency_key!r} waits for the earlier {earlier.idempotency_key!r} "
                         f"({earlier.state}) on the same subscription")
        self.record, self.earlier = record, earlier


class ClaimHeld(Exception):
    """Another delivery holds the record (``applying`` within its lease, until ``until``)."""

    def __init__(self, record: WritebackRecord, until: datetime):
        super().__init__(f"write-back {record.idempotency_key!r} is being applied by another delivery until {until}")
        self.record, self.until = record, until


ClientFactory = Callable[[ProviderConnection, WritebackRecord], Any]
SettledHook = Callable[[WritebackRecord], None]


class WritebackApplier(SubscriptionSteps, AttestationSteps):
    ambiguous_errors = AMBIGUOUS_ERRORS

    @staticmethod
    def _legacy_sent(record: WritebackRecord, request: WritebackRequest) -> dict[str, Any] | None:
        return _legacy_sent(record, request)

    @staticmethod
    def _request_id(record: WritebackRecord, what: str) -> str:
        return _request_id(record, what)

    def __init__(self, *, log_store: WritebackLog, providers: Any, client_factory: ClientFactory,
                 mirror: LocalMirror, clock: Callable[[], datetime], sleep: Callable[[float], None],
                 confirm_polls: int, confirm_interval: float, claim_lease: timedelta = CLAIM_LEASE,
                 on_settled: SettledHook = lambda record: None,
                 on_end_of_term: Callable[[WritebackRecord, str], None] = lambda record, action: None):
        self.order = SubscriptionOrder(log_store, clock)
        self.on_settled = on_settled  # a record succeeded or was dismissed: release what it blocked
        self.end_of_term_chosen = on_end_of_term  # remember the chosen action (drift, EST list)
        self.log_store = log_store
        self.providers = providers
        self.client_factory = client_factory
        self.mirror = mirror
        self.clock = clock
        self.sleep = sleep
        self.confirm_polls = confirm_polls
        self.confirm_interval = confirm_interval
        self.claim_lease = claim_lease

    # -- the record ----------------------------------------------------------------------

    def _find(self, record: WritebackRecord) -> WritebackRecord | None:
        found = self.log_store.find(escape_key(record.provider_id), escape_key(record.idempotency_key))
        return WritebackRecord.from_entity(*found) if found else None

    def _save(self, record: WritebackRecord) -> WritebackRecord:
        record.updated_at = self.clock()  # also renews the claim
        self.log_store.replace(record.to_entity())
        record.etag = None
        return record

    def _finish(self, record: WritebackRecord, state: WritebackState, reason: str | None = None, *,
                code: str | None = None, after: dict[str, Any] | None = None) -> WritebackRecord:
        record.state, record.reason, record.error_code = state, reason, code
        if after is not None:
            record.after = after
        if state in FINAL_STATES or state == WritebackState.FAILED:
            record.finished_at = self.clock()
        self._save(record)
        if state == WritebackState.SUCCEEDED:
            self.on_settled(record)
        telemetry.annotate(outcome=state, error_code=code, request_id=record.request_id)
        telemetry.record_writeback(record.provider_id, record.operation, state)
        level = logging.INFO if state == WritebackState.SUCCEEDED else logging.WARNING
        log.log(level, "write-back %s/%s %s: %s%s", record.provider_id, record.idempotency_key, record.operation,
                state, f" ({reason})" if reason else "",
                extra={"provider_id": record.provider_id, "customer_id": record.customer_id,
                       "idempotency_key": record.idempotency_key, "state": state.value, "error_code": code,
                       "request_id": record.request_id, "local_update": str(record.local_update or "")})
        return record

    def _reject(self, record: WritebackRecord, reason: str, *, code: str | None = None) -> WritebackRecord:
        return self._finish(record, WritebackState.REJECTED, reason, code=code)

    def _succeed(self, record: WritebackRecord, reason: str | None = None, *,
                 after: dict[str, Any] | None = None) -> WritebackRecord:
        return self._finish(record, WritebackState.SUCCEEDED, reason, after=after)

    def _store_locally(self, record: WritebackRecord, store: Callable[[], None]) -> None:
        """Update the local row; a failure is noted on the record, never raised: Partner Center
        already shows the outcome, and the record must say so (the next sync stores the row)."""
        try:
            store()
        except Exception as exc:  # noqa: BLE001 - any storage failure; the record must still finish
            record.local_update = LocalUpdate.FAILED
            record.local_update_reason = (f"the local row could not be stored ({type(exc).__name__}: {exc}); "
                                          "the next sync stores it")[:4000]
            log.warning("write-back %s/%s: local row not stored: %s", record.provider_id, record.idempotency_key,
                        exc, extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
        else:
            record.local_update, record.local_update_reason = LocalUpdate.STORED, None

    def _mirror_subscription(self, record: WritebackRecord, subscription: Mapping[str, Any]) -> None:
        self._store_locally(record, lambda: self.mirror.subscription(record.provider_id, record.customer_id,
                                                                     subscription))

    # -- claiming and applying -----------------------------------------------------------

    def _claim(self, record: WritebackRecord) -> WritebackRecord | None:
        """Move an unfinished record to ``applying`` and count the attempt (replace-if-unchanged,
        so concurrent deliveries count every attempt). None when it is already final; ClaimHeld
        when another delivery's claim is within its lease."""
        for _ in range(5):
            found = self._find(record)
            current = found or record
            if current.final:
                return None
            now = self.clock()
            if current.state in CLAIMED_STATES and not claim_expired(current, now, self.claim_lease):
                raise ClaimHeld(current, current.updated_at + self.claim_lease)  # type: ignore[operator]
            claimed = replace(current, state=WritebackState.APPLYING, attempts=current.attempts + 1,
                              started_at=current.started_at or now, updated_at=now, reason=None, error_code=None)
            if self.log_store.replace(claimed.to_entity(), etag=current.etag if found else None):
                claimed.etag = None
                return claimed
        raise Conflict(f"write-back {record.idempotency_key!r} is being updated concurrently")

    def apply(self, record: WritebackRecord, *, delivery: int = 1,
              max_deliveries: int = MAX_DELIVERIES) -> WritebackRecord:
        """Apply an accepted record at most once: a final record is returned as it stands; a
        transient failure is recorded as ``failed`` and raised as ApplyFailed."""
        with telemetry.span("pcsync.writeback.apply", provider=record.provider_id, customer=record.customer_id,
                            writeback_key=record.idempotency_key, operation=record.operation, delivery=delivery):
            held = self._held(record)
            if held is not None:
                return held
            claimed = self._claim(record)
            if claimed is None:
                log.info("write-back %s/%s already %s; not applied again", record.provider_id, record.idempotency_key,
                         record.state, extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
                telemetry.annotate(outcome=f"already {record.state}")
                return self._find(record) or record
            record = claimed
            provider = self.providers.find_provider(record.provider_id)
            refusal = provider_refusal(record.provider_id, provider)
            if refusal is not None:
                reason, code = refusal
                return self._reject(record, reason, code=code)
            try:
                client = self.client_factory(provider, record)
                if record.operation == CONFIRM_AGREEMENT:
                    return self._apply_agreement(record, record.request(), client)
                return self._apply_subscription(record, record.request(), client)
            except ConsentRequired as exc:
                return self._reject(record, f"consent needed: {exc}", code="consent")
            except (*RETRYABLE_ERRORS, PartnerCenterBusy) as exc:
                raise self._transient_failure(record, exc, delivery, max_deliveries) from exc
            except PartnerCenterError as exc:
                return self._reject(record, _refused("the change", exc), code=_error_code(exc))

    def _held(self, record: WritebackRecord) -> WritebackRecord | None:
        """The record as it stands when it must not be applied now: scheduled and not yet due,
        waiting on a customer, or blocked behind an earlier write-back on its subscription (then
        marked ``blocked``); WaitingForEarlier when an earlier one is still on its way."""
        current = self._find(record) or record
        now = self.clock()
        if current.state == WritebackState.SCHEDULED and current.scheduled_for and current.scheduled_for > now:
            return current
        if current.final or current.state in CLAIMED_STATES:
            return None  # _claim answers (already final, or held by another delivery)
        gate = self.order.gate(current)
        if gate.blocker is not None:
            blocker = gate.blocker
            current.state, current.blocked_by = WritebackState.BLOCKED, blocker.blocked_by or blocker.idempotency_key
            current.reason, current.error_code = blocked_reason(blocker), None
            self._save(current)
            telemetry.record_writeback(current.provider_id, current.operation, WritebackState.BLOCKED)
            return current
        if gate.earlier is not None:
            raise WaitingForEarlier(current, gate.earlier)
        return None

    def _transient_failure(self, record: WritebackRecord, exc: BaseException, delivery: int,
                           max_deliveries: int) -> ApplyFailed:
        """Record ``failed`` with why (and whether the host will deliver again); the caller raises."""
        last = delivery >= max_deliveries
        if last and max_deliveries > 1:
            reason = f"gave up after {delivery} deliveries (message moved to {WRITEBACK_POISON_QUEUE}): {exc}"
        else:
            retry = "" if last else ", will retry"
            reason = f"transient failure on delivery {delivery} of {max_deliveries}{retry}: {exc}"
        if unanswered(record.sent):  # say what is not known rather than "not applied"
            sent = record.sent or {}
            reason += (f"; the PATCH sent at {sent.get('at')} (MS-RequestId {sent.get('requestId')}) may have been "
                       "applied: whether it was is not known yet, and any further delivery or resubmission "
                       "checks Partner Center before sending anything")
        self._finish(record, WritebackState.FAILED, reason, code=_error_code(exc))
        return ApplyFailed(reason)


def _legacy_sent(record: WritebackRecord, request: WritebackRequest) -> dict[str, Any] | None:
    """What a record written before ``sent`` existed says was sent: a request id means a PATCH
    went out, from the ``before`` etag when the id is the one derived from it (else unknown)."""
    if not record.request_id or not record.before:
        return None
    etag = record.before.get("etag")
    return {"etag": etag if _request_id(record, f"PATCH|{etag}") == record.request_id else None,
            "requestId": record.request_id, "at": to_iso(record.started_at),
            "from": record.before.get(watched_field(request))}


def _request_id(record: WritebackRecord, what: str) -> str:
    return request_id(record.provider_id, record.idempotency_key, what)


__all__ = ["AMBIGUOUS_ERRORS", "ApplyFailed", "CLAIM_LEASE", "ClaimHeld", "MAX_DELIVERIES", "RETRYABLE_ERRORS",
           "WRITEBACK_POISON_QUEUE", "WaitingForEarlier", "WritebackApplier"]
