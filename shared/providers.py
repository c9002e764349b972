"""Provider connections: one Partner Center the partner syncs with.

The editable fields mirror the setup form. Consent and verify fields are maintained by
``auth/`` and are never accepted from a client.
"""
from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from .clock import utc_now
from .errors import NotFound, ValidationFailed
# validate_provider_id is re-exported: admin, auth and webhooks import it from here with the model
from .provider_ids import validate_provider_id
from .reference_data import AZURE_SPECIALIZATIONS, COUNTRY_CODES, CURRENCY_CODES
from .token_health import token_health_json
from .tables import TableRepository, TableStore

PROVIDERS_TABLE = "providers"
PROVIDER_PARTITION = "provider"


class ConsentStatus(enum.StrEnum):
    """The provider's consent, as stored in column ``consent_status`` (str-valued: stored values
    are these strings)."""

    NONE = "none"  # never consented
    PENDING = "pending"  # a consent link is out and no consent ever worked (see consent_pending_since)
    ACTIVE = "active"
    EXPIRED = "expired"  # the refresh token expired, or Entra asks for MFA again
    REVOKED = "revoked"  # Entra no longer accepts the stored consent


class AzureSpecializationMode(enum.StrEnum):
    """What the partner does with Azure specialization discounts (field ``azureSpecialization``)."""

    NONE = "none"  # no specialization adjustment
    PASS_THROUGH = "pass-through"  # pass the discounts to the customer
    RETAIN = "retain"  # keep them as margin


class CostManagement(enum.StrEnum):
    """Where subscription ``unitCost``/``costCurrency`` come from (field ``costManagement``)."""

    OFF = "do not update"
    PRICE_LIST = "from the product price list"  # refused until a price-list sync exists
    INVOICE = "from the provider invoice"

    def __bool__(self) -> bool:
        """True when pcsync maintains costs (code that read the old boolean keeps working)."""
        return self is not CostManagement.OFF


CONSENT_STATUSES = tuple(status.value for status in ConsentStatus)
BLOCKED_STATUSES = (ConsentStatus.EXPIRED, ConsentStatus.REVOKED)

# JSON field name (camelCase, as the HTTP API and CLI use) -> attribute name
EDITABLE_FIELDS = {
    "name": "name",
    "countryCode": "country_code",
    "currencyCode": "currency_code",
    "tenantId": "tenant_id",
    "billingStartDay": "billing_start_day",
    "resellerRelationshipUrl": "reseller_relationship_url",
    "delegatedAdminAuthorizeUrl": "delegated_admin_authorize_url",
    "costManagement": "cost_management",
    "usageMismatchTolerance": "usage_mismatch_tolerance",
    "azureSpecialization": "azure_specialization",
    "azureSpecializations": "azure_specializations",
    "enabled": "enabled",
}
REQUIRED_FIELDS = ("name", "countryCode", "currencyCode", "tenantId")
_LOOKUP = {k.lower(): k for k in EDITABLE_FIELDS} | {v.replace("_", ""): k for k, v in EDITABLE_FIELDS.items()}


@dataclass(frozen=True)
class Tolerance:
    """Usage mismatch tolerance: an absolute amount in the provider currency, or a percentage."""

    value: Decimal
    is_percent: bool

    @classmethod
    def parse(cls, raw: Any) -> "Tolerance":
        if isinstance(raw, bool):
            raise ValueError("must be a number such as 5 or 2.50, or a percentage such as 0.5%")
        text = str(raw).strip()
        is_percent = text.endswith("%")
        try:
            value = Decimal(text[:-1].strip() if is_percent else text)
        except InvalidOperation:
            raise ValueError("must be a number such as 5 or 2.50, or a percentage such as 0.5%") from None
        if not value.is_finite() or value < 0:
            raise ValueError("must be zero or more")
        return cls(value, is_percent)

    def allowed_difference(self, total: Decimal) -> Decimal:
        return abs(total) * self.value / 100 if self.is_percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.is_percent else str(self.value)


