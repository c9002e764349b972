"""What keeps a signed event from being acted on twice or on the wrong provider's URL.

A signature proves Microsoft wrote the body, not that it is new or meant for this URL: anyone
who saw one delivery can post it again, to any provider's callback. So an event that would
queue work is acted on only when

* its ``ResourceChangeUtcDate`` is within the age window (older: recorded, acknowledged, dropped),
* its identity (event name + resource URI + change date) was not accepted before (a repeat is
  answered 200 and not queued again); identities are kept for the age window, since anything
  older is refused by its date anyway,
* the customer its ResourceUri names belongs to the provider of the URL (a ``customers`` row
  of that provider, else one Partner Center read of the customer with that provider's consent).
"""
from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote

from shared.clients import ClientRegistry
from shared.errors import PermissionMissing
from shared.partner_center_errors import NotFoundError
from shared.providers import ProviderConnection
from shared.tables import TableRepository, TableStore, escape_key

from ..streams import CUSTOMERS
from .events import WebhookEvent

DEFAULT_MAX_AGE = timedelta(days=7)
# identities live in table webhookevents beside the event records, in partition
# "<provider id>|accepted", so a provider purge (by "<provider id>|" prefix) removes them too
ACCEPTED_PARTITION_SUFFIX = "|accepted"
PURGE_INTERVAL = timedelta(hours=1)


def event_identity(event: WebhookEvent) -> str:
    """A digest of what makes an event the same event (ids are case-insensitive GUIDs)."""
    text = "\n".join((event.event_name.lower(), event.resource_uri.strip().lower(),
                      event.resource_change_utc_date.strip()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AcceptedEvents(Protocol):
    def claim(self, provider_id: str, identity: str, *, at: datetime) -> bool:
        """True when the identity is new (and is now recorded); False for a repeat."""

    def release(self, provider_id: str, identity: str) -> None:
        """Forget a claim whose work could not be queued, so the redelivery is acted on."""


class TableAcceptedEvents:
    """Accepted identities as rows of ``webhookevents``; the claim is an insert, so of
    concurrent deliveries of one event exactly one wins."""

    def __init__(self, table: TableRepository, *, retention: timedelta = DEFAULT_MAX_AGE):
        self._table = table
        self._retention = retention
        self._purged_at: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def claim(self, provider_id: str, identity: str, *, at: datetime) -> bool:
        from azure.core.exceptions import ResourceExistsError

        partition = _partition(provider_id)
        self._purge_now_and_then(partition, at)
        try:
            self._table.client.create_entity({"PartitionKey": partition, "RowKey": identity, "received_at": at})
        except ResourceExistsError:
            return False
        return True

    def release(self, provider_id: str, identity: str) -> None:
        self._table.delete_entity(_partition(provider_id), identity)

    def _purge_now_and_then(self, partition: str, now: datetime) -> None:
        """Drop identities older than the retention, at most once an hour per provider and process."""
        with self._lock:
            last = self._purged_at.get(partition)
            if last is not None and now - last < PURGE_INTERVAL:
                return
            self._purged_at[partition] = now
        stale = self._table.list_entities(partition_key=partition, query="received_at lt @cutoff",
                                          parameters={"cutoff": now - self._retention}, select=["RowKey"])
        for row in list(stale):
            self._table.delete_entity(partition, row["RowKey"])


def _partition(provider_id: str) -> str:
    return escape_key(provider_id) + ACCEPTED_PARTITION_SUFFIX


class CustomerDirectory(Protocol):
    def belongs(self, provider: ProviderConnection, customer_id: str) -> bool:
        """Whether ``customer_id`` (canonical, lower case) is a customer of the provider."""


class ProviderCustomers:
    """A customer of the provider: synced already (``customers`` row), or known to Partner
    Center when asked with the provider's consent (one read)."""

    def __init__(self, tables: TableStore, clients: ClientRegistry):
        self._tables = tables
        self._clients = clients

    def belongs(self, provider: ProviderConnection, customer_id: str) -> bool:
        row = self._tables.table(CUSTOMERS.table).find_entity(CUSTOMERS.partition_key(provider.id), escape_key(customer_id))
        if row is not None:
            return True
        client = self._clients.partner_center(provider).bind()
        try:
            client.get_json(f"/customers/{quote(customer_id, safe='')}")
        except (NotFoundError, PermissionMissing):  # not this partner's customer
            return False
        return True


def is_stale(changed_at: datetime, *, now: datetime, max_age: timedelta) -> bool:
    return changed_at < now - max_age
