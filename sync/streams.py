"""One declarative Stream per Partner Center resource type.

A stream says *what* to read and *how to store it*: name, table, path, paging style, key,
parent, and the kept fields that become flat table columns. The client owns the request loop,
:mod:`sync.rows` the diffing and writing, :mod:`sync.engine` runs streams; streams have no I/O.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import quote

from shared.jsonutil import as_bool, as_enum, as_int, as_text, dumps_exact, get_path
from shared.paging import PageRequest, Paginator, PagingStyle, paginator_for
from shared.tables import escape_key, utf16_units
from shared.token_choice import needs_app_user

from .invoices.money import amount_text
from .resources import IdKind, canonical_id, checked_id, invoice_kind, is_nce
from .writeback.end_of_term import current_action, in_extended_service_term

# Edm.String holds 64 KiB of UTF-16, i.e. 32,768 code units; keep room for nothing else.
MAX_RAW_UTF16_UNITS = 32_000


@dataclass(frozen=True)
class Column:
    """A kept field: ``name`` is the table column, ``path`` the JSON path (case-insensitive)."""

    name: str
    path: tuple[str, ...]
    convert: Callable[[Any], Any] = as_text

    def value(self, item: Mapping[str, Any]) -> Any:
        return self.convert(get_path(item, *self.path))


def col(name: str, path: str | None = None, convert: Callable[[Any], Any] = as_text) -> Column:
    return Column(name, tuple((path or name).split(".")), convert)


@dataclass(frozen=True)
class CarriedColumns:
    """``columns`` of the row with the same PartitionKey and RowKey in ``table``."""

    table: str
    columns: tuple[str, ...]


# Cost management "from the provider invoice" (sync/invoices/unitcost.py) keeps each
# subscription's cost here; the subscription sync writes it into the rows it replaces.
SUBSCRIPTION_COSTS = CarriedColumns("subscriptioncosts", ("unitCost", "costCurrency", "unitCostInvoice",
                                                          "unitCostInvoiceDate"))


@dataclass(frozen=True)
class Derived:
    """A column computed from the whole item (e.g. ``isNce``)."""

    name: str
    compute: Callable[[Mapping[str, Any]], Any]


def _json_text(value: Any) -> str | None:
    """A nested value (scheduled actions, next-term instructions) as compact JSON text."""
    if value in (None, "", [], {}):
        return None
    return dumps_exact(value)


def _nce_only(compute: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
    return lambda item: compute(item) if is_nce(item) else None


def _agreement_key(item: Mapping[str, Any]) -> str | None:
    """Agreements have no id. Their identity is what the service keeps unique per customer:
    type + template + contact (a second agreement with identical details is refused, 600061)."""
    explicit = get_path(item, "id")
    if explicit:
        return str(explicit)
    parts = [
        get_path(item, "type") or get_path(item, "agreementType"),
        get_path(item, "templateId"),
        get_path(item, "primaryContact", "firstName"),
        get_path(item, "primaryContact", "lastName"),
        get_path(item, "primaryContact", "email"),
        get_path(item, "primaryContact", "phoneNumber"),
    ]
    if not any(parts):
        return None
    text = "|".join("" if p is None else str(p).strip().lower() for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# The kind of id a child stream's parent id is: checked before it goes into the path
_PARENT_KINDS = {"customers": IdKind.CUSTOMER, "invoices": IdKind.INVOICE}


def _default_key(item: Mapping[str, Any]) -> str | None:
    value = get_path(item, "id")
    return None if value in (None, "") else str(value)


@dataclass(frozen=True)
class Stream:
    """``parent`` names the stream whose rows this one hangs under (rows partitioned per parent
    id); ``path`` may contain ``{parent_id}``. ``path=None``: not a Partner Center collection
    (the Graph billed reconciliation export, read by the Graph client)."""

    name: str
    table: str
    path: str | None
    paging: PagingStyle
    columns: tuple[Column, ...]
    derived: tuple[Derived, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    parent: str | None = None
    page_size: int | None = None
    key: Callable[[Mapping[str, Any]], str | None] = _default_key
    # the shape an item's key must have (it goes into child paths): checked and canonicalised
    key_kind: IdKind | None = None
    # money (invoices, their line items): the bodies' non-integer numbers read as Decimal from
    # the JSON text, never through a float
    exact_numbers: bool = False
    # columns another feature keeps for this stream's rows in its own table (same keys): copied
    # into every row this stream writes, so a changed row is replaced with them, not without them
    carried: "CarriedColumns | None" = None

    # -- request side ------------------------------------------------------------------------

    @property
    def requires_user(self) -> bool:
        """Partner Center serves this stream's reads to App+User tokens only (agreements): the
        token choice's table (shared.token_choice) decides, so the two never disagree."""
        return self.path is not None and needs_app_user("GET", self.path.format(parent_id="id"))

    @property
    def per_customer(self) -> bool:
        """Rows of one customer: its calls also count against that customer's budget."""
        return self.parent == "customers"

    def first_request(self, *, parent_id: str | None = None, page_size: int | None = None) -> PageRequest:
        """The first GET; a parent id that is not its kind's shape is :class:`~sync.resources.InvalidId`
        (an id such as ``x/../<other id>`` must never reach the path), and it is percent-encoded."""
        if self.path is None:
            raise ValueError(f"stream {self.name!r} is not read from Partner Center")
        if self.parent and not parent_id:
            raise ValueError(f"stream {self.name!r} needs a {self.parent} id")
        if self.parent in _PARENT_KINDS:
            parent_id = checked_id(_PARENT_KINDS[self.parent], parent_id)
        params = dict(self.params)
        size = page_size or self.page_size
        if size and self.paging in (PagingStyle.SEEK, PagingStyle.OFFSET):
            params["size"] = str(size)
        if self.paging == PagingStyle.OFFSET:
            params.setdefault("offset", "0")
        return PageRequest.of(self.path.format(parent_id=quote(parent_id or "", safe="")), params)

    def paginator(self, *, parent_id: str | None = None, page_size: int | None = None) -> Paginator:
        return paginator_for(self.paging, self.first_request(parent_id=parent_id, page_size=page_size))

    # -- storage side ------------------------------------------------------------------------

    def partition_key(self, provider_id: str, parent_id: str | None = None) -> str:
        """Provider-level rows under ``provider_id``; a child stream's rows (per customer, per invoice) under
        ``provider_id|parent_id`` (escaped), so a purge by prefix finds both."""
        if self.parent:
            return escape_key(f"{provider_id}|{self._canonical_parent(parent_id)}")
        return escape_key(provider_id)

    def _canonical_parent(self, parent_id: str | None) -> str | None:
        return canonical_id(parent_id) if self.per_customer and parent_id is not None else parent_id

    def item_key(self, item: Mapping[str, Any]) -> str | None:
        """The item's key in its canonical form; None when it has none; :class:`~sync.resources.InvalidId`
        when it has not the shape the stream's ids must have."""
        key = self.key(item)
        if not key:
            return None
        return checked_id(self.key_kind, key) if self.key_kind is not None else key

    def build_row(self, item: Mapping[str, Any], *, provider_id: str, customer_id: str | None = None) -> dict[str, Any] | None:
        """The table entity for one item, or None when the item has no key (an ill-shaped key
        raises :class:`~sync.resources.InvalidId`)."""
        key = self.item_key(item)
        if not key:
            return None
        row: dict[str, Any] = {
            "PartitionKey": self.partition_key(provider_id, customer_id),
            "RowKey": escape_key(key),
            "id": key,
            "provider_id": provider_id,
        }
        if customer_id is not None:
            row["customer_id"] = self._canonical_parent(customer_id)
        for column in self.columns:
            value = column.value(item)
            if value is not None:
                row[column.name] = value
        for extra in self.derived:
            value = extra.compute(item)
            if value is not None:
                row[extra.name] = value
        raw = dumps_exact(item)
        if utf16_units(raw) <= MAX_RAW_UTF16_UNITS:
            row["raw"] = raw
            row["raw_truncated"] = False
        else:
            row["raw_truncated"] = True
        row["content_hash"] = content_hash(row)
        return row


