"""Write-back: change Partner Center on the partner's behalf, once, with a record of what happened.

A write-back request (HTTP ``POST /api/writebacks``, a message another system puts on queue
``writebacks``, or ``pcsync writeback``) is

1. validated strictly (request.py: one message per bad field; unknown fields refused);
2. logged in table ``writebackops`` under its idempotency key (log.py, record.py): ``accepted``;
3. applied by the queue trigger: ``applying`` -> ``succeeded`` | ``rejected`` (refused: a
   business rule from rules.py, missing consent or an ApiFault, with the reason and code) |
   ``failed`` (transient; the message is retried, and the last delivery records the reason before
   the message goes to ``writebacks-poison``) | ``pending_confirmation`` (Partner Center answered
   202: poll until the change is visible, then ``succeeded``, or ``unconfirmed`` after a bounded
   number of polls);
4. mirrored into the local ``subscriptions`` / ``agreements`` row, built exactly as the sync
   engine builds it, so the next sync writes nothing.

Applying is idempotent under at-least-once delivery: a finished record is never applied again;
an unfinished one (a redelivery after a crash mid-apply) re-reads the resource first, so a change
that already landed is recognised (quantity already equals the target -> ``succeeded`` without a
PATCH). Every PATCH carries the etag of the resource it was computed from (body and
``If-Match``); a stale etag (400/2055) means someone changed the subscription between our read
and our write: if the field we change moved, the request is rejected as a conflict, otherwise it
is recomputed on the fresh resource and sent once more.

Tokens never reach this module: it talks to Partner Center through ``PartnerCenterClient``.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Mapping
from urllib.parse import quote

from shared.clock import to_iso, utc_now
from shared.errors import ConsentRequired, Conflict, NotFound, ValidationFailed
from shared.jsonutil import JsonRejected, get_path, parse_json_text
from shared.logging import get_logger
from shared.partner_center_errors import (
    BadRequestError,
    NotFoundError,
    PartnerCenterError,
    ServiceError,
    ThrottledError,
    TransportError,
)
from shared.providers import ProviderConnection
from shared.tables import escape_key

from .log import INVALID_PARTITION, WritebackLog
from .mirror import LocalMirror
from .record import FINAL_STATES, WritebackRecord, WritebackState
from .request import CONFIRM_AGREEMENT, WritebackRequest, parse_request
from .rules import (
    MCA_TYPE,
    Decision,
    DecisionKind,
    agreement_summary,
    agreement_template,
    decide,
    patched,
    provider_refusal,
    reached,
    same_agreement,
    snapshot,
    target_value,
    watched_field,
)

log = get_logger(__name__)

WRITEBACK_QUEUE = "writebacks"
WRITEBACK_POISON_QUEUE = f"{WRITEBACK_QUEUE}-poison"
MAX_DELIVERIES = 5  # host.json extensions.queues.maxDequeueCount
MAX_MESSAGE_BYTES = 64 * 1024
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (ThrottledError, ServiceError, TransportError)
_REQUEST_ID_NAMESPACE = uuid.UUID("5f0c2b1e-3d4a-4c6b-9a57-0b9f7f3c2a10")


@dataclass
class Submission:
    record: WritebackRecord
    created: bool  # a new record (False: the same request was seen before)
    queued: bool  # a message was put on the queue now


class ApplyFailed(Exception):
    """Raised out of the queue trigger so the host redelivers (the record says ``failed``)."""


ClientFactory = Callable[[ProviderConnection, WritebackRecord], Any]


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
    ):
        self.log_store = log_store
        self.tables = tables
        self.providers = providers
        self.queues = queues
        self.client_factory = client_factory
        self.clock = clock
        self.sleep = sleep
        self.confirm_polls = confirm_polls
        self.confirm_interval = confirm_interval
        self._mirror = LocalMirror(tables, clock)

    # -- the log -------------------------------------------------------------------------

    def find_record(self, provider_id: str, key: str) -> WritebackRecord | None:
        found = self.log_store.find(escape_key(provider_id), escape_key(key))
        return WritebackRecord.from_entity(*found) if found else None

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

    def _save(self, record: WritebackRecord) -> WritebackRecord:
        record.updated_at = self.clock()
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
        level = logging.INFO if state == WritebackState.SUCCEEDED else logging.WARNING
        log.log(level, "write-back %s/%s %s: %s%s", record.provider_id, record.idempotency_key, record.operation,
                state, f" ({reason})" if reason else "",
                extra={"provider_id": record.provider_id, "customer_id": record.customer_id,
                       "idempotency_key": record.idempotency_key, "state": state.value, "error_code": code,
                       "request_id": record.request_id})
        return record

    def _reject(self, record: WritebackRecord, reason: str, *, code: str | None = None) -> WritebackRecord:
        return self._finish(record, WritebackState.REJECTED, reason, code=code)

    def _succeed(self, record: WritebackRecord, reason: str | None = None, *,
                 after: dict[str, Any] | None = None) -> WritebackRecord:
        return self._finish(record, WritebackState.SUCCEEDED, reason, after=after)

    # -- accepting -----------------------------------------------------------------------

    def accept(self, request: WritebackRequest, *, source: str,
               message_id: str | None = None) -> tuple[WritebackRecord, bool]:
        """Log the request as ``accepted``; the same key again returns the existing record
        (Conflict when its request differs). Returns (record, created)."""
        for _ in range(3):
            existing = self.find_record(request.provider_id, request.idempotency_key)
            if existing is not None:
                if existing.fingerprint != request.fingerprint():
                    raise Conflict(f"idempotency key {request.idempotency_key!r} was already used for a different "
                                   f"request ({existing.operation} accepted {to_iso(existing.accepted_at)})")
                return existing, False
            record = WritebackRecord.for_request(request, source=source, now=self.clock())
            record.message_id = message_id
            if self.log_store.create(record.to_entity()):
                log.info("write-back %s/%s accepted: %s", request.provider_id, request.idempotency_key,
                         request.operation, extra={"provider_id": request.provider_id,
                                                   "idempotency_key": request.idempotency_key})
                return record, True
        raise Conflict(f"idempotency key {request.idempotency_key!r} is being written concurrently; try again")

    def _parse_for_known_provider(self, body: Any) -> WritebackRequest:
        request = parse_request(body, now=self.clock())
        if self.providers.find_provider(request.provider_id) is None:
            raise NotFound(f"unknown provider {request.provider_id!r}")
        return request

    def submit(self, body: Any, *, source: str = "http") -> Submission:
        """HTTP/CLI front door: validate, check the provider, log, enqueue. The same request
        again returns its record; it is queued again only while nothing has finished it
        (``accepted`` - e.g. the first enqueue failed - or ``failed`` after the host gave up)."""
        request = self._parse_for_known_provider(body)
        record, created = self.accept(request, source=source)
        if not created and record.state not in (WritebackState.ACCEPTED, WritebackState.FAILED):
            return Submission(record, created, queued=False)
        if record.state == WritebackState.FAILED:  # resubmitted after the host gave up: start over
            record = self._save(replace(record, state=WritebackState.ACCEPTED, reason=None, error_code=None,
                                        finished_at=None))
        self.queues.send_json(WRITEBACK_QUEUE, request.to_message())
        return Submission(record, created, queued=True)

    def run_now(self, body: Any, *, source: str = "cli") -> WritebackRecord:
        """Validate, log and apply in this process (CLI, demo); transient failures are recorded
        as ``failed`` and not raised."""
        request = self._parse_for_known_provider(body)
        record, _ = self.accept(request, source=source)
        try:
            return self.apply(record, delivery=1, max_deliveries=1)
        except ApplyFailed:
            return self.find_record(record.provider_id, record.idempotency_key) or record

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
            record, _ = self.accept(request, source="queue", message_id=message_id)
        except Conflict as exc:
            return self._reject_message(message_id, str(exc), provider_id=request.provider_id,
                                        key=request.idempotency_key)
        return self.apply(record, delivery=dequeue_count, max_deliveries=MAX_DELIVERIES)

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

    # -- applying ------------------------------------------------------------------------

    def _claim(self, record: WritebackRecord) -> WritebackRecord | None:
        """Move an unfinished record to ``applying`` and count the attempt (replace-if-unchanged,
        so concurrent deliveries count every attempt). None when it is already final."""
        for _ in range(5):
            found = self.log_store.find(escape_key(record.provider_id), escape_key(record.idempotency_key))
            current = WritebackRecord.from_entity(*found) if found else record
            if current.final:
                return None
            now = self.clock()
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
        claimed = self._claim(record)
        if claimed is None:
            log.info("write-back %s/%s already %s; not applied again", record.provider_id, record.idempotency_key,
                     record.state, extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
            return self.find_record(record.provider_id, record.idempotency_key) or record
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
        read_at = self.clock()
        if record.before is None:
            record.before = snapshot(subscription)
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

    def _settle(self, record: WritebackRecord, subscription: Mapping[str, Any], decision: Decision) -> WritebackRecord:
        """A decision that sends nothing: already there (succeeded) or refused (rejected)."""
        self._mirror.subscription(record.provider_id, record.customer_id, subscription)
        if decision.kind is DecisionKind.NOOP:
            return self._succeed(record, decision.reason, after=snapshot(subscription))
        return self._reject(record, decision.reason, code=decision.code)

    def _send_patch(self, record: WritebackRecord, client: Any, path: str, subscription: Mapping[str, Any],
                    decision: Decision) -> Any:
        etag = get_path(subscription, "attributes", "etag")
        record.request_id = _request_id(record, f"PATCH|{etag}")
        self._save(record)  # the MS-RequestId is known before the call goes out
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        return client.send_json("PATCH", path, patched(subscription, decision.changes), headers=headers,
                                customer_id=record.customer_id, replay_safe=bool(etag), request_id=record.request_id)

    def _after_stale_etag(self, record: WritebackRecord, request: WritebackRequest, read: Mapping[str, Any],
                          fresh: Mapping[str, Any], read_at: datetime, *, last: bool) -> WritebackRecord | None:
        """Settle a PATCH refused for a stale etag, given the fresh resource; None means the
        field we change did not move, so the caller recomputes on ``fresh`` and sends once more."""
        name = watched_field(request.operation)
        if reached(request, fresh):
            self._mirror.subscription(record.provider_id, record.customer_id, fresh)
            return self._succeed(record, f"{name} already {json.dumps(target_value(request))} after an etag refresh",
                                 after=snapshot(fresh))
        was, now_value = snapshot(read)[name], snapshot(fresh)[name]
        if was != now_value:
            self._mirror.subscription(record.provider_id, record.customer_id, fresh)
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
        self._mirror.subscription(record.provider_id, record.customer_id, current)
        return self._succeed(record, after=snapshot(current))

    def _confirm_accepted(self, record: WritebackRecord, request: WritebackRequest, client: Any,
                          location: str) -> WritebackRecord:
        """Partner Center answered 202: poll ``location`` a bounded number of times for the change."""
        record.state, record.location = WritebackState.PENDING_CONFIRMATION, location
        self._save(record)
        for poll in range(1, self.confirm_polls + 1):
            self.sleep(self.confirm_interval)
            current = client.get_json(location, customer_id=record.customer_id)
            if reached(request, current):
                self._mirror.subscription(record.provider_id, record.customer_id, current)
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
            self._mirror.agreement(record.provider_id, customer, found)
        return found


def _named(message: Mapping[str, Any], name: str, limit: int) -> str | None:
    """A text field of an invalid message, cut to ``limit`` characters; None when absent or not text."""
    value = message.get(name)
    return (value[:limit] or None) if isinstance(value, str) else None


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


__all__ = [
    "ApplyFailed", "MAX_DELIVERIES", "MAX_MESSAGE_BYTES", "Submission", "WRITEBACK_POISON_QUEUE", "WRITEBACK_QUEUE",
    "WritebackService",
]
