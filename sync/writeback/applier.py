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

import json
import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping
from urllib.parse import quote

from shared import telemetry
from shared.clock import to_iso
from shared.errors import ConsentRequired, Conflict
from shared.jsonutil import get_path
from shared.logging import get_logger
from shared.partner_center_errors import (
    BadRequestError,
    NotFoundError,
    PartnerCenterError,
    ServiceError,
    TransportError,
)
from shared.providers import ProviderConnection
from shared.tables import escape_key

from ..runs import RETRYABLE_ERRORS
from .intake import WRITEBACK_QUEUE, claim_expired
from .log import WritebackLog
from .mirror import LocalMirror
from .record import CLAIMED_STATES, FINAL_STATES, LocalUpdate, WritebackRecord, WritebackState
from .request import CONFIRM_AGREEMENT, WritebackRequest
from .rules import (
    MCA_TYPE,
    Decision,
    DecisionKind,
    Landing,
    agreement_summary,
    agreement_template,
    conflict_reason,
    decide,
    landing,
    patched,
    provider_refusal,
    reached,
    same_agreement,
    snapshot,
    target_value,
    unanswered,
    watched_field,
)

log = get_logger(__name__)

WRITEBACK_POISON_QUEUE = f"{WRITEBACK_QUEUE}-poison"
MAX_DELIVERIES = 5  # host.json extensions.queues.maxDequeueCount
# A PATCH that failed this way may have run (a 5xx, a reset, a timeout, a cut-short answer)
AMBIGUOUS_ERRORS: tuple[type[BaseException], ...] = (ServiceError, TransportError)
_REQUEST_ID_NAMESPACE = uuid.UUID("5f0c2b1e-3d4a-4c6b-9a57-0b9f7f3c2a10")
# How long a delivery's claim on a record lasts after the record's last save (the claim, before
# the PATCH, on a 202, each poll); then the next delivery takes it over, so no record stays
# ``applying``. Longer than one application takes: a normal one takes seconds, and between two
# saves there are at most two Partner Center calls, each bounded by the transport's retry budget
# (RetryPolicy.max_elapsed, 5 minutes). Taking over too early is still safe: the taker settles
# the earlier PATCH from ``sent`` before sending anything.
CLAIM_LEASE = timedelta(minutes=15)


class ApplyFailed(Exception):
    """Raised out of the queue trigger so the host redelivers (the record says ``failed``)."""


class ClaimHeld(Exception):
    """Another delivery holds the record (``applying`` within its lease, until ``until``)."""

    def __init__(self, record: WritebackRecord, until: datetime):
        super().__init__(f"write-back {record.idempotency_key!r} is being applied by another delivery until {until}")
        self.record, self.until = record, until


ClientFactory = Callable[[ProviderConnection, WritebackRecord], Any]


