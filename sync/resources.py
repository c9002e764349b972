"""Partner Center's rules about its own resources, in one place (pure; no I/O)."""
from __future__ import annotations

import enum
import re
from typing import Any, Mapping

from shared.errors import InvalidInput
from shared.jsonutil import get_path


def is_nce(subscription: Mapping[str, Any]) -> bool:
    """New-commerce subscriptions carry offer ids of the form ``<product>:<sku>:<availability>``;
    legacy offers are a bare GUID-like id."""
    return ":" in str(get_path(subscription, "offerId") or "")


def invoice_kind(invoice: Mapping[str, Any]) -> str:
    """``D`` for legacy (Recurring, office/azure) invoices, ``G`` for new commerce (OneTime).
    The id prefix decides when it is D or G; otherwise the invoice type does."""
    invoice_id = str(get_path(invoice, "id") or "").upper()
    if invoice_id[:1] in ("D", "G"):
        return invoice_id[:1]
    return "D" if str(get_path(invoice, "invoiceType") or "").lower() == "recurring" else "G"


def is_legacy_invoice(invoice: Mapping[str, Any]) -> bool:
    return invoice_kind(invoice) == "D"


# --------------------------------------------------------------------------------------------
# Ids: one canonical form, and the shape each kind must have before it goes into a URL path
# --------------------------------------------------------------------------------------------

GUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Invoice ids are letters and digits (e.g. D040012345, G000123456); they keep their case.
INVOICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,64}$")


class IdKind(enum.StrEnum):
    CUSTOMER = "customer"
    SUBSCRIPTION = "subscription"
    INVOICE = "invoice"


_SHAPES: dict[IdKind, tuple[re.Pattern[str], str]] = {
    IdKind.CUSTOMER: (GUID_PATTERN, "a GUID"),
    IdKind.SUBSCRIPTION: (GUID_PATTERN, "a GUID"),
    IdKind.INVOICE: (INVOICE_ID_PATTERN, "letters and digits"),
}
# Partner Center GUIDs are case-insensitive: one partition per customer whatever case an id arrives in
_CASE_INSENSITIVE = frozenset({IdKind.CUSTOMER, IdKind.SUBSCRIPTION})


class InvalidId(InvalidInput, ValueError):
    """An id that does not have its kind's shape, so it must not go into a URL path or a key."""


def canonical_id(value: Any) -> str:
    """The one canonical form of a Partner Center GUID id: stripped, lower case."""
    return str(value).strip().lower()


def checked_id(kind: IdKind, value: Any) -> str:
    """``value`` in its canonical form, or :class:`InvalidId` when it is not the kind's shape."""
    text = canonical_id(value) if kind in _CASE_INSENSITIVE else str(value).strip()
    pattern, shape = _SHAPES[kind]
    if not isinstance(value, str) or not pattern.match(text):
        raise InvalidId(f"{kind} id {str(value)[:80]!r} is not {shape}")
    return text
