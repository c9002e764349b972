"""Partner Center's activity log (``GET /v1/auditrecords``) as delta work: which customers to
re-read and what of each (pure, except :func:`read_records`).

A record's ``customerId`` and ``resourceType`` decide the work: ``customer`` re-reads the
customer row; ``subscription``, ``order`` and the other commerce types that change
subscriptions re-read that customer's subscriptions; ``agreement`` its agreements. Types that
change nothing pcsync keeps (user licenses, users, partner-level records) are passed over, and an
unknown type re-reads all three (the safe side: a re-read costs a call, a miss costs drift).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping

from shared.clock import parse_iso
from shared.jsonutil import get_path
from shared.paging import PageRequest, PagingStyle, paginator_for

from .resources import GUID_PATTERN, canonical_id

AUDIT_RECORDS_PATH = "/auditrecords"
AUDIT_WINDOW = timedelta(days=90)  # the log keeps 90 days; an older startDate is a 400
# below the window by a day: a cursor this old is read as too old (dates are whole UTC days)
USABLE_WINDOW = AUDIT_WINDOW - timedelta(days=1)
AUDIT_PAGE_SIZE = 500


class Resource(enum.StrEnum):
    """What a delta re-reads of one customer (also the ``resources`` of a targeted message)."""

    CUSTOMER = "customer"
    SUBSCRIPTIONS = "subscriptions"
    AGREEMENTS = "agreements"


ALL_RESOURCES = frozenset(Resource)
CHILD_RESOURCES = frozenset({Resource.SUBSCRIPTIONS, Resource.AGREEMENTS})
RESOURCE_TYPES: dict[str, frozenset[Resource]] = {
    "customer": frozenset({Resource.CUSTOMER}),
    "subscription": frozenset({Resource.SUBSCRIPTIONS}),
    "order": frozenset({Resource.SUBSCRIPTIONS}),
    "addon": frozenset({Resource.SUBSCRIPTIONS}),
    "cart": frozenset({Resource.SUBSCRIPTIONS}),
    "transfer": frozenset({Resource.SUBSCRIPTIONS}),
    "upgrade": frozenset({Resource.SUBSCRIPTIONS}),
    "conversion": frozenset({Resource.SUBSCRIPTIONS}),
    "entitlement": frozenset({Resource.SUBSCRIPTIONS}),
    "agreement": frozenset({Resource.AGREEMENTS}),
    "customeragreement": frozenset({Resource.AGREEMENTS}),
    # nothing pcsync stores
    "license": frozenset(), "customeruser": frozenset(), "user": frozenset(), "application": frozenset(),
    "partnerrelationship": frozenset(), "servicerequest": frozenset(),
}


def resources_for(resource_type: Any) -> frozenset[Resource]:
    key = str(resource_type or "").replace("_", "").replace("-", "").strip().lower()
    return RESOURCE_TYPES.get(key, ALL_RESOURCES)


@dataclass(frozen=True)
class AuditRecord:
    id: str
    customer_id: str | None
    resource_type: str
    operation_type: str
    at: datetime | None

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> "AuditRecord":
        customer = canonical_id(str(get_path(item, "customerId") or ""))
        return cls(id=str(get_path(item, "id") or ""), customer_id=customer if GUID_PATTERN.match(customer) else None,
                   resource_type=str(get_path(item, "resourceType") or ""),
                   operation_type=str(get_path(item, "operationType") or ""),
                   at=parse_iso(get_path(item, "operationDate")))


@dataclass
class DeltaPlan:
    """Customers to re-read and what of each; a customer is in it once, whatever it took."""

    work: dict[str, set[Resource]] = field(default_factory=dict)
    records: int = 0
    passed_over: int = 0  # records without a customer or of a type pcsync does not store

    def add(self, customer_id: str, resources: Iterable[Resource]) -> None:
        wanted = set(resources)
        if wanted:
            self.work.setdefault(canonical_id(customer_id), set()).update(wanted)

    def add_record(self, record: AuditRecord) -> None:
        self.records += 1
        wanted = resources_for(record.resource_type)
        if record.customer_id is None or not wanted:
            self.passed_over += 1
            return
        self.add(record.customer_id, wanted)

    @property
    def customers(self) -> list[str]:
        return sorted(self.work)


def audit_request(start: datetime, end: datetime) -> PageRequest:
    """The first page: whole UTC days from ``start``'s to ``end``'s (both included)."""
    return PageRequest.of(AUDIT_RECORDS_PATH, {"startDate": start.date().isoformat(),
                                               "endDate": end.date().isoformat(), "size": str(AUDIT_PAGE_SIZE)})


def read_records(client: Any, start: datetime, end: datetime) -> Iterator[AuditRecord]:
    """Every record from ``start``'s day to ``end``'s (seek paging); a page that is not a collection
    fails the read, never reads as "no changes"."""
    for item in client.iter_items(paginator_for(PagingStyle.SEEK, audit_request(start, end))):
        yield AuditRecord.parse(item)


__all__ = ["ALL_RESOURCES", "AUDIT_WINDOW", "AuditRecord", "CHILD_RESOURCES", "DeltaPlan", "Resource",
           "USABLE_WINDOW", "read_records", "resources_for"]