@dataclass(frozen=True)
class ProviderConnection:
    id: str
    name: str
    country_code: str
    currency_code: str
    tenant_id: str
    billing_start_day: int | None = None
    reseller_relationship_url: str | None = None
    delegated_admin_authorize_url: str | None = None
    cost_management: CostManagement = CostManagement.OFF
    usage_mismatch_tolerance: str = "0"
    azure_specialization: AzureSpecializationMode = AzureSpecializationMode.NONE
    azure_specializations: tuple[str, ...] = ()  # the specializations the partner holds
    enabled: bool = True
    # maintained by auth/, never by clients
    consent_status: ConsentStatus = ConsentStatus.NONE
    consented_upn: str | None = None
    consented_oid: str | None = None
    consented_at: str | None = None
    last_token_refresh: str | None = None
    refresh_token_expires_at: str | None = None
    consent_error: str | None = None
    # when the newest consent link was made (cleared once a consent completes): a link for a
    # provider whose consent works is recorded here and leaves consent_status active
    consent_pending_since: str | None = None
    # why the tokens stopped working (shared.token_health.TokenHealth) and when that was seen;
    # cleared by a consent that completes and by a Verify whose MFA checks pass
    token_health: str | None = None
    token_health_at: str | None = None
    verify_result: str | None = None
    verified_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def consent_active(self) -> bool:
        """The stored consent works. Also true for a row an older pcsync moved to ``pending`` when
        it made a new link for a working consent (consented before, no error since): the current
        consent stays in force until a new one completes."""
        if self.consent_status == ConsentStatus.PENDING:
            return bool(self.consented_at) and not self.consent_error
        return self.consent_status == ConsentStatus.ACTIVE

    @property
    def consent_blocked(self) -> ConsentStatus | None:
        """``expired``/``revoked`` when the stored consent is known to be unusable, else None.

        A new consent link leaves a working (``active``) consent as it is. For a provider without
        one it sets ``pending`` but keeps ``consent_error`` until the consent succeeds, so a
        provider whose consent was lost stays blocked while the admin signs in again.
        """
        if self.consent_status in BLOCKED_STATUSES:
            return ConsentStatus(self.consent_status)
        if self.consent_status == ConsentStatus.PENDING and self.consent_error:
            return ConsentStatus.REVOKED if "revoked" in self.consent_error.lower() else ConsentStatus.EXPIRED
        return None

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance.parse(self.usage_mismatch_tolerance)

    @property
    def refresh_token_secret_name(self) -> str:
        """Per provider and per creation: a provider purged and added again under the same id
        gets a new name, because Key Vault keeps a deleted name reserved while it is recoverable."""
        created = _compact_timestamp(self.created_at)
        return f"pcsync-refresh-token-{self.id}-{created}" if created else f"pcsync-refresh-token-{self.id}"

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, v) for k, v in EDITABLE_FIELDS.items()}
        data["azureSpecializations"] = list(self.azure_specializations)
        data["id"] = self.id
        data["consent"] = {
            "status": self.consent_status,
            "upn": self.consented_upn,
            "objectId": self.consented_oid,
            "consentedAt": self.consented_at,
            "lastTokenRefresh": self.last_token_refresh,
            "refreshTokenExpiresAt": self.refresh_token_expires_at,
            "error": self.consent_error,
            "pendingSince": self.consent_pending_since,
            **token_health_json(self.token_health, self.token_health_at),
        }
        data["verify"] = json.loads(self.verify_result) if self.verify_result else None
        data["verifiedAt"] = self.verified_at
        data["createdAt"] = self.created_at
        data["updatedAt"] = self.updated_at
        return data

    def to_entity(self) -> dict[str, Any]:
        entity = {"PartitionKey": PROVIDER_PARTITION, "RowKey": self.id}
        for f in fields(self):
            if f.name == "id":
                continue
            value = getattr(self, f.name)
            if f.name == "azure_specializations":
                value = json.dumps(list(value))
            if isinstance(value, enum.Enum):
                value = value.value
            if value is not None:
                entity[f.name] = value
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> "ProviderConnection":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in entity.items() if k in known}
        # status fields are cleared by merging "" (a merge cannot remove a property)
        values = {k: (None if v == "" else v) for k, v in values.items()}
        values["id"] = entity["RowKey"]
        values["azure_specializations"] = tuple(json.loads(entity.get("azure_specializations") or "[]"))
        if values.get("billing_start_day") is not None:
            values["billing_start_day"] = int(values["billing_start_day"])
        values["cost_management"] = stored_cost_management(values.get("cost_management"))
        values["azure_specialization"] = _stored_mode(values.get("azure_specialization"))
        values["consent_status"] = ConsentStatus(values.get("consent_status") or ConsentStatus.NONE)
        return cls(**values)