HASH_EXCLUDED = frozenset({"PartitionKey", "RowKey", "content_hash", "removed", "removed_at", "updated_at", "Timestamp"})


def content_hash(row: Mapping[str, Any]) -> str:
    """Hash of the kept columns and raw JSON: the only thing compared to skip unchanged rows."""
    payload = {k: v for k, v in row.items() if k not in HASH_EXCLUDED}
    text = dumps_exact(payload)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


CUSTOMERS = Stream(
    name="customers",
    table="customers",
    path="/customers",
    paging=PagingStyle.SEEK,
    page_size=500,  # the service caps customer pages at 500
    key_kind=IdKind.CUSTOMER,
    columns=(
        col("companyName", "companyProfile.companyName"),
        col("domain", "companyProfile.domain"),
        col("tenantId", "companyProfile.tenantId"),
        col("commerceId"),
        col("relationshipToPartner", convert=as_enum),
        col("associatedPartnerId"),
    ),
)

SUBSCRIPTIONS = Stream(
    name="subscriptions",
    table="subscriptions",
    path="/customers/{parent_id}/subscriptions",
    paging=PagingStyle.NONE,
    parent="customers",
    carried=SUBSCRIPTION_COSTS,
    columns=(
        col("offerId"),
        col("offerName"),
        col("friendlyName"),
        col("quantity", convert=as_int),
        col("unitType"),
        col("status", convert=as_enum),
        col("autoRenewEnabled", convert=as_bool),
        col("billingCycle", convert=as_enum),
        col("billingType", convert=as_enum),
        col("termDuration"),
        col("creationDate"),
        col("effectiveStartDate"),
        col("commitmentEndDate"),
        col("cancellationAllowedUntilDate"),
        col("parentSubscriptionId"),
        col("entitlementId"),
        col("orderId"),
        col("isTrial", convert=as_bool),
        col("productType", "productType.id"),  # e.g. OnlineServices, Azure: not only in raw (dropped when large)
        col("scheduledNextTermInstructions"),  # compact JSON of the next term's product and quantity
        col("etag", "attributes.etag"),
        col("productType", "productType.id"),
        col("scheduledActions", convert=_json_text),
        col("scheduledNextTermInstructions", convert=_json_text),
    ),
    derived=(Derived("isNce", is_nce), Derived("isExtendedServiceTerm", _nce_only(in_extended_service_term)),
             Derived("endOfTermAction", _nce_only(current_action))),
)

