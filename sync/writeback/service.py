"""Write-back: change Partner Center on the partner's behalf, once, with a record of what happened.

A write-back request (HTTP ``POST /api/writebacks``, a message another system puts on queue
``writebacks``, or ``pcsync writeback``) is

1. validated strictly (one message per bad field; unknown fields refused);
2. logged in table ``writebackops`` under its idempotency key (PartitionKey provider id, RowKey
   the escaped key): ``accepted``;
3. applied by the queue trigger: ``applying`` -> ``succeeded`` | ``rejected`` (business rule or
   ApiFault, with the reason and code) | ``failed`` (transient; the message is retried, and the
   last delivery records the reason before the message goes to ``writebacks-poison``) |
   ``pending_confirmation`` (Partner Center answered 202: poll until the change is visible, then
   ``succeeded``, or ``unconfirmed`` after a bounded number of polls);
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

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import quote

from shared.errors import ConsentRequired, Conflict, NotFound, ValidationFailed
from shared.logging import get_logger
from shared.partner_center import (
    BadRequestError,
    NotFoundError,
    PartnerCenterError,
    ServiceError,
    ThrottledError,
    TransportError,
    as_bool,
    as_enum,
    as_int,
    get_path,
)
from shared.providers import PROVIDER_ID_PATTERN, ProviderConnection
from shared.tables import escape_key, unescape_key

from ..streams import AGREEMENTS, SUBSCRIPTIONS

log = get_logger(__name__)

WRITEBACK_TABLE = "writebackops"
WRITEBACK_QUEUE = "writebacks"
WRITEBACK_POISON_QUEUE = f"{WRITEBACK_QUEUE}-poison"
MAX_DELIVERIES = 5  # host.json extensions.queues.maxDequeueCount
MAX_MESSAGE_BYTES = 64 * 1024
INVALID_PARTITION = "_invalid"  # rejected queue messages that name no usable provider/key; not a provider id

# states
ACCEPTED = "accepted"
APPLYING = "applying"
SUCCEEDED = "succeeded"
REJECTED = "rejected"
FAILED = "failed"
PENDING_CONFIRMATION = "pending_confirmation"
UNCONFIRMED = "unconfirmed"
FINAL_STATES = frozenset({SUCCEEDED, REJECTED, UNCONFIRMED})
STATES = (ACCEPTED, APPLYING, SUCCEEDED, REJECTED, FAILED, PENDING_CONFIRMATION, UNCONFIRMED)

# operations
QUANTITY = "subscription.quantity"
SUSPEND = "subscription.suspend"
REACTIVATE = "subscription.reactivate"
CANCEL = "subscription.cancel"
AUTO_RENEW = "subscription.autoRenew"
CONFIRM_AGREEMENT = "agreement.confirm"
SUBSCRIPTION_OPERATIONS = (QUANTITY, SUSPEND, REACTIVATE, CANCEL, AUTO_RENEW)
OPERATIONS = (*SUBSCRIPTION_OPERATIONS, CONFIRM_AGREEMENT)

MCA_TYPE = "MicrosoftCustomerAgreement"
MAX_QUANTITY = 100_000
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (ThrottledError, ServiceError, TransportError)
_REQUEST_ID_NAMESPACE = uuid.UUID("5f0c2b1e-3d4a-4c6b-9a57-0b9f7f3c2a10")

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@~+=-]{0,127}$")
CUSTOMER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SUBSCRIPTION_PATTERN = CUSTOMER_PATTERN
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
PHONE_PATTERN = re.compile(r"^[0-9+()\-. ]{4,32}$")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """Partner Center dates (7 fractional digits, ``Z`` or an offset) or plain dates, as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip()
    match = re.match(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?$", text)
    if not match:
        return None
    day, clock, fraction, zone = match.groups()
    fraction = (fraction or "")[:7]  # Python takes at most 6 digits
    micro = fraction[1:7].ljust(6, "0") if fraction else ""
    stamp = f"{day}T{clock or '00:00:00'}{'.' + micro if micro else ''}{'+00:00' if zone in (None, 'Z') else zone}"
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------------
# The request: strict validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WritebackRequest:
    idempotency_key: str
    provider_id: str
    customer_id: str
    operation: str
    subscription_id: str | None = None
    quantity: int | None = None
    auto_renew: bool | None = None
    contact: Mapping[str, str] | None = None  # firstName, lastName, email, phoneNumber?
    date_agreed: str | None = None
    requested_by: str | None = None

    def params(self) -> dict[str, Any]:
        """The operation's parameters as given (what the fingerprint and the record show)."""
        params: dict[str, Any] = {}
        if self.quantity is not None:
            params["quantity"] = self.quantity
        if self.auto_renew is not None:
            params["autoRenewEnabled"] = self.auto_renew
        if self.contact is not None:
            params["contact"] = dict(self.contact)
        if self.date_agreed is not None:
            params["dateAgreed"] = self.date_agreed
        return params

    def fingerprint(self) -> str:
        """Hash of everything that decides what is changed (not who asked)."""
        payload = {"provider": self.provider_id, "customer": self.customer_id, "operation": self.operation,
                   "subscription": self.subscription_id, **self.params()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"idempotencyKey": self.idempotency_key, "provider": self.provider_id,
                                   "customer": self.customer_id, "operation": self.operation}
        if self.subscription_id is not None:
            message["subscription"] = self.subscription_id
        message.update(self.params())
        if self.requested_by:
            message["requestedBy"] = self.requested_by
        return message


_FIELDS = {  # lower-cased, '_' removed -> canonical name
    "idempotencykey": "idempotencyKey", "provider": "provider", "customer": "customer", "operation": "operation",
    "subscription": "subscription", "quantity": "quantity", "autorenewenabled": "autoRenewEnabled",
    "contact": "contact", "dateagreed": "dateAgreed", "requestedby": "requestedBy",
}
_OPERATION_FIELDS = {
    QUANTITY: {"subscription", "quantity"},
    SUSPEND: {"subscription"},
    REACTIVATE: {"subscription"},
    CANCEL: {"subscription"},
    AUTO_RENEW: {"subscription", "autoRenewEnabled"},
    CONFIRM_AGREEMENT: {"contact", "dateAgreed"},
}
_OPTIONAL_FIELDS = {"dateAgreed"}
_COMMON_FIELDS = {"idempotencyKey", "provider", "customer", "operation", "requestedBy"}
_CONTACT_FIELDS = {"firstname": "firstName", "lastname": "lastName", "email": "email", "phonenumber": "phoneNumber",
                   "phone": "phoneNumber"}


def _text(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"is required: {what}")
    if not pattern.match(value.strip()):
        raise ValueError(f"must be {what}")
    return value.strip()


def _contact(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError("must be an object with firstName, lastName, email and optionally phoneNumber")
    problems, contact = [], {}
    for raw_key, raw in value.items():
        key = _CONTACT_FIELDS.get(str(raw_key).replace("_", "").lower())
        if key is None:
            problems.append(f"unknown field {str(raw_key)[:40]!r}")
            continue
        if key in contact:
            problems.append(f"{key} given more than once")
            continue
        if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > 256:
            problems.append(f"{key} must be 1-256 characters of text")
            continue
        contact[key] = raw.strip()
    for key in ("firstName", "lastName", "email"):
        if key not in contact and not any(p.startswith(key) for p in problems):
            problems.append(f"{key} is required")
    if "email" in contact and not EMAIL_PATTERN.match(contact["email"]):
        problems.append("email is not an email address")
    if "phoneNumber" in contact and not PHONE_PATTERN.match(contact["phoneNumber"]):
        problems.append("phoneNumber must be 4-32 digits, spaces or + ( ) - .")
    if problems:
        raise ValueError("; ".join(problems))
    return contact


def _date_agreed(value: Any, now: datetime) -> str:
    moment = parse_time(value) if isinstance(value, str) else None
    if moment is None:
        raise ValueError("must be an ISO-8601 date or date-time, e.g. 2024-05-01 or 2024-05-01T00:00:00Z")
    if moment > now + timedelta(days=1):
        raise ValueError("cannot be in the future")
    if moment.year < 2018:
        raise ValueError("must be on or after 2018-01-01 (the Microsoft Customer Agreement did not exist before)")
    return _iso(moment)  # type: ignore[return-value]


def parse_request(body: Any, *, now: datetime | None = None) -> WritebackRequest:
    """Validate a write-back body; raises ValidationFailed with one message per bad field.

    Field names are matched case-insensitively (camelCase, PascalCase, snake_case); unknown
    fields are refused, so a typo never silently turns into a different change.
    """
    now = now or utc_now()
    if not isinstance(body, Mapping):
        raise ValidationFailed({"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    given: dict[str, Any] = {}
    for raw_key, value in body.items():
        name = _FIELDS.get(str(raw_key).replace("_", "").lower()) if isinstance(raw_key, str) else None
        if name is None:
            problems[str(raw_key)[:64]] = "unknown field"
        elif name in given:
            problems[name] = "given more than once"
        else:
            given[name] = value

    values: dict[str, Any] = {}
    checks: dict[str, Callable[[Any], Any]] = {
        "idempotencyKey": lambda v: _text(v, KEY_PATTERN, "1-128 characters: letters, digits and . _ : @ ~ + = -"),
        "provider": lambda v: _text(v, PROVIDER_ID_PATTERN, "a provider id (lower-case letters, digits and '-')"),
        "customer": lambda v: _text(v, CUSTOMER_PATTERN, "a customer tenant id"),
        "subscription": lambda v: _text(v, SUBSCRIPTION_PATTERN, "a subscription id"),
        "requestedBy": lambda v: _requested_by(v),
    }
    for name in ("idempotencyKey", "provider", "customer"):
        if name not in given:
            problems.setdefault(name, "is required")
    operation = given.get("operation")
    if "operation" not in given:
        problems.setdefault("operation", "is required")
    elif operation not in OPERATIONS:
        problems.setdefault("operation", f"must be one of {', '.join(OPERATIONS)}")
        operation = None
    wanted = _OPERATION_FIELDS.get(operation, set()) if operation else set()
    for name in wanted - _OPTIONAL_FIELDS:
        if name not in given:
            problems.setdefault(name, f"is required for {operation}")
    for name, value in given.items():
        if name in problems:
            continue
        if operation and name not in _COMMON_FIELDS | wanted:
            problems[name] = f"is not used by {operation}"
            continue
        try:
            if name == "operation":
                continue
            if name == "quantity":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError("must be a whole number")
                if not 1 <= value <= MAX_QUANTITY:
                    raise ValueError(f"must be between 1 and {MAX_QUANTITY}")
                values[name] = value
            elif name == "autoRenewEnabled":
                if not isinstance(value, bool):
                    raise ValueError("must be true or false")
                values[name] = value
            elif name == "contact":
                values[name] = _contact(value)
            elif name == "dateAgreed":
                values[name] = _date_agreed(value, now)
            elif name in checks:
                values[name] = checks[name](value)
        except ValueError as exc:
            problems[name] = str(exc)
    if problems:
        raise ValidationFailed(problems)
    if operation == CONFIRM_AGREEMENT and "dateAgreed" not in values:
        values["dateAgreed"] = _iso(now.replace(microsecond=0))
    return WritebackRequest(
        idempotency_key=values["idempotencyKey"], provider_id=values["provider"], customer_id=values["customer"],
        operation=operation, subscription_id=values.get("subscription"), quantity=values.get("quantity"),
        auto_renew=values.get("autoRenewEnabled"), contact=values.get("contact"), date_agreed=values.get("dateAgreed"),
        requested_by=values.get("requestedBy"),
    )


def _requested_by(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256 or any(ord(c) < 0x20 for c in value):
        raise ValueError("must be text of at most 256 characters")
    return value.strip() or None


def decode_message(body: bytes | str | Any) -> Any:
    """Queue body -> JSON value; raises ValidationFailed for oversized, non-UTF-8 or non-JSON."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, (bytes, bytearray)):
        raise ValidationFailed({"body": "message body must be JSON text"})
    if len(body) > MAX_MESSAGE_BYTES:
        raise ValidationFailed({"body": f"message is larger than {MAX_MESSAGE_BYTES} bytes"})
    try:
        return json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValidationFailed({"body": "message body is not valid JSON"}) from None


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


@dataclass
class WritebackRecord:
    provider_id: str
    idempotency_key: str
    customer_id: str = ""
    operation: str = ""
    subscription_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    state: str = ACCEPTED
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
            "state": self.state,
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
        }
        for name in ("accepted_at", "started_at", "finished_at", "updated_at"):
            value = getattr(self, name)
            if value is not None:
                entity[name] = value
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any], etag: str | None = None) -> "WritebackRecord":
        def text(name: str) -> str | None:
            value = entity.get(name)
            return None if value in (None, "") else str(value)

        def loads(name: str) -> Any:
            value = text(name)
            return json.loads(value) if value else None

        def when(name: str) -> datetime | None:
            return parse_time(entity.get(name))

        return cls(
            provider_id=text("provider_id") or unescape_key(entity["PartitionKey"]),
            idempotency_key=text("idempotency_key") or unescape_key(entity["RowKey"]),
            customer_id=text("customer_id") or "", operation=text("operation") or "",
            subscription_id=text("subscription_id"), params=loads("params") or {},
            fingerprint=text("fingerprint") or "", state=text("state") or ACCEPTED, reason=text("reason"),
            error_code=text("error_code"), attempts=int(entity.get("attempts") or 0), request_id=text("request_id"),
            correlation_id=text("correlation_id") or str(uuid.uuid4()), before=loads("before"), after=loads("after"),
            location=text("location"), source=text("source") or "", requested_by=text("requested_by"),
            message_id=text("message_id"), accepted_at=when("accepted_at"), started_at=when("started_at"),
            finished_at=when("finished_at"), updated_at=when("updated_at"), etag=etag,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "idempotencyKey": self.idempotency_key, "provider": self.provider_id, "customer": self.customer_id,
            "operation": self.operation, "subscription": self.subscription_id, "params": self.params,
            "state": self.state, "reason": self.reason, "errorCode": self.error_code, "attempts": self.attempts,
            "requestId": self.request_id, "correlationId": self.correlation_id, "before": self.before,
            "after": self.after, "location": self.location, "source": self.source, "requestedBy": self.requested_by,
            "acceptedAt": _iso(self.accepted_at), "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at), "updatedAt": _iso(self.updated_at),
        }


# --------------------------------------------------------------------------------------------
# The log (table writebackops): conditional create and claim, over azure-data-tables
# --------------------------------------------------------------------------------------------


class WritebackLog(Protocol):
    def find(self, partition_key: str, row_key: str) -> tuple[dict[str, Any], str | None] | None: ...

    def create(self, entity: Mapping[str, Any]) -> bool: ...

    def replace(self, entity: Mapping[str, Any], *, etag: str | None = None) -> bool: ...

    def by_row_key(self, row_key: str) -> list[tuple[dict[str, Any], str | None]]: ...


class TableWritebackLog:
    """``writebackops`` with the two conditional writes idempotency needs: insert-if-absent
    (two requests with one key cannot both be accepted) and replace-if-unchanged (a claim)."""

    def __init__(self, client: Any):
        self._client = client

    @classmethod
    def from_store(cls, tables: Any) -> "TableWritebackLog":
        """Over the runtime's TableStore, so the log uses the same account, credential and client
        options as every other table (connection string or identity-based)."""
        return cls(tables.table(WRITEBACK_TABLE).client)

    def find(self, partition_key: str, row_key: str) -> tuple[dict[str, Any], str | None] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None
        return dict(entity), entity.metadata.get("etag")

    def create(self, entity: Mapping[str, Any]) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._client.create_entity(dict(entity))
        except ResourceExistsError:
            return False
        return True

    def replace(self, entity: Mapping[str, Any], *, etag: str | None = None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        if etag is None:
            self._client.upsert_entity(dict(entity), mode=UpdateMode.REPLACE)
            return True
        try:
            self._client.update_entity(dict(entity), mode=UpdateMode.REPLACE, etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True

    def by_row_key(self, row_key: str) -> list[tuple[dict[str, Any], str | None]]:
        rows = self._client.query_entities("RowKey eq @rk", parameters={"rk": row_key})
        return [(dict(row), row.metadata.get("etag")) for row in rows]


# --------------------------------------------------------------------------------------------
# Rules: what to send for a subscription, decided locally before anything is written
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    kind: str  # "patch" | "noop" | "reject"
    reason: str = ""
    code: str | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)  # field -> new value (PATCH)


def is_nce(subscription: Mapping[str, Any]) -> bool:
    return ":" in str(get_path(subscription, "offerId") or "")


def snapshot(subscription: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a write-back can change, plus the etag: what ``before``/``after`` record."""
    return {
        "quantity": as_int(get_path(subscription, "quantity")),
        "status": as_enum(get_path(subscription, "status")),
        "autoRenewEnabled": as_bool(get_path(subscription, "autoRenewEnabled")),
        "etag": get_path(subscription, "attributes", "etag"),
    }


def watched_field(operation: str) -> str:
    return {QUANTITY: "quantity", AUTO_RENEW: "autoRenewEnabled"}.get(operation, "status")


def target_value(request: WritebackRequest) -> Any:
    return {
        QUANTITY: request.quantity, AUTO_RENEW: request.auto_renew, SUSPEND: "suspended",
        REACTIVATE: "active", CANCEL: "deleted",
    }[request.operation]


def reached(request: WritebackRequest, subscription: Mapping[str, Any]) -> bool:
    return snapshot(subscription)[watched_field(request.operation)] == target_value(request)


def decide(request: WritebackRequest, subscription: Mapping[str, Any], now: datetime) -> Decision:
    """Partner Center's update rules, checked on the fresh resource before any PATCH."""
    state = snapshot(subscription)
    status, nce = state["status"], is_nce(subscription)
    name, target = watched_field(request.operation), target_value(request)
    if state[name] == target:
        return Decision("noop", f"{name} is already {json.dumps(target)} in Partner Center")
    if status == "deleted":
        return Decision("reject", "the subscription is deleted (cancelled) in Partner Center and cannot be updated",
                        "2011")
    window_end = parse_time(get_path(subscription, "cancellationAllowedUntilDate"))
    window_open = window_end is not None and now <= window_end
    window_text = _iso(window_end) if window_end else "no date given"
    if request.operation == QUANTITY:
        if status == "suspended":
            return Decision("reject", "the quantity of a suspended subscription cannot change; reactivate it first",
                            "800091")
        if status != "active":
            return Decision("reject", f"the quantity can only change on an active subscription (status {status})")
        current = state["quantity"]
        if nce and current is not None and target < current:
            if not window_open:
                return Decision("reject", f"new-commerce quantity cannot be decreased after the cancellation window "
                                          f"(cancellationAllowedUntilDate {window_text}); only increases are allowed",
                                "800090")
            refundable = as_int(get_path(subscription, "refundableQuantity", "totalQuantity"))
            if refundable is not None and current - target > refundable:
                return Decision("reject", f"new-commerce quantity can be decreased by at most {refundable} now "
                                          f"(refundableQuantity), not by {current - target}", "800090")
        return Decision("patch", changes={"quantity": target})
    if request.operation == AUTO_RENEW:
        if status == "suspended":
            return Decision("reject", "auto-renew cannot change on a suspended subscription; reactivate it first",
                            "800091")
        return Decision("patch", changes={"autoRenewEnabled": target})
    if request.operation == SUSPEND:
        if status != "active":
            return Decision("reject", f"only an active subscription can be suspended (status {status})")
        return Decision("patch", changes={"status": "suspended"})
    if request.operation == REACTIVATE:
        if status != "suspended":
            return Decision("reject", f"only a suspended subscription can be reactivated (status {status})")
        return Decision("patch", changes={"status": "active"})
    if request.operation == CANCEL:
        if not nce:
            return Decision("reject", "legacy license-based subscriptions cannot be cancelled; suspend them instead")
        if status not in ("active", "suspended"):
            return Decision("reject", f"the subscription cannot be cancelled in status {status}")
        if not window_open:
            return Decision("reject", f"the cancellation window has passed (cancellationAllowedUntilDate "
                                      f"{window_text}); Partner Center no longer allows cancelling it", "900117")
        return Decision("patch", changes={"status": "deleted"})
    raise ValueError(f"not a subscription operation: {request.operation}")


def patched(subscription: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The full resource (as read, so its ``attributes.etag`` guards the write) with the change."""
    body = json.loads(json.dumps(subscription))
    for name, value in changes.items():
        existing = next((k for k in body if k.lower() == name.lower()), name)
        body[existing] = value
    return body


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------


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

    @classmethod
    def for_runtime(cls, runtime: Any, *, sync_service: Any = None, log_store: WritebackLog | None = None,
                    **overrides: Any) -> "WritebackService":
        """Clients come from the sync service, so write-backs share each partner tenant's call
        budget and connection pool with the sync running in the same process."""
        from ..engine import service_for

        sync = sync_service or service_for(runtime)

        def client_for(provider: ProviderConnection, record: WritebackRecord) -> Any:
            return sync.client_for(provider).bind(correlation_id=record.correlation_id)

        options: dict[str, Any] = {
            "log_store": log_store or TableWritebackLog.from_store(runtime.tables),
            "tables": runtime.tables, "providers": runtime.providers, "queues": runtime.queues,
            "client_factory": client_for,
        }
        options.update(overrides)
        return cls(**options)

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

    def _finish(self, record: WritebackRecord, state: str, reason: str | None = None, *,
                code: str | None = None, after: dict[str, Any] | None = None) -> WritebackRecord:
        record.state, record.reason, record.error_code = state, reason, code
        if after is not None:
            record.after = after
        if state in FINAL_STATES or state == FAILED:
            record.finished_at = self.clock()
        self._save(record)
        level = 20 if state == SUCCEEDED else 30
        log.log(level, "write-back %s/%s %s: %s%s", record.provider_id, record.idempotency_key, record.operation,
                state, f" ({reason})" if reason else "",
                extra={"provider_id": record.provider_id, "customer_id": record.customer_id,
                       "idempotency_key": record.idempotency_key, "state": state, "error_code": code,
                       "request_id": record.request_id})
        return record

    # -- accepting -----------------------------------------------------------------------

    def accept(self, request: WritebackRequest, *, source: str, message_id: str | None = None) -> tuple[WritebackRecord, bool]:
        """Log the request as ``accepted``; the same key again returns the existing record
        (Conflict when its request differs). Returns (record, created)."""
        for _ in range(3):
            existing = self.find_record(request.provider_id, request.idempotency_key)
            if existing is not None:
                if existing.fingerprint != request.fingerprint():
                    raise Conflict(f"idempotency key {request.idempotency_key!r} was already used for a different "
                                   f"request ({existing.operation} accepted {_iso(existing.accepted_at)})")
                return existing, False
            record = WritebackRecord.for_request(request, source=source, now=self.clock())
            record.message_id = message_id
            if self.log_store.create(record.to_entity()):
                log.info("write-back %s/%s accepted: %s", request.provider_id, request.idempotency_key,
                         request.operation, extra={"provider_id": request.provider_id,
                                                   "idempotency_key": request.idempotency_key})
                return record, True
        raise Conflict(f"idempotency key {request.idempotency_key!r} is being written concurrently; try again")

    def submit(self, body: Any, *, source: str = "http") -> Submission:
        """HTTP/CLI front door: validate, check the provider, log, enqueue. The same request
        again returns its record; it is queued again only while nothing has finished it
        (``accepted`` - e.g. the first enqueue failed - or ``failed`` after the host gave up)."""
        request = parse_request(body, now=self.clock())
        provider = self.providers.find_provider(request.provider_id)
        if provider is None:
            raise NotFound(f"unknown provider {request.provider_id!r}")
        record, created = self.accept(request, source=source)
        queued = False
        if created or record.state in (ACCEPTED, FAILED):
            if record.state == FAILED:
                record.state, record.reason, record.error_code, record.finished_at = ACCEPTED, None, None, None
                self._save(record)
            self.queues.send_json(WRITEBACK_QUEUE, request.to_message())
            queued = True
        return Submission(record, created, queued)

    def run_now(self, body: Any, *, source: str = "cli") -> WritebackRecord:
        """Validate, log and apply in this process (CLI, demo); transient failures are recorded
        as ``failed`` and not raised."""
        request = parse_request(body, now=self.clock())
        if self.providers.find_provider(request.provider_id) is None:
            raise NotFound(f"unknown provider {request.provider_id!r}")
        record, _ = self.accept(request, source=source)
        try:
            return self.apply(record, delivery=1, max_deliveries=1)
        except ApplyFailed:
            return self.find_record(record.provider_id, record.idempotency_key) or record

    def _reject_message(self, message_id: str, reason: str, *, provider_id: str | None = None,
                        key: str | None = None, problems: Mapping[str, str] | None = None) -> WritebackRecord:
        """A queue message that cannot be logged under its own key: kept in the ``_invalid``
        partition, keyed by the queue message id, so it is visible and never retried."""
        now = self.clock()
        record = WritebackRecord(provider_id=INVALID_PARTITION, idempotency_key=message_id or uuid.uuid4().hex,
                                 state=REJECTED, reason=reason, source="queue", message_id=message_id,
                                 accepted_at=now, finished_at=now, updated_at=now,
                                 params={"problems": dict(problems or {}), "provider": provider_id, "key": key})
        entity = record.to_entity()
        entity["provider_id"] = provider_id or ""
        self.log_store.replace(entity)
        log.warning("write-back message %s rejected: %s", message_id, reason,
                    extra={"message_id": message_id, "provider_id": provider_id, "idempotency_key": key})
        return record

    def handle_message(self, body: bytes | str, *, message_id: str = "", dequeue_count: int = 1) -> WritebackRecord:
        """Queue trigger work. Never raises for bad input (recorded as rejected); raises
        ApplyFailed for transient Partner Center failures so the host redelivers."""
        try:
            request = parse_request(decode_message(body), now=self.clock())
        except ValidationFailed as exc:
            data = None
            try:
                data = decode_message(body)
            except ValidationFailed:
                pass
            provider = data.get("provider") if isinstance(data, Mapping) and isinstance(data.get("provider"), str) else None
            key = data.get("idempotencyKey") if isinstance(data, Mapping) and isinstance(data.get("idempotencyKey"), str) else None
            return self._reject_message(message_id, f"invalid write-back message: {exc}", problems=exc.problems,
                                        provider_id=(provider or "")[:64] or None, key=(key or "")[:128] or None)
        try:
            record, _ = self.accept(request, source="queue", message_id=message_id)
        except Conflict as exc:
            return self._reject_message(message_id, str(exc), provider_id=request.provider_id,
                                        key=request.idempotency_key)
        return self.apply(record, delivery=dequeue_count, max_deliveries=MAX_DELIVERIES)

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
            claimed = replace(current, state=APPLYING, attempts=current.attempts + 1, started_at=current.started_at or now,
                              updated_at=now, reason=None, error_code=None)
            if self.log_store.replace(claimed.to_entity(), etag=current.etag if found else None):
                claimed.etag = None
                return claimed
        raise Conflict(f"write-back {record.idempotency_key!r} is being updated concurrently")

    def apply(self, record: WritebackRecord, *, delivery: int = 1, max_deliveries: int = MAX_DELIVERIES) -> WritebackRecord:
        claimed = self._claim(record)
        if claimed is None:
            log.info("write-back %s/%s already %s; not applied again", record.provider_id, record.idempotency_key,
                     record.state, extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
            return self.find_record(record.provider_id, record.idempotency_key) or record
        record = claimed
        request = record.request()
        provider = self.providers.find_provider(record.provider_id)
        if provider is None:
            return self._finish(record, REJECTED, f"provider {record.provider_id!r} does not exist")
        if not provider.enabled:
            return self._finish(record, REJECTED, f"provider {record.provider_id!r} is disabled")
        blocked = _consent_blocked(provider)
        if blocked:
            return self._finish(record, REJECTED, f"consent needed: the provider's consent is {blocked}; an "
                                                  "administrator must consent again, then resubmit", code="consent")
        try:
            client = self.client_factory(provider, record)
            if record.operation == CONFIRM_AGREEMENT:
                return self._apply_agreement(record, request, client)
            return self._apply_subscription(record, request, client)
        except ConsentRequired as exc:
            return self._finish(record, REJECTED, f"consent needed: {exc}", code="consent")
        except RETRYABLE_ERRORS as exc:
            last = delivery >= max_deliveries
            reason = (f"gave up after {delivery} deliveries (message moved to {WRITEBACK_POISON_QUEUE}): {exc}"
                      if last and max_deliveries > 1 else
                      f"transient failure on delivery {delivery} of {max_deliveries}" +
                      ("" if last else ", will retry") + f": {exc}")
            self._finish(record, FAILED, reason, code=_code(exc))
            raise ApplyFailed(reason) from exc
        except PartnerCenterError as exc:
            return self._finish(record, REJECTED, f"Partner Center refused the change: {exc.description or exc}",
                                code=_code(exc))

    # subscriptions ------------------------------------------------------------------------

    def _subscription_path(self, record: WritebackRecord) -> str:
        return f"/customers/{quote(record.customer_id, safe='')}/subscriptions/{quote(record.subscription_id or '', safe='')}"

    def _apply_subscription(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        path = self._subscription_path(record)
        customer = record.customer_id
        try:
            subscription = client.get_json(path, customer_id=customer)
        except NotFoundError as exc:
            return self._finish(record, REJECTED, "the subscription does not exist in Partner Center", code=_code(exc))
        read_at = self.clock()
        if record.before is None:
            record.before = snapshot(subscription)
        for round_ in (1, 2):
            decision = decide(request, subscription, self.clock())
            if decision.kind == "noop":
                self._store_subscription(record, subscription)
                return self._finish(record, SUCCEEDED, decision.reason, after=snapshot(subscription))
            if decision.kind == "reject":
                self._store_subscription(record, subscription)
                return self._finish(record, REJECTED, decision.reason, code=decision.code)
            etag = get_path(subscription, "attributes", "etag")
            record.request_id = _request_id(record, f"PATCH|{etag}")
            self._save(record)  # the MS-RequestId is known before the call goes out
            headers = {"If-Match": f'"{etag}"'} if etag else {}
            try:
                answer = client.send_json("PATCH", path, patched(subscription, decision.changes), headers=headers,
                                          customer_id=customer, replay_safe=bool(etag), request_id=record.request_id)
            except BadRequestError as exc:
                if exc.code != "2055":
                    return self._finish(record, REJECTED, f"Partner Center refused the change: {exc.description or exc}",
                                        code=exc.code)
                fresh = client.get_json(path, customer_id=customer)
                name = watched_field(request.operation)
                if reached(request, fresh):
                    self._store_subscription(record, fresh)
                    return self._finish(record, SUCCEEDED, f"{name} already {json.dumps(target_value(request))} "
                                                           "after an etag refresh", after=snapshot(fresh))
                was, now_value = snapshot(subscription)[name], snapshot(fresh)[name]
                if was != now_value:
                    self._store_subscription(record, fresh)
                    return self._finish(record, REJECTED, f"changed in Partner Center since {_iso(read_at)}: {name} "
                                                          f"was {json.dumps(was)}, is now {json.dumps(now_value)}; "
                                                          "not applied, resubmit if still wanted", code="2055")
                if round_ == 2:
                    return self._finish(record, REJECTED, "the subscription kept changing in Partner Center (stale "
                                                          "etag twice); not applied", code="2055")
                log.info("write-back %s/%s: stale etag, %s unchanged; retrying once on the fresh resource",
                         record.provider_id, record.idempotency_key, name,
                         extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
                subscription, read_at = fresh, self.clock()
                continue
            return self._after_subscription_write(record, request, client, path, answer)
        raise AssertionError("unreachable")

    def _after_subscription_write(self, record: WritebackRecord, request: WritebackRequest, client: Any, path: str,
                                  answer: Any) -> WritebackRecord:
        if answer.status == 202:
            record.state, record.location = PENDING_CONFIRMATION, answer.location or path
            self._save(record)
            for poll in range(1, self.confirm_polls + 1):
                self.sleep(self.confirm_interval)
                current = client.get_json(record.location, customer_id=record.customer_id)
                if reached(request, current):
                    self._store_subscription(record, current)
                    return self._finish(record, SUCCEEDED, f"confirmed after 202 on poll {poll}",
                                        after=snapshot(current))
            return self._finish(record, UNCONFIRMED, f"Partner Center accepted the change (202) but it was not "
                                                     f"visible after {self.confirm_polls} polls of {record.location}")
        current = answer.body if get_path(answer.body, "id") else client.get_json(path, customer_id=record.customer_id)
        self._store_subscription(record, current)
        return self._finish(record, SUCCEEDED, after=snapshot(current))

    def _store_subscription(self, record: WritebackRecord, subscription: Mapping[str, Any]) -> None:
        """Write the local row exactly as the sync engine would (same columns, raw, hash)."""
        row = SUBSCRIPTIONS.build_row(subscription, provider_id=record.provider_id, customer_id=record.customer_id)
        self._store_row(SUBSCRIPTIONS.table, row)

    def _store_row(self, table_name: str, row: dict[str, Any] | None) -> None:
        if row is None:
            return
        table = self.tables.table(table_name)
        stored = table.find_entity(row["PartitionKey"], row["RowKey"])
        if stored and stored.get("content_hash") == row["content_hash"] and not stored.get("removed"):
            return
        row["removed"] = False
        row["updated_at"] = self.clock()
        table.upsert_entity(row, replace=True)

    # agreements ---------------------------------------------------------------------------

    def _customer_agreements(self, client: Any, customer: str) -> list[dict[str, Any]]:
        page = client.get_json(f"/customers/{quote(customer, safe='')}/agreements",
                               params={"agreementType": MCA_TYPE}, customer_id=customer)
        items = get_path(page, "items")
        return [dict(i) for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []

    @staticmethod
    def _same_agreement(item: Mapping[str, Any], template_id: str, contact: Mapping[str, str]) -> bool:
        def norm(value: Any) -> str:
            return str(value or "").strip().lower()
        return (norm(get_path(item, "templateId")) == norm(template_id)
                and all(norm(get_path(item, "primaryContact", k)) == norm(contact.get(k))
                        for k in ("firstName", "lastName", "email", "phoneNumber")))

    def _apply_agreement(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        customer = record.customer_id
        metadata = client.get_json("/agreements", params={"agreementType": MCA_TYPE})
        templates = [t for t in (get_path(metadata, "items") or []) if isinstance(t, Mapping)
                     and str(get_path(t, "agreementType") or MCA_TYPE).lower() == MCA_TYPE.lower()
                     and get_path(t, "templateId")]
        if not templates:
            return self._finish(record, REJECTED, "Partner Center lists no Microsoft Customer Agreement template "
                                                  "(agreement confirmation is only available in the public cloud)")
        template_id = str(get_path(min(templates, key=lambda t: as_int(get_path(t, "versionRank")) or 0), "templateId"))
        contact = dict(request.contact or {})
        record.before = {"templateId": template_id}
        existing = next((a for a in self._customer_agreements(client, customer)
                         if self._same_agreement(a, template_id, contact)), None)
        if existing is not None:
            self._store_row(AGREEMENTS.table, AGREEMENTS.build_row(existing, provider_id=record.provider_id,
                                                                   customer_id=customer))
            return self._finish(record, SUCCEEDED, "an identical confirmation already exists in Partner Center",
                                after=_agreement_summary(existing))
        body = {"primaryContact": contact, "templateId": template_id, "dateAgreed": request.date_agreed,
                "type": MCA_TYPE}
        record.request_id = _request_id(record, "POST")
        self._save(record)
        try:
            answer = client.send_json("POST", f"/customers/{quote(customer, safe='')}/agreements", body,
                                      customer_id=customer, replay_safe=True, request_id=record.request_id)
            created = answer.body
        except BadRequestError as exc:
            if exc.code != "600061":  # "an agreement with the same details already exists": a replay
                return self._finish(record, REJECTED, f"Partner Center refused the confirmation: "
                                                      f"{exc.description or exc}", code=exc.code)
            created = body
        listed = next((a for a in self._customer_agreements(client, customer)
                       if self._same_agreement(a, template_id, contact)), None)
        if listed is not None:
            self._store_row(AGREEMENTS.table, AGREEMENTS.build_row(listed, provider_id=record.provider_id,
                                                                   customer_id=customer))
        return self._finish(record, SUCCEEDED, after=_agreement_summary(listed or created))


def _agreement_summary(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"templateId": get_path(item, "templateId"), "type": get_path(item, "type"),
            "dateAgreed": get_path(item, "dateAgreed"), "contactEmail": get_path(item, "primaryContact", "email"),
            "userId": get_path(item, "userId")}


def _request_id(record: WritebackRecord, what: str) -> str:
    """One MS-RequestId per (write-back, resource version): a redelivery that sends the same
    write again reuses it, which is what Partner Center's idempotency keys on."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{record.provider_id}|{record.idempotency_key}|{what}"))


def _code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    if code is not None and str(code) != "0":  # 0 is the simulator's / APIM's "no code"
        return str(code)
    return f"HTTP {status}" if status else type(exc).__name__


def _consent_blocked(provider: ProviderConnection) -> str | None:
    if provider.consent_status == "none":
        return "none (never consented)"
    if provider.consent_status == "pending" and not provider.consented_at:
        return "pending (consent not completed)"
    try:
        from auth.tokens import blocked_status
    except ImportError:  # pragma: no cover - auth is part of the app
        return provider.consent_status if provider.consent_status in ("expired", "revoked") else None
    return blocked_status(provider)


# --------------------------------------------------------------------------------------------
# Process-wide service and the entry points the functions and the CLI call
# --------------------------------------------------------------------------------------------

_slot: tuple[Any, WritebackService] | None = None
_slot_lock = threading.Lock()


def service_for(runtime: Any) -> WritebackService:
    global _slot
    with _slot_lock:
        if _slot is None or _slot[0] is not runtime:
            _slot = (runtime, WritebackService.for_runtime(runtime))
        return _slot[1]


def submit(runtime: Any, body: Any, *, source: str = "http") -> Submission:
    return service_for(runtime).submit(body, source=source)


def get_record(runtime: Any, key: str, provider_id: str | None = None) -> WritebackRecord:
    return service_for(runtime).get_record(key, provider_id)


def run_message(runtime: Any, body: bytes | str, *, message_id: str = "", dequeue_count: int = 1) -> WritebackRecord:
    return service_for(runtime).handle_message(body, message_id=message_id, dequeue_count=dequeue_count)


__all__ = [
    "ACCEPTED", "APPLYING", "ApplyFailed", "CONFIRM_AGREEMENT", "Decision", "FAILED", "OPERATIONS",
    "PENDING_CONFIRMATION", "REJECTED", "SUCCEEDED", "Submission", "TableWritebackLog", "UNCONFIRMED",
    "WRITEBACK_QUEUE", "WRITEBACK_TABLE", "WritebackRecord", "WritebackRequest", "WritebackService", "decide",
    "get_record", "parse_request", "run_message", "service_for", "submit",
]
