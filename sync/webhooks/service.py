"""Partner Center webhooks: verify the signed callback, turn the event into sync work, record it.

The signature check is ``verify.py``, the event and the work it becomes ``events.py``, what keeps
a signed event from being acted on twice, too late or for the wrong provider ``replay.py``. Each
received event for a known provider is recorded in table ``webhookevents`` (never the signature
or the certificate URL's query).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, NoReturn

from shared import telemetry
from shared.clock import Clock, parse_iso, to_iso, utc_now
from shared.errors import Unavailable
from shared.logging import get_logger
from shared.providers import ProviderConnection, ProviderRepository, validate_provider_id
from shared.queues import QueuePublisher
from shared.tables import TableStore, escape_key

from .errors import ForeignCustomer, MalformedEvent, PayloadTooLarge, UnknownProvider, WebhookRejected
from .events import (
    MAX_DATE_FIELD,
    MAX_RESOURCE_URI,
    MAX_TEXT_FIELD,
    MAX_WEBHOOK_BODY_BYTES,
    WebhookEvent,
    WebhookOutcome,
    Work,
    map_event,
    parse_event,
)
from .replay import DEFAULT_MAX_AGE, AcceptedEvents, CustomerDirectory, TableAcceptedEvents, event_identity
from .verify import SignatureVerifier

log = get_logger(__name__)

WEBHOOK_EVENTS_TABLE = "webhookevents"
# The "status" of every 200 answer: the callback was taken (whatever its outcome).
RECEIPT_ACCEPTED = "accepted"
EVENT_COLUMNS = ("received_at", "event_name", "resource_uri", "outcome", "reason", "status", "queue",
                 "correlation_id")


@dataclass
class Receipt:
    """What the callback answers (200) and what was recorded."""

    provider_id: str
    event_name: str
    outcome: WebhookOutcome
    reason: str
    correlation_id: str
    queue: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = {"status": RECEIPT_ACCEPTED, "event": self.event_name, "outcome": self.outcome.value,
                "correlationId": self.correlation_id}
        if self.queue:
            body["queue"] = self.queue
        return body


class EnqueueFailed(Unavailable):
    """The work could not be queued; the callback answers 503 so Partner Center delivers again."""


class WebhookService:
    """``customers`` says whether a customer is the provider's (replay.ProviderCustomers);
    ``accepted`` keeps the identities of accepted events (default: rows of ``webhookevents``);
    ``max_age`` is the age window (PCSYNC_WEBHOOK_MAX_AGE_DAYS)."""

    def __init__(self, providers: ProviderRepository, tables: TableStore, queues: QueuePublisher,
                 verifier: SignatureVerifier, now: Clock = utc_now, *, customers: CustomerDirectory,
                 accepted: AcceptedEvents | None = None, max_age: timedelta = DEFAULT_MAX_AGE):
        self.providers = providers
        self.tables = tables
        self.queues = queues
        self.verifier = verifier
        self.now = now
        self.customers = customers
        self.max_age = max_age
        self.accepted = accepted or TableAcceptedEvents(tables.table(WEBHOOK_EVENTS_TABLE), retention=max_age)

    def receive(self, provider_id: str, *, headers: Mapping[str, str], body: bytes) -> Receipt:
        """Verify, map, screen, enqueue, record. Raises ValidationFailed (400, not a provider id),
        WebhookRejected (400/401/404/413) or EnqueueFailed."""
        with telemetry.span("pcsync.webhook.receive", provider=provider_id):
            provider = self._require_provider(provider_id)
            correlation_id = str(uuid.uuid4())
            event, work = self._verified_work(provider_id, headers, body, correlation_id)
            identity = ""
            if work.queue and work.message is not None:
                work, identity = self._screened(provider, event, work, correlation_id)
            if work.queue and work.message is not None:
                try:
                    self.queues.send_json(work.queue, work.message)
                except Exception as exc:  # storage trouble: let Partner Center deliver again
                    self.accepted.release(provider_id, identity)
                    self._record(provider_id, event, WebhookOutcome.REJECTED, f"could not queue work: {type(exc).__name__}",
                                 correlation_id, status=503)
                    raise EnqueueFailed("the event could not be queued; deliver it again later") from exc
            self._record(provider_id, event, work.outcome, work.reason, correlation_id, status=200, queue=work.queue)
            log.info("partner center webhook %s for %s: %s", event.event_name, provider_id, work.outcome,
                     extra={"provider_id": provider_id, "correlation_id": correlation_id, "event": event.event_name})
            return Receipt(provider_id, event.event_name, work.outcome, work.reason, correlation_id, work.queue)

    def list_events(self, provider_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest recorded events of a provider (RowKeys sort newest first)."""
        rows = self.tables.table(WEBHOOK_EVENTS_TABLE).list_entities(partition_key=escape_key(provider_id))
        out = []
        for row in rows:
            out.append({k: row.get(k) for k in EVENT_COLUMNS})
            if len(out) >= limit:
                break
        return out

    def _require_provider(self, provider_id: str) -> ProviderConnection:
        validate_provider_id(provider_id)  # 400 for whitespace, control characters, upper case
        provider = self.providers.find_provider(provider_id)
        if provider is None or not provider.enabled:
            raise UnknownProvider(f"no enabled provider {provider_id}")
        return provider

    def _screened(self, provider: ProviderConnection, event: WebhookEvent, work: Work,
                  correlation_id: str) -> tuple[Work, str]:
        """The work an event may still do (replay.py): none when it is too old or a repeat; a
        refusal (recorded, raised) when its customer is not the provider's. Returns the claimed
        identity, released again when anything after the claim fails."""
        now = self.now()
        changed_at = parse_iso(event.resource_change_utc_date)
        if changed_at is None:
            self._refuse(provider.id, event, MalformedEvent("ResourceChangeUtcDate must be a timestamp"), correlation_id)
        if changed_at < now - self.max_age:
            return Work(WebhookOutcome.STALE, f"changed at {to_iso(changed_at)}, older than the "
                        f"{self.max_age.days}-day window: acknowledged, not acted on"), ""
        identity = event_identity(event)
        if not self.accepted.claim(provider.id, identity, at=now):
            return Work(WebhookOutcome.DUPLICATE, "the same event was accepted before: not queued again"), identity
        try:
            belongs = work.customer_id is None or self.customers.belongs(provider, work.customer_id)
        except Exception:  # Partner Center unreachable: the redelivery must be able to claim it again
            self.accepted.release(provider.id, identity)
            raise
        if not belongs:
            self.accepted.release(provider.id, identity)
            self._refuse(provider.id, event, ForeignCustomer(
                f"customer {work.customer_id} is not a customer of provider {provider.id}"), correlation_id)
        return work, identity

    def _refuse(self, provider_id: str, event: WebhookEvent | None, exc: WebhookRejected,
                correlation_id: str) -> NoReturn:
        """Record the refusal and raise it (the HTTP answer is its status)."""
        self._record(provider_id, event, WebhookOutcome.REJECTED, str(exc), correlation_id, status=exc.status)
        log.warning("partner center webhook for %s rejected (%d): %s", provider_id, exc.status, exc,
                    extra={"provider_id": provider_id, "correlation_id": correlation_id})
        raise exc

    def _verified_work(self, provider_id: str, headers: Mapping[str, str], body: bytes,
                       correlation_id: str) -> tuple[WebhookEvent, Work]:
        """The event and its work, once the signature is checked; a refusal is recorded and raised."""
        event: WebhookEvent | None = None
        try:
            # the size first: a too large body is neither downloaded a certificate for nor parsed
            if len(body) > MAX_WEBHOOK_BODY_BYTES:
                raise PayloadTooLarge(f"request body is larger than {MAX_WEBHOOK_BODY_BYTES} bytes")
            self.verifier.verify(headers, body)
            event = parse_event(body)
            return event, map_event(provider_id, event, correlation_id=correlation_id)
        except WebhookRejected as exc:
            self._refuse(provider_id, event or _unverified_event(body), exc, correlation_id)

    def _record(self, provider_id: str, event: WebhookEvent | None, outcome: WebhookOutcome, reason: str,
                correlation_id: str, *, status: int, queue: str | None = None) -> None:
        telemetry.annotate(outcome=outcome, event=event.event_name if event else None, status=status, queue=queue,
                           correlation_id=correlation_id)
        received = self.now()
        reverse_ms = 10**13 - int(received.timestamp() * 1000)
        entity = {
            "PartitionKey": escape_key(provider_id),
            "RowKey": f"{reverse_ms:013d}-{uuid.uuid4().hex}",
            "provider_id": provider_id,
            # stored as a table timestamp (Edm.DateTime), not as text
            "received_at": received,
            "event_name": (event.event_name if event else "")[:MAX_TEXT_FIELD],
            "resource_uri": (event.resource_uri if event else "")[:MAX_RESOURCE_URI],
            "resource_name": (event.resource_name if event else "")[:MAX_TEXT_FIELD],
            "resource_change_utc_date": (event.resource_change_utc_date if event else "")[:MAX_DATE_FIELD],
            "outcome": outcome.value,
            "reason": reason[:1000],
            "status": status,
            "queue": queue or "",
            "correlation_id": correlation_id,
        }
        try:
            self.tables.table(WEBHOOK_EVENTS_TABLE).upsert_entity(entity, replace=True)
        except Exception:  # the record must never change the answer Partner Center gets
            log.exception("could not write the webhookevents row", extra={"provider_id": provider_id})


def _unverified_event(body: bytes) -> WebhookEvent | None:
    """Best-effort fields of a rejected body, for the record only (never acted on)."""
    try:
        return parse_event(body)
    except WebhookRejected:
        return None
