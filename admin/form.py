"""The provider form's fields, described once from the model (shared/providers.py).

Each editable field of :class:`ProviderConnection` becomes one :class:`FormField`: its input kind
follows the dataclass type (bool: a checkbox; an enum: a select of its values; a tuple: a
multi-select; int: a number), so a field whose type changes in the model (an enum instead of a
bool or a string) changes on the page without editing the page. Only what the type cannot say
is here: labels, hints, the choices of a plain-string field and which optional fields are
recommended. The server still validates everything (PUT /api/providers/{id}); the form only
shows its per-field messages.
"""
from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, fields
from typing import Any, Mapping

from shared.providers import EDITABLE_FIELDS, REQUIRED_FIELDS, ProviderConnection
from shared.reference_data import AZURE_SPECIALIZATIONS, COUNTRY_CODES, CURRENCY_CODES


class Kind(enum.StrEnum):
    TEXT = "text"
    URL = "url"
    NUMBER = "number"
    CHECKBOX = "checkbox"
    SELECT = "select"
    MULTI = "multi"


LABELS = {
    "name": "Name", "countryCode": "Country", "currencyCode": "Currency",
    "tenantId": "Partner tenant id (Microsoft ID)", "billingStartDay": "Billing start day",
    "resellerRelationshipUrl": "Reseller relationship URL",
    "delegatedAdminAuthorizeUrl": "Delegated admin (DAP/GDAP) authorize URL",
    "costManagement": "Cost management", "usageMismatchTolerance": "Usage mismatch tolerance",
    "azureSpecialization": "Azure specialization discounts",
    "azureSpecializations": "Azure specializations held", "enabled": "Enabled",
}
HINTS = {
    "name": "How this Partner Center is named in pcsync (1-256 characters).",
    "countryCode": "ISO 3166-1 alpha-2, e.g. US.",
    "currencyCode": "ISO 4217, e.g. USD: the currency of this Partner Center's invoices.",
    "tenantId": "Partner Center > Account settings > Organization profile > Microsoft ID (a GUID).",
    "billingStartDay": "1-31; only for legacy (D) invoices' Azure billing.",
    "resellerRelationshipUrl": "https URL from Partner Center > Customers > Request a reseller relationship.",
    "delegatedAdminAuthorizeUrl": "https URL for granting delegated admin privileges.",
    "costManagement": "Where subscription unit costs come from; from the provider invoice: the newest invoice's "
                      "effective unit price (Verify then also checks PartnerBilling.Read.All). The price list is "
                      "not supported yet.",
    "usageMismatchTolerance": "An amount in the provider currency (5, 2.50) or a percentage (0.5%).",
    "azureSpecialization": "none: effective price, no specialization adjustment; pass-through: the discounted cost is the "
                           "customer's price basis; retain: the undiscounted cost is, the discount is margin.",
    "azureSpecializations": "The Solutions Partner specializations this partner holds.",
    "enabled": "Disabled providers keep their data and are not synced.",
}
RECOMMENDED = ("usageMismatchTolerance", "resellerRelationshipUrl", "delegatedAdminAuthorizeUrl")
# plain-string fields with a known set of values (an enum-typed field brings its own)
CHOICES: dict[str, Mapping[str, str]] = {
    "countryCode": {code: code for code in sorted(COUNTRY_CODES)},
    "currencyCode": {code: code for code in sorted(CURRENCY_CODES)},
    "azureSpecializations": AZURE_SPECIALIZATIONS,
}
SUGGESTED_ONLY = ("countryCode", "currencyCode")  # typed text with a list of suggestions


@dataclass(frozen=True)
class FormField:
    key: str  # the JSON field name (PUT body, problems)
    label: str
    kind: Kind
    required: bool
    recommended: bool
    hint: str
    choices: tuple[tuple[str, str], ...] = ()  # (value, label)
    default: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "kind": str(self.kind), "required": self.required,
                "recommended": self.recommended, "hint": self.hint, "choices": [list(c) for c in self.choices],
                "default": self.default}


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        inner = typing.get_args(candidate) or (candidate,)
        for item in inner:
            if isinstance(item, type) and issubclass(item, enum.Enum):
                return item
    return None


def _is(annotation: Any, kind: type) -> bool:
    return annotation is kind or kind in typing.get_args(annotation) or typing.get_origin(annotation) is kind


def _kind(key: str, annotation: Any) -> tuple[Kind, tuple[tuple[str, str], ...]]:
    enum_type = _enum_of(annotation)
    choices = tuple((str(m.value), str(m.value)) for m in enum_type) if enum_type else \
        tuple(CHOICES.get(key, {}).items())
    if _is(annotation, tuple):
        return Kind.MULTI, choices
    if enum_type is not None or (choices and key not in SUGGESTED_ONLY):
        return Kind.SELECT, choices
    if _is(annotation, bool):
        return Kind.CHECKBOX, ()
    if _is(annotation, int):
        return Kind.NUMBER, ()
    return (Kind.URL if key.endswith("Url") else Kind.TEXT), choices


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_default(v) for v in value]
    return value


def provider_form_fields() -> tuple[FormField, ...]:
    """Every editable provider field, in the model's order."""
    hints = typing.get_type_hints(ProviderConnection)
    by_attribute = {f.name: f for f in fields(ProviderConnection)}
    result = []
    for key, attribute in EDITABLE_FIELDS.items():
        kind, choices = _kind(key, hints[attribute])
        default = by_attribute[attribute].default
        result.append(FormField(
            key=key, label=LABELS.get(key, key), kind=kind, required=key in REQUIRED_FIELDS,
            recommended=key in RECOMMENDED, hint=HINTS.get(key, ""), choices=choices,
            default=None if key in REQUIRED_FIELDS else _default(default)))
    return tuple(result)


__all__ = ["FormField", "Kind", "provider_form_fields"]
