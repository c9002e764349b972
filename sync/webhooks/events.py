"""Partner Center webhook events (pure): the callback body, and the sync work each event becomes.

``subscription-updated`` becomes a ``sync-customer`` message for the customer, ``invoice-ready``
an ``import-invoice`` message, ``test-created`` is acknowledged, anything else is acknowledged and
recorded as ignored.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from shared.jsonutil import JsonRejected, lower_keys, parse_json_text

from ..activity import Resource
from ..engine import SYNC_CUSTOMER_QUEUE, InvalidMessage
from ..invoices.service import IMPORT_INVOICE_QUEUE, ImportMessage, parse_import_message
from ..resources import canonical_id
from ..runs import SyncMode
from ..targeted import TargetedMessage, parse_targeted_message
from .errors import MalformedEvent, PayloadTooLarge

MAX_WEBHOOK_BODY_BYTES = 64 * 1024
MAX_RESOURCE_URI = 2048
MAX_TEXT_FIELD = 256
MAX_DATE_FIELD = 64

EVENT_SUBSCRIPTION_UPDATED = "subscription-updated"
EVENT_INVOICE_READY = "invoice-ready"
EVENT_TEST_CREATED = "test-created"
# The events `pcsync webhook register` asks for by default.
DEFAULT_EVENTS = (EVENT_SUBSCRIPTION_UPDATED, EVENT_INVOICE_READY, EVENT_TEST_CREATED)

# \Z, not $: "$" also matches before a trailing newline
_EVENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SUBSCRIPTION_PATH = re.compile(r"/customers/([^/]+)/subscriptions/([^/]+)/?\Z", re.IGNORECASE)
_INVOICE_PATH = re.compile(r"/invoices/([^/]+)/?\Z", re.IGNORECASE)


class WebhookOutcome(enum.StrEnum):
    """What became of a received event, as stored in column ``outcome`` of ``webhookevents``."""

    ENQUEUED = "enqueued"  # sync work was queued
    ACKNOWLEDGED = "acknowledged"  # understood, nothing to do (test-created)
    IGNORED = "ignored"  # an event pcsync does not handle
    REJECTED = "rejected"  # refused (bad signature, malformed, too large, wrong provider) or could not be queued
    DUPLICATE = "duplicate"  # the same event was accepted before: acknowledged, not queued again
    STALE = "stale"  # ResourceChangeUtcDate older than the age window: acknowledged, not acted on


@dataclass(frozen=True)
class WebhookEvent:
    event_name: str
    resource_uri: str
    resource_name: str
    resource_change_utc_date: str
    audit_uri: str | None = None


def decode_body(body: bytes) -> dict[str, Any]:
    """The callback body as a JSON object with lower-cased keys (Partner Center writes PascalCase;
    any key case is accepted)."""
    if len(body) > MAX_WEBHOOK_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_WEBHOOK_BODY_BYTES} bytes")
    try:
        data = parse_json_text(body, max_bytes=MAX_WEBHOOK_BODY_BYTES)
    except JsonRejected as exc:
        detail = f"request body is {exc}" if "nested" in str(exc) else "request body is not UTF-8 JSON"
        raise MalformedEvent(detail) from None
    if not isinstance(data, dict):
        raise MalformedEvent("request body must be a JSON object")
    return lower_keys(data)


def _text_field(fields: Mapping[str, Any], name: str, limit: int = MAX_TEXT_FIELD) -> str:
    value = fields.get(name.lower())
    if not isinstance(value, str) or not value.strip():
        raise MalformedEvent(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise MalformedEvent(f"{name} is longer than {limit} characters")
    return value.strip()


def parse_event(body: bytes) -> WebhookEvent:
    """The callback body: a JSON object with the documented PascalCase fields (any key case).
    Raises PayloadTooLarge (413) or MalformedEvent (400)."""
    fields = decode_body(body)
    event_name = _text_field(fields, "EventName")
    if not _EVENT_NAME.match(event_name):
        raise MalformedEvent("EventName is not an event name")
    audit = fields.get("audituri")
    return WebhookEvent(
        event_name=event_name,
        resource_uri=_text_field(fields, "ResourceUri", MAX_RESOURCE_URI),
        resource_name=_text_field(fields, "ResourceName"),
        resource_change_utc_date=_text_field(fields, "ResourceChangeUtcDate", MAX_DATE_FIELD),
        audit_uri=audit[:MAX_RESOURCE_URI] if isinstance(audit, str) else None,
    )


# --------------------------------------------------------------------------------------------
# Event -> work
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """What an event turns into: a queue message, or nothing (``queue`` is None)."""

    outcome: WebhookOutcome
    reason: str
    queue: str | None = None
    message: Mapping[str, str] | None = None
    customer_id: str | None = None  # the customer the ResourceUri names (canonical), to bind it to the provider


def _resource_path(resource_uri: str) -> str:
    parts = urlsplit(resource_uri)
    return parts.path if parts.scheme else resource_uri.split("?", 1)[0]


def _subscription_work(provider_id: str, match: re.Match[str], correlation_id: str) -> Work:
    # one partition per customer whatever case the URI spells its id in
    customer_id = canonical_id(match.group(1))
    # the delta's targeted work: that customer's subscriptions (the event names one of them)
    message = parse_targeted_message(TargetedMessage(provider_id, customer_id, correlation_id,
                                                     frozenset({Resource.SUBSCRIPTIONS}), SyncMode.DELTA,
                                                     source="webhook").to_json())
    return Work(WebhookOutcome.ENQUEUED, f"subscription {match.group(2)} changed", SYNC_CUSTOMER_QUEUE,
                message.to_json(), customer_id=customer_id)


def _invoice_work(provider_id: str, match: re.Match[str], correlation_id: str) -> Work:
    message = parse_import_message(ImportMessage(provider_id, match.group(1), correlation_id).to_json())
    return Work(WebhookOutcome.ENQUEUED, f"invoice {message.invoice_id} is ready", IMPORT_INVOICE_QUEUE,
                message.to_json())


@dataclass(frozen=True)
class _Target:
    """A handled event: the resource its ResourceUri must name, and the work it becomes.
    ``build`` re-parses the message it makes, so a webhook can only queue what the queue
    trigger would accept."""

    path: re.Pattern[str]
    shape: str
    build: Callable[[str, re.Match[str], str], Work]


_TARGETS = {
    EVENT_SUBSCRIPTION_UPDATED: _Target(_SUBSCRIPTION_PATH, "/customers/{id}/subscriptions/{id}", _subscription_work),
    EVENT_INVOICE_READY: _Target(_INVOICE_PATH, "/invoices/{id}", _invoice_work),
}


def map_event(provider_id: str, event: WebhookEvent, *, correlation_id: str) -> Work:
    """Raises :class:`MalformedEvent` when a handled event's ResourceUri does not name its resource."""
    name = event.event_name.lower()
    target = _TARGETS.get(name)
    if target is not None:
        match = target.path.search(_resource_path(event.resource_uri))
        if not match:
            raise MalformedEvent(f"ResourceUri of {name} must end in {target.shape}")
        try:
            return target.build(provider_id, match, correlation_id)
        except InvalidMessage as exc:
            raise MalformedEvent(f"ResourceUri of {name}: {exc}") from None
    if name == EVENT_TEST_CREATED:
        return Work(WebhookOutcome.ACKNOWLEDGED, "test event")
    return Work(WebhookOutcome.IGNORED, f"event {event.event_name} is not handled by pcsync")