AGREEMENTS = Stream(
    name="agreements",
    table="agreements",
    path="/customers/{parent_id}/agreements",
    params={"agreementType": "MicrosoftCustomerAgreement"},
    paging=PagingStyle.NONE,
    parent="customers",
    key=_agreement_key,
    columns=(
        col("type"),
        col("templateId"),
        col("dateAgreed"),
        col("agreementLink"),
        col("userId"),
        col("contactFirstName", "primaryContact.firstName"),
        col("contactLastName", "primaryContact.lastName"),
        col("contactEmail", "primaryContact.email"),
        col("contactPhone", "primaryContact.phoneNumber"),
    ),
)


# Invoices: one partition per provider (a few dozen rows a year). The reconciliation summary
# (recon_* columns) and the import bookkeeping (import_hash) are merged into these rows by
# sync/invoices/; they are not part of the content hash.
INVOICES = Stream(
    name="invoices",
    table="invoices",
    path="/invoices",
    paging=PagingStyle.OFFSET,
    page_size=200,
    key_kind=IdKind.INVOICE,
    exact_numbers=True,
    columns=(
        col("invoiceDate"),
        col("billingPeriodStart", "billingPeriodStartDate"),
        col("billingPeriodEnd", "billingPeriodEndDate"),
        col("totalCharges", convert=amount_text),  # exact decimal text (older rows: Edm.Double, read alike)
        col("paidAmount", convert=amount_text),
        col("currencyCode"),
        col("invoiceType"),
        col("documentType", convert=as_enum),
    ),
    derived=(Derived("kind", invoice_kind),),
)

STREAMS: dict[str, Stream] = {s.name: s for s in (CUSTOMERS, SUBSCRIPTIONS, AGREEMENTS, INVOICES)}
CUSTOMER_STREAMS: tuple[Stream, ...] = tuple(s for s in STREAMS.values() if s.per_customer)


def get_stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        raise ValueError(f"unknown stream {name!r}; known: {', '.join(STREAMS)}") from None