def stored_cost_management(value: Any) -> CostManagement:
    """A stored ``cost_management``: rows from before the three values hold a boolean, and
    ``true`` meant what is now "from the provider invoice"."""
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
        return CostManagement.INVOICE if str(value).strip().lower() == "true" else CostManagement.OFF
    try:
        return CostManagement(value) if value else CostManagement.OFF
    except ValueError:
        return CostManagement.OFF


def _stored_mode(value: Any) -> AzureSpecializationMode:
    try:
        return AzureSpecializationMode(value) if value else AzureSpecializationMode.NONE
    except ValueError:
        return AzureSpecializationMode.NONE


def _choice(enum_type: type[enum.StrEnum], aliases: Mapping[str, Any]) -> Any:
    """A validator for one of an enum's values (or an alias), in any case."""
    known = {member.value.lower(): member for member in enum_type} | {k.lower(): v for k, v in aliases.items()}

    def parse(value: Any) -> Any:
        key = str(value).strip().lower() if isinstance(value, (str, bool)) else None
        if key not in known:
            raise ValueError("must be one of: " + ", ".join(repr(m.value) for m in enum_type))
        return known[key]
    return parse


def _cost_management(value: Any) -> CostManagement:
    mode = _choice(CostManagement, {"true": CostManagement.INVOICE, "false": CostManagement.OFF, "off": CostManagement.OFF,
                                    "invoice": CostManagement.INVOICE, "price list": CostManagement.PRICE_LIST,
                                    "pricelist": CostManagement.PRICE_LIST})(value)
    if mode is CostManagement.PRICE_LIST:
        raise ValueError("'from the product price list' is not supported yet (pcsync has no price-list sync); use "
                         "'from the provider invoice' or 'do not update'")
    return mode