class WritebackApplier:
    def __init__(self, *, log_store: WritebackLog, providers: Any, client_factory: ClientFactory,
                 mirror: LocalMirror, clock: Callable[[], datetime], sleep: Callable[[float], None],
                 confirm_polls: int, confirm_interval: float, claim_lease: timedelta = CLAIM_LEASE):
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
            except RETRYABLE_ERRORS as exc:
                raise self._transient_failure(record, exc, delivery, max_deliveries) from exc
            except PartnerCenterError as exc:
                return self._reject(record, _refused("the change", exc), code=_error_code(exc))

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

    # -- subscriptions ---------------------------------------------------------------------

    def _apply_subscription(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        path = (f"/customers/{quote(record.customer_id, safe='')}"
                f"/subscriptions/{quote(record.subscription_id or '', safe='')}")
        try:
            subscription = client.get_json(path, customer_id=record.customer_id)
        except NotFoundError as exc:
            return self._reject(record, "the subscription does not exist in Partner Center", code=_error_code(exc))
        if record.before is None:
            record.before = snapshot(subscription)
        record.sent = record.sent or _legacy_sent(record, request)
        if unanswered(record.sent):
            settled = self._after_unanswered(record, request, subscription)
            if settled is not None:
                return settled
        read_at = self.clock()
        for round_ in (1, 2):
            decision = decide(request, subscription, self.clock())
            if decision.kind is not DecisionKind.PATCH:
                return self._settle(record, subscription, decision)
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
            return self._after_subscription_write(record, request, client, path, answer)
        raise AssertionError("unreachable: the second round always settles")

    def _after_unanswered(self, record: WritebackRecord, request: WritebackRequest,
                          fresh: Mapping[str, Any]) -> WritebackRecord | None:
        """Settle an earlier PATCH without a known answer from the fresh resource; None when it
        did not land (etag unchanged), so the caller sends it again from the same etag."""
        sent = record.sent or {}
        verdict = landing(request, sent, fresh)
        if verdict is Landing.NOT_LANDED:
            log.info("write-back %s/%s: the PATCH sent at %s did not land (etag unchanged); sending it again",
                     record.provider_id, record.idempotency_key, sent.get("at"),
                     extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
            return None
        self._mirror_subscription(record, fresh)
        if verdict is Landing.REACHED:
            name = watched_field(request.operation)
            return self._succeed(record, f"{name} is {json.dumps(target_value(request))} in Partner Center: the "
                                 f"PATCH sent at {sent.get('at')} landed (or an equal change did)",
                                 after=snapshot(fresh))
        return self._finish(record, WritebackState.CONFLICT, conflict_reason(request, sent, fresh),
                            after=snapshot(fresh))

    def _settle(self, record: WritebackRecord, subscription: Mapping[str, Any], decision: Decision) -> WritebackRecord:
        """A decision that sends nothing: already there (succeeded) or refused (rejected)."""
        self._mirror_subscription(record, subscription)
        if decision.kind is DecisionKind.NOOP:
            return self._succeed(record, decision.reason, after=snapshot(subscription))
        return self._reject(record, decision.reason, code=decision.code)

    def _send_patch(self, record: WritebackRecord, client: Any, path: str, subscription: Mapping[str, Any],
                    decision: Decision) -> Any:
        etag = get_path(subscription, "attributes", "etag")
        record.request_id = _request_id(record, f"PATCH|{etag}")
        name = next(iter(decision.changes))
        record.sent = {"etag": etag, "requestId": record.request_id, "at": to_iso(self.clock()),
                       "changes": dict(decision.changes), "from": snapshot(subscription).get(name)}
        self._save(record)  # what goes out is on record before the call does
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        try:
            # not replayed by the transport: a replay of a PATCH that landed is refused 2055, which
            # would hide that it landed; an unanswered PATCH is settled from the fresh resource instead
            answer = client.send_json("PATCH", path, patched(subscription, decision.changes), headers=headers,
                                      customer_id=record.customer_id, replay_safe=False,
                                      request_id=record.request_id)
        except PartnerCenterError as exc:
            if not isinstance(exc, AMBIGUOUS_ERRORS):  # refused before it ran: known not applied
                record.sent["answer"] = f"refused {_error_code(exc)}"
            raise
        record.sent["answer"] = str(answer.status)
        return answer

    def _after_stale_etag(self, record: WritebackRecord, request: WritebackRequest, read: Mapping[str, Any],
                          fresh: Mapping[str, Any], read_at: datetime, *, last: bool) -> WritebackRecord | None:
        """Settle a PATCH refused for a stale etag (so known not applied: it was sent once and
        any earlier one was settled), given the fresh resource; None means the field we change
        did not move, so the caller recomputes on ``fresh`` and sends once more."""
        name = watched_field(request.operation)
        if reached(request, fresh):
            self._mirror_subscription(record, fresh)
            return self._succeed(record, f"{name} already {json.dumps(target_value(request))} after an etag refresh",
                                 after=snapshot(fresh))
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
                                  answer: Any) -> WritebackRecord:
        if answer.status == 202:
            return self._confirm_accepted(record, request, client, answer.location or path)
        current = answer.body if get_path(answer.body, "id") else client.get_json(path, customer_id=record.customer_id)
        self._mirror_subscription(record, current)
        return self._succeed(record, after=snapshot(current))

    def _confirm_accepted(self, record: WritebackRecord, request: WritebackRequest, client: Any,
                          location: str) -> WritebackRecord:
        """Partner Center answered 202: poll ``location`` a bounded number of times for the change."""
        record.state, record.location = WritebackState.PENDING_CONFIRMATION, location
        for poll in range(1, self.confirm_polls + 1):
            self._save(record)  # renews the claim while polling
            self.sleep(self.confirm_interval)
            current = client.get_json(location, customer_id=record.customer_id)
            if reached(request, current):
                self._mirror_subscription(record, current)
                return self._succeed(record, f"confirmed after 202 on poll {poll}", after=snapshot(current))
        return self._finish(record, WritebackState.UNCONFIRMED, f"Partner Center accepted the change (202) but it "
                            f"was not visible after {self.confirm_polls} polls of {location}")

    # -- agreements ------------------------------------------------------------------------

    def _apply_agreement(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        customer = record.customer_id
        template_id = agreement_template(client.get_json("/agreements", params={"agreementType": MCA_TYPE}))
        if template_id is None:
            return self._reject(record, "Partner Center lists no Microsoft Customer Agreement template "
                                "(agreement confirmation is only available in the public cloud)")
        contact = dict(request.contact or {})
        record.before = {"templateId": template_id}
        existing = self._find_agreement(record, client, template_id, contact)
        if existing is not None:
            return self._succeed(record, "an identical confirmation already exists in Partner Center",
                                 after=agreement_summary(existing))
        body = {"primaryContact": contact, "templateId": template_id, "dateAgreed": request.date_agreed,
                "type": MCA_TYPE}
        record.request_id = _request_id(record, "POST")
        self._save(record)
        try:
            created = client.send_json("POST", f"/customers/{quote(customer, safe='')}/agreements", body,
                                       customer_id=customer, replay_safe=True, request_id=record.request_id).body
        except BadRequestError as exc:
            if exc.code != "600061":  # "an agreement with the same details already exists": a replay
                return self._reject(record, _refused("the confirmation", exc), code=exc.code)
            created = body
        listed = self._find_agreement(record, client, template_id, contact)
        return self._succeed(record, after=agreement_summary(listed or created))

    def _find_agreement(self, record: WritebackRecord, client: Any, template_id: str,
                        contact: Mapping[str, str]) -> dict[str, Any] | None:
        """The customer's agreement that matches the confirmation, stored locally as the sync
        stores it; None when Partner Center lists none."""
        customer = record.customer_id
        page = client.get_json(f"/customers/{quote(customer, safe='')}/agreements",
                               params={"agreementType": MCA_TYPE}, customer_id=customer)
        items = get_path(page, "items")
        found = next((dict(item) for item in (items if isinstance(items, list) else [])
                      if isinstance(item, Mapping) and same_agreement(item, template_id, contact)), None)
        if found is not None:
            self._store_locally(record, lambda: self.mirror.agreement(record.provider_id, customer, found))
        return found


def _legacy_sent(record: WritebackRecord, request: WritebackRequest) -> dict[str, Any] | None:
    """What a record written before ``sent`` existed says was sent: a request id means a PATCH
    went out, from the ``before`` etag when the id is the one derived from it (else unknown)."""
    if not record.request_id or not record.before:
        return None
    etag = record.before.get("etag")
    return {"etag": etag if _request_id(record, f"PATCH|{etag}") == record.request_id else None,
            "requestId": record.request_id, "at": to_iso(record.started_at),
            "from": record.before.get(watched_field(request.operation))}


def _refused(what: str, exc: PartnerCenterError) -> str:
    return f"Partner Center refused {what}: {exc.description or exc}"


def _request_id(record: WritebackRecord, what: str) -> str:
    """One MS-RequestId per (write-back, resource version): a redelivery that sends the same
    write again reuses it, which is what Partner Center's idempotency keys on."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{record.provider_id}|{record.idempotency_key}|{what}"))


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    if code is not None and str(code) != "0":  # 0 is the simulator's / APIM's "no code"
        return str(code)
    return f"HTTP {status}" if status else type(exc).__name__


__all__ = ["AMBIGUOUS_ERRORS", "ApplyFailed", "CLAIM_LEASE", "ClaimHeld", "MAX_DELIVERIES", "RETRYABLE_ERRORS",
           "WRITEBACK_POISON_QUEUE", "WritebackApplier"]
