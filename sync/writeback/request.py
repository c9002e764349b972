"""A write-back request and its strict validation (pure; no I/O).

Field names are matched case-insensitively (camelCase, PascalCase, snake_case); unknown fields
are refused, so a typo never silently turns into a different change. Every bad field gets one
message, so a caller can fix them all at once. Customer and subscription ids are Partner Center
GUIDs, which are case-insensitive: they are lower-cased here, so ``C1`` and ``c1`` are one request
and one partition. A value the server fills in (``dateAgreed``) is not part of the request's
identity: the same body sent again later is the same request.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Callable, Iterable, Mapping

from shared.clock import parse_iso, to_iso, utc_now
from shared.errors import ValidationFailed
from shared.provider_ids import PROVIDER_ID_PATTERN

from .end_of_term import EndOfTerm, parse_action, parse_next_term

# operations (the values are the wire names callers send in ``operation``)
QUANTITY = "subscription.quantity"
SUSPEND = "subscription.suspend"
REACTIVATE = "subscription.reactivate"
CANCEL = "subscription.cancel"
AUTO_RENEW = "subscription.autoRenew"
END_OF_TERM = "subscription.endOfTerm"
FRIENDLY_NAME = "subscription.friendlyName"
CONFIRM_AGREEMENT = "agreement.confirm"
SUBSCRIPTION_OPERATIONS = (QUANTITY, SUSPEND, REACTIVATE, CANCEL, AUTO_RENEW, END_OF_TERM, FRIENDLY_NAME)
OPERATIONS = (*SUBSCRIPTION_OPERATIONS, CONFIRM_AGREEMENT)

MAX_QUANTITY = 100_000
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@~+=-]{0,127}$")
CUSTOMER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SUBSCRIPTION_PATTERN = CUSTOMER_PATTERN
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
PHONE_PATTERN = re.compile(r"^[0-9+()\-. ]{4,32}$")
MAX_FRIENDLY_NAME = 128
MAX_SCHEDULE_AHEAD = timedelta(days=3 * 366)  # a triennial term


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
    action: str | None = None  # an EndOfTerm value: renew, cancel, extendedServiceTerm
    next_term: Mapping[str, Any] | None = None  # renew: quantity, termDuration, billingCycle
    friendly_name: str | None = None
    effective_date: str | None = None  # hold until then (ISO)
    at_renewal: bool | None = None  # quantity: as the next term's instructions
    requested_by: str | None = None
    # parameters the server filled in (not given by the caller): shown and applied, but left out
    # of the fingerprint and the queue message, so a default never changes the request's identity
    defaulted: frozenset[str] = frozenset()

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
        for name, value in (("action", self.action), ("nextTerm", self.next_term),
                            ("friendlyName", self.friendly_name), ("effectiveDate", self.effective_date),
                            ("atRenewal", self.at_renewal)):
            if value is not None:
                params[name] = dict(value) if isinstance(value, Mapping) else value
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **identity: Any) -> "WritebackRequest":
        """The request a record stores (``params`` as ``params()`` wrote them)."""
        return cls(**identity, quantity=params.get("quantity"), auto_renew=params.get("autoRenewEnabled"),
                   contact=params.get("contact"), date_agreed=params.get("dateAgreed"), action=params.get("action"),
                   next_term=params.get("nextTerm"), friendly_name=params.get("friendlyName"),
                   effective_date=params.get("effectiveDate"), at_renewal=params.get("atRenewal"))

    def given_params(self) -> dict[str, Any]:
        """The parameters the caller gave (without server defaults)."""
        return {name: value for name, value in self.params().items() if name not in self.defaulted}

    def fingerprint(self) -> str:
        """Hash of everything the caller asked to change (not who asked, nor server defaults)."""
        payload = {"provider": self.provider_id, "customer": self.customer_id, "operation": self.operation,
                   "subscription": self.subscription_id, **self.given_params()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"idempotencyKey": self.idempotency_key, "provider": self.provider_id,
                                   "customer": self.customer_id, "operation": self.operation}
        if self.subscription_id is not None:
            message["subscription"] = self.subscription_id
        message.update(self.given_params())
        if self.requested_by:
            message["requestedBy"] = self.requested_by
        return message


_FIELDS = {  # lower-cased, '_' removed -> canonical name
    "idempotencykey": "idempotencyKey", "provider": "provider", "customer": "customer", "operation": "operation",
    "subscription": "subscription", "quantity": "quantity", "autorenewenabled": "autoRenewEnabled",
    "contact": "contact", "dateagreed": "dateAgreed", "requestedby": "requestedBy", "action": "action",
    "nextterm": "nextTerm", "friendlyname": "friendlyName", "effectivedate": "effectiveDate",
    "atrenewal": "atRenewal",
}
_OPERATION_FIELDS = {
    QUANTITY: {"subscription", "quantity"},
    SUSPEND: {"subscription"},
    REACTIVATE: {"subscription"},
    CANCEL: {"subscription"},
    AUTO_RENEW: {"subscription", "autoRenewEnabled", "action"},
    END_OF_TERM: {"subscription", "action", "nextTerm"},
    FRIENDLY_NAME: {"subscription", "friendlyName"},
    CONFIRM_AGREEMENT: {"contact", "dateAgreed"},
}
_SCHEDULE_FIELDS = {"effectiveDate"}  # every subscription operation can be held until a date
_OPERATION_FIELDS.update({op: fields | _SCHEDULE_FIELDS for op, fields in _OPERATION_FIELDS.items()
                          if op in SUBSCRIPTION_OPERATIONS})
_OPERATION_FIELDS[QUANTITY] |= {"atRenewal"}
_REQUIRED_FIELDS = ("idempotencyKey", "provider", "customer")
_OPTIONAL_FIELDS = {"dateAgreed", "action", "nextTerm", "effectiveDate", "atRenewal"}
_COMMON_FIELDS = {"idempotencyKey", "provider", "customer", "operation", "requestedBy"}
_CONTACT_FIELDS = {"firstname": "firstName", "lastname": "lastName", "email": "email", "phonenumber": "phoneNumber",
                   "phone": "phoneNumber"}


# -- field parsers: each returns the clean value or raises ValueError with the field's message --


def _text(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"is required: {what}")
    if not pattern.match(value.strip()):
        raise ValueError(f"must be {what}")
    return value.strip()


def _partner_center_id(value: Any, pattern: re.Pattern[str], what: str) -> str:
    """A customer or subscription id, lower-cased: Partner Center's GUIDs ignore case, and one id
    must give one partition (``C1`` next to ``c1`` would never be reconciled by a sync)."""
    return _text(value, pattern, what).lower()


def _quantity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int subclass; true is not 1 seat
        raise ValueError("must be a whole number")
    if not 1 <= value <= MAX_QUANTITY:
        raise ValueError(f"must be between 1 and {MAX_QUANTITY}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _requested_by(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256 or any(ord(c) < 0x20 for c in value):
        raise ValueError("must be text of at most 256 characters")
    return value.strip() or None


def _contact(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError("must be an object with firstName, lastName, email and optionally phoneNumber")
    problems: list[str] = []
    contact: dict[str, str] = {}
    for raw_key, raw in value.items():
        key = _CONTACT_FIELDS.get(str(raw_key).replace("_", "").lower())
        if key is None:
            problems.append(f"unknown field {str(raw_key)[:40]!r}")
        elif key in contact:
            problems.append(f"{key} given more than once")
        elif not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > 256:
            problems.append(f"{key} must be 1-256 characters of text")
        else:
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
    moment = parse_iso(value) if isinstance(value, str) else None
    if moment is None:
        raise ValueError("must be an ISO-8601 date or date-time, e.g. 2024-05-01 or 2024-05-01T00:00:00Z")
    if moment > now + timedelta(days=1):
        raise ValueError("cannot be in the future")
    if moment.year < 2018:
        raise ValueError("must be on or after 2018-01-01 (the Microsoft Customer Agreement did not exist before)")
    return to_iso(moment)  # type: ignore[return-value]


def _effective_date(value: Any, now: datetime) -> str:
    moment = parse_iso(value) if isinstance(value, str) else None
    if moment is None:
        raise ValueError("must be an ISO-8601 date or date-time (UTC), e.g. 2026-07-01")
    if moment > now + MAX_SCHEDULE_AHEAD:
        raise ValueError("must be within three years")
    return to_iso(moment)  # type: ignore[return-value]


def _friendly_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("is required: the subscription's new name")
    if len(value.strip()) > MAX_FRIENDLY_NAME or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"must be at most {MAX_FRIENDLY_NAME} characters of text")
    return value.strip()


def _field_parsers(now: datetime) -> dict[str, Callable[[Any], Any]]:
    return {
        "idempotencyKey": partial(_text, pattern=KEY_PATTERN,
                                  what="1-128 characters: letters, digits and . _ : @ ~ + = -"),
        "provider": partial(_text, pattern=PROVIDER_ID_PATTERN,
                            what="a provider id (lower-case letters, digits and '-')"),
        "customer": partial(_partner_center_id, pattern=CUSTOMER_PATTERN, what="a customer tenant id"),
        "subscription": partial(_partner_center_id, pattern=SUBSCRIPTION_PATTERN, what="a subscription id"),
        "requestedBy": _requested_by,
        "quantity": _quantity,
        "autoRenewEnabled": _flag,
        "contact": _contact,
        "dateAgreed": partial(_date_agreed, now=now),
        "action": parse_action,
        "nextTerm": parse_next_term,
        "friendlyName": _friendly_name,
        "effectiveDate": partial(_effective_date, now=now),
        "atRenewal": _flag,
    }


# -- the request as a whole -------------------------------------------------------------------


def _known_fields(body: Mapping[Any, Any], problems: dict[str, str]) -> dict[str, Any]:
    """The body under canonical field names; unknown and repeated names become problems."""
    given: dict[str, Any] = {}
    for raw_key, value in body.items():
        name = _FIELDS.get(raw_key.replace("_", "").lower()) if isinstance(raw_key, str) else None
        if name is None:
            problems[str(raw_key)[:64]] = "unknown field"
        elif name in given:
            problems[name] = "given more than once"
        else:
            given[name] = value
    return given


def _require(given: Mapping[str, Any], names: Iterable[str], message: str, problems: dict[str, str]) -> None:
    for name in names:
        if name not in given:
            problems.setdefault(name, message)


def _operation(given: Mapping[str, Any], problems: dict[str, str]) -> str | None:
    """The requested operation, or None (with a problem) when it is missing or unknown."""
    if "operation" not in given:
        problems.setdefault("operation", "is required")
        return None
    operation = given["operation"]
    if operation not in OPERATIONS:
        problems.setdefault("operation", f"must be one of {', '.join(OPERATIONS)}")
        return None
    return operation


def _parse_fields(given: Mapping[str, Any], operation: str | None, now: datetime,
                  problems: dict[str, str]) -> dict[str, Any]:
    """Each given field parsed; fields the operation needs but lacks, and fields it does not
    use, become problems."""
    wanted = _OPERATION_FIELDS[operation] if operation else set()
    _require(given, wanted - _OPTIONAL_FIELDS, f"is required for {operation}", problems)
    parsers = _field_parsers(now)
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name in problems or name == "operation":
            continue
        if operation and name not in _COMMON_FIELDS | wanted:
            problems[name] = f"is not used by {operation}"
            continue
        try:
            values[name] = parsers[name](value)
        except ValueError as exc:
            problems[name] = str(exc)
    return values


AUTO_RENEW_OFF_ALONE = (
    "autoRenewEnabled false alone can turn the subscription into a paid Extended Service Term within 24 hours; "
    "say which end of term is meant: action cancel (cancel at term end) or extendedServiceTerm "
    "(or use subscription.endOfTerm)")


def combination_problems(operation: str, values: Mapping[str, Any]) -> dict[str, str]:
    """Fields that are valid alone but not together (the operation's rules across fields)."""
    problems: dict[str, str] = {}
    action = values.get("action")
    if operation == END_OF_TERM and "action" not in values:
        problems["action"] = f"is required for {operation}: renew, cancel or extendedServiceTerm"
    if operation == END_OF_TERM and "nextTerm" in values and action != EndOfTerm.RENEW:
        problems["nextTerm"] = "is only used with action renew (the instructions for the next term)"
    if operation == AUTO_RENEW and values.get("autoRenewEnabled") is False and action not in (
            EndOfTerm.CANCEL, EndOfTerm.EST):
        problems["action"] = AUTO_RENEW_OFF_ALONE
    if operation == AUTO_RENEW and values.get("autoRenewEnabled") is True and action not in (None, EndOfTerm.RENEW):
        problems["action"] = "must be renew (or left out) with autoRenewEnabled true"
    if values.get("atRenewal") and "effectiveDate" in values:
        problems["atRenewal"] = "cannot be combined with effectiveDate: a change at renewal takes effect at term end"
    return problems


def parse_request(body: Any, *, now: datetime | None = None) -> WritebackRequest:
    """Validate a write-back body; raises ValidationFailed with one message per bad field."""
    now = now or utc_now()
    if not isinstance(body, Mapping):
        raise ValidationFailed({"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    given = _known_fields(body, problems)
    _require(given, _REQUIRED_FIELDS, "is required", problems)
    operation = _operation(given, problems)
    values = _parse_fields(given, operation, now, problems)
    if operation and not problems:
        problems.update(combination_problems(operation, values))
    if problems:
        raise ValidationFailed(problems)
    defaulted: set[str] = set()
    if operation == CONFIRM_AGREEMENT and "dateAgreed" not in values:
        values["dateAgreed"] = to_iso(now.replace(microsecond=0))
        defaulted.add("dateAgreed")
    return WritebackRequest(
        idempotency_key=values["idempotencyKey"], provider_id=values["provider"], customer_id=values["customer"],
        operation=operation, subscription_id=values.get("subscription"), quantity=values.get("quantity"),
        auto_renew=values.get("autoRenewEnabled"), contact=values.get("contact"), date_agreed=values.get("dateAgreed"),
        action=values.get("action"), next_term=values.get("nextTerm"), friendly_name=values.get("friendlyName"),
        effective_date=values.get("effectiveDate"), at_renewal=values.get("atRenewal") or None,
        requested_by=values.get("requestedBy"), defaulted=frozenset(defaulted),
    )


__all__ = [
    "AUTO_RENEW", "CANCEL", "CONFIRM_AGREEMENT", "END_OF_TERM", "FRIENDLY_NAME", "KEY_PATTERN", "MAX_QUANTITY", "OPERATIONS", "QUANTITY",
    "REACTIVATE", "SUBSCRIPTION_OPERATIONS", "SUSPEND", "WritebackRequest", "parse_request",
]