def _compact_timestamp(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y%m%d%H%M%S%f")
    except ValueError:
        return ""


def _https_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an https URL")
    parsed = urlparse(value.strip())
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValueError("must be an https URL")
    return value.strip()


def _text(value: Any, *, max_length: int = 256) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    return value.strip()


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("must be true or false")


def _day(value: Any) -> int:
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not text.isdigit() or not 1 <= int(text) <= 31:
        raise ValueError("must be a whole number from 1 to 31")
    return int(text)


def _validators() -> dict[str, Any]:
    def country(value: Any) -> str:
        code = _text(value, max_length=2).upper()
        if code not in COUNTRY_CODES:
            raise ValueError("must be an ISO 3166-1 alpha-2 country code such as US or GB")
        return code

    def currency(value: Any) -> str:
        code = _text(value, max_length=3).upper()
        if code not in CURRENCY_CODES:
            raise ValueError("must be an ISO 4217 currency code such as USD or EUR")
        return code

    def tenant(value: Any) -> str:
        try:
            return str(uuid.UUID(_text(value, max_length=40)))
        except ValueError:
            raise ValueError("must be the partner tenant id (Microsoft ID), a GUID") from None

    def tolerance(value: Any) -> str:
        return str(Tolerance.parse(value))

    def specializations(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of specialization keys")
        unknown = [v for v in value if v.strip() not in AZURE_SPECIALIZATIONS]
        if unknown:
            raise ValueError(
                f"unknown specialization(s) {', '.join(unknown)}; known: {', '.join(sorted(AZURE_SPECIALIZATIONS))}"
            )
        return tuple(dict.fromkeys(v.strip() for v in value))

    def optional(validator):
        return lambda value: None if value is None or value == "" else validator(value)

    return {
        "name": _text,
        "countryCode": country,
        "currencyCode": currency,
        "tenantId": tenant,
        "billingStartDay": optional(_day),
        "resellerRelationshipUrl": optional(_https_url),
        "delegatedAdminAuthorizeUrl": optional(_https_url),
        "costManagement": _cost_management,
        "usageMismatchTolerance": tolerance,
        "azureSpecialization": _choice(AzureSpecializationMode, {"passthrough": AzureSpecializationMode.PASS_THROUGH,
                                                                 "pass_through": AzureSpecializationMode.PASS_THROUGH}),
        "azureSpecializations": specializations,
        "enabled": _boolean,
    }


_VALIDATE = _validators()


def parse_provider_fields(body: Any) -> dict[str, Any]:
    """Validate a provider body; returns attribute values or raises with one message per bad field.

    Field names are matched case-insensitively and may be camelCase, PascalCase or snake_case.
    """
    if not isinstance(body, Mapping):
        raise ValidationFailed({"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    seen: set[str] = set()
    for raw_key, raw_value in body.items():
        key = _LOOKUP.get(str(raw_key).replace("_", "").lower()) if isinstance(raw_key, str) else None
        if key is None:
            if str(raw_key).lower() in ("id", "consent", "verify", "verifiedat", "createdat", "updatedat"):
                continue  # read-only fields echoed back from a GET are ignored, not refused
            problems[str(raw_key)] = "unknown field"
            continue
        if key in seen:
            problems[key] = "given more than once"
            continue
        seen.add(key)
        if raw_value is None and key in REQUIRED_FIELDS:
            problems[key] = "is required"
            continue
        try:
            values[EDITABLE_FIELDS[key]] = _VALIDATE[key](raw_value)
        except ValueError as exc:
            problems[key] = str(exc)
    for key in REQUIRED_FIELDS:
        if key not in seen and key not in problems:
            problems[key] = "is required"
    if problems:
        raise ValidationFailed(problems)
    return values


def _editable_entity(provider: ProviderConnection) -> dict[str, Any]:
    """The merge a PUT writes: keys, ``updated_at`` and the editable fields (a cleared field is
    merged as "", which reads back as None)."""
    full = provider.to_entity()
    entity = {"PartitionKey": PROVIDER_PARTITION, "RowKey": provider.id, "updated_at": provider.updated_at}
    entity.update({name: full.get(name, "") for name in EDITABLE_FIELDS.values()})
    return entity


class ProviderRepository:
    def __init__(self, table: TableRepository):
        self._table = table

    @classmethod
    def from_store(cls, store: TableStore) -> "ProviderRepository":
        return cls(store.table(PROVIDERS_TABLE))

    def get_provider(self, provider_id: str) -> ProviderConnection:
        entity = self._table.find_entity(PROVIDER_PARTITION, provider_id)
        if entity is None:
            raise NotFound(f"provider {provider_id!r} does not exist")
        return ProviderConnection.from_entity(entity)

    def find_provider(self, provider_id: str) -> ProviderConnection | None:
        entity = self._table.find_entity(PROVIDER_PARTITION, provider_id)
        return ProviderConnection.from_entity(entity) if entity else None

    def list_providers(self, *, enabled_only: bool = False) -> Iterator[ProviderConnection]:
        for entity in self._table.list_entities(partition_key=PROVIDER_PARTITION):
            provider = ProviderConnection.from_entity(entity)
            if provider.enabled or not enabled_only:
                yield provider

    def put_provider(self, provider_id: str, body: Any) -> tuple[ProviderConnection, bool]:
        """Create or replace the editable fields; returns (provider as stored, created).

        The write is a merge of the editable fields only: consent and verify fields are never in
        it, so a consent completing between this read and this write is kept, not overwritten
        with what was read."""
        validate_provider_id(provider_id)
        values = parse_provider_fields(body)
        existing = self.find_provider(provider_id)
        now = utc_now().isoformat()
        editable_defaults = {f.name: f.default for f in fields(ProviderConnection) if f.name in EDITABLE_FIELDS.values()}
        if existing is None:
            provider = ProviderConnection(id=provider_id, created_at=now, updated_at=now, **(editable_defaults | values))
            self._table.upsert_entity(provider.to_entity())
        else:
            provider = replace(existing, updated_at=now, **(editable_defaults | values))
            self._table.upsert_entity(_editable_entity(provider))
        return self.get_provider(provider_id), existing is None

    def update_status(self, provider_id: str, **changes: Any) -> ProviderConnection:
        """Merge auth-maintained fields (consent, verify) into the row."""
        allowed = {f.name for f in fields(ProviderConnection)} - set(EDITABLE_FIELDS.values()) - {"id"}
        unknown = set(changes) - allowed - {"enabled"}
        if unknown:
            raise ValueError(f"not status fields: {sorted(unknown)}")
        if "consent_status" in changes and changes["consent_status"] not in CONSENT_STATUSES:
            raise ValueError(f"unknown consent status {changes['consent_status']!r}")
        self.get_provider(provider_id)
        entity = {"PartitionKey": PROVIDER_PARTITION, "RowKey": provider_id, "updated_at": utc_now().isoformat()}
        entity.update({k: ("" if v is None else v.value if isinstance(v, enum.Enum) else v) for k, v in changes.items()})
        self._table.upsert_entity(entity)
        return self.get_provider(provider_id)

    def disable_provider(self, provider_id: str) -> ProviderConnection:
        return self.update_status(provider_id, enabled=False)

    def delete_provider(self, provider_id: str) -> None:
        self._table.delete_entity(PROVIDER_PARTITION, provider_id)
