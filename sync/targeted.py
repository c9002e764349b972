"""Targeted work: re-read what changed of one customer (its row, its subscriptions, its
agreements), from an activity-log record, a webhook event or the full sweep's fan-out.

The ``sync-customer`` message carries it: ``{"provider", "customer", "correlationId"}`` as before
(the sweep's message: subscriptions and agreements), plus optionally ``resources`` (what to
re-read), ``mode`` (``delta`` or ``full``), ``sweep`` (the full sweep whose drift report it adds
to) and ``source`` (``audit``, ``webhook``, ``sweep``).

The customer row is re-read with ``GET /customers/{id}`` and kept in the shape the customers
list returns (:func:`customer_summary`), so that a delta and the full sweep store the same row
(the same content hash) and the sweep rewrites nothing a delta already stored. A 404 means the
customer is gone: its row and its children are tombstoned, as the full sweep would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote

from shared.partner_center import resource_problem
from shared.partner_center_errors import NotFoundError
from shared.tables import escape_key

from .activity import CHILD_RESOURCES, Resource
from .engine import CustomerMessage, InvalidMessage, _tombstone_children, decode_message
from .rows import tombstone_rows, write_row_if_changed
from .runs import RunOutcome, RunResult, SyncMode
from .streams import AGREEMENTS, CUSTOMERS, SUBSCRIPTIONS, Stream

SOURCES = ("audit", "webhook", "sweep", "cli")
RESOURCE_STREAMS: dict[Resource, Stream] = {Resource.SUBSCRIPTIONS: SUBSCRIPTIONS, Resource.AGREEMENTS: AGREEMENTS}
# the keys the customers list gives each item (partner-center-api.md §4.2, customers-list.json)
SUMMARY_KEYS = ("id", "companyProfile", "relationshipToPartner", "associatedPartnerId", "links", "attributes")
SUMMARY_PROFILE_KEYS = ("tenantId", "domain", "companyName", "attributes")


@dataclass(frozen=True)
class TargetedMessage:
    provider_id: str
    customer_id: str
    correlation_id: str
    resources: frozenset[Resource] = CHILD_RESOURCES
    mode: SyncMode = SyncMode.FULL
    sweep_id: str | None = None
    source: str = "sweep"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {**CustomerMessage(self.provider_id, self.customer_id, self.correlation_id).to_json(),
                                "resources": sorted(self.resources), "mode": self.mode.value, "source": self.source}
        if self.sweep_id:
            body["sweep"] = self.sweep_id
        return body

    @classmethod
    def parse(cls, body: bytes | str | Mapping[str, Any]) -> "TargetedMessage":
        base = CustomerMessage.parse(body)
        message, _ = decode_message(body)
        raw = message.get("resources")
        try:
            resources = CHILD_RESOURCES if raw is None else frozenset(Resource(r) for r in raw)
            mode = SyncMode(message.get("mode") or SyncMode.FULL)
        except (TypeError, ValueError):
            raise InvalidMessage(f"'resources' must be a list of {', '.join(Resource)}; 'mode' delta or full") from None
        sweep, source = message.get("sweep"), message.get("source") or "sweep"
        if not resources or (sweep is not None and (not isinstance(sweep, str) or len(sweep) > 64)) \
                or source not in SOURCES:
            raise InvalidMessage("'resources' must not be empty, 'sweep' a sweep id, 'source' one of "
                                 f"{', '.join(SOURCES)}")
        return cls(base.provider_id, base.customer_id, base.correlation_id, resources, mode, sweep, source)


def parse_targeted_message(body: bytes | str | Mapping[str, Any]) -> TargetedMessage:
    return TargetedMessage.parse(body)


def customer_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ``GET /customers/{id}`` answer cut to the customers list's item shape."""
    summary = {k: v for k, v in body.items() if k in SUMMARY_KEYS}
    profile = summary.get("companyProfile")
    if isinstance(profile, Mapping):
        summary["companyProfile"] = {k: v for k, v in profile.items() if k in SUMMARY_PROFILE_KEYS}
    links = summary.get("links")
    if isinstance(links, Mapping):
        summary["links"] = {k: v for k, v in links.items() if k == "self"}
    return summary


def refresh_customer_row(stream: Stream, *, client: Any, tables: Any, provider_id: str, customer_id: str | None,
                         result: RunResult) -> RunResult:
    """The ``work`` of a one-customer ``customers`` run (see ``SyncService.run_stream``)."""
    assert customer_id is not None
    table = tables.table(CUSTOMERS.table)
    try:
        body = client.get_json(f"/customers/{quote(customer_id, safe='')}", customer_id=customer_id,
                               expect=resource_problem("Customer", customer_id))
    except NotFoundError:
        return _customer_gone(tables, provider_id, customer_id, result)
    result.rows_read += 1
    row = CUSTOMERS.build_row(customer_summary(body), provider_id=provider_id)
    stamp = result.started_at
    if row is not None and write_row_if_changed(table, row, stamp=stamp):
        result.rows_written += 1
    return result


def _customer_gone(tables: Any, provider_id: str, customer_id: str, result: RunResult) -> RunResult:
    table, partition, key = tables.table(CUSTOMERS.table), CUSTOMERS.partition_key(provider_id), escape_key(customer_id)
    stored = table.find_entity(partition, key)
    if stored is None or stored.get("removed"):
        return result
    result.children_removed += _tombstone_children(tables, provider_id, [key], when=result.started_at)
    result.rows_removed += tombstone_rows(table, partition, [key], when=result.started_at)
    return result


def streams_for(resources: frozenset[Resource]) -> tuple[Stream, ...]:
    return tuple(RESOURCE_STREAMS[r] for r in (Resource.SUBSCRIPTIONS, Resource.AGREEMENTS) if r in resources)


def refresh_customer(sync: Any, provider: Any, customer_id: str, resources: frozenset[Resource], *,
                     mode: SyncMode, correlation_id: str) -> list[RunResult]:
    """The re-reads one customer needs, each a recorded run; a customer found gone is not read further."""
    results: list[RunResult] = []
    if Resource.CUSTOMER in resources:
        first = sync.run_stream(CUSTOMERS, provider, customer_id=customer_id, correlation_id=correlation_id,
                                mode=mode, work=refresh_customer_row)
        results.append(first)
        if first.rows_removed or first.outcome != RunOutcome.SUCCEEDED:
            return results
    streams = streams_for(resources)
    if streams:
        results.extend(sync.sync_customer(provider, customer_id, correlation_id=correlation_id, streams=streams,
                                          mode=mode))
    return results


__all__ = ["RESOURCE_STREAMS", "TargetedMessage", "customer_summary", "parse_targeted_message", "refresh_customer",
           "refresh_customer_row"]
