"""Readers of the synced tables for the operator's CLI: one page at a time, never a whole table.

A page is read with the SDK's paged query (a ``select`` and the partition filter pushed to the
service, ``results_per_page`` near the limit) and stops as soon as it holds ``limit`` rows. The
continuation is keyset paging, not the SDK's own token: the token names the last row returned
(PartitionKey, RowKey) and the next page asks for rows after it. The SDK's token points at the
start of the service's next page, so a page cut short by a filter applied here (tombstones, an
``abandoned`` run) could not resume in the middle; a keyset can, and Table Storage returns rows in
(PartitionKey, RowKey) order, which makes "after" well defined.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable, Mapping

from shared.clock import parse_iso, utc_now
from shared.errors import InvalidInput, NotFound
from shared.tables import escape_key

from .resources import canonical_id
from .runs import SYNC_RUNS_TABLE, RunOutcome, run_outcome
from .streams import SUBSCRIPTIONS, Stream

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000  # the service's own page size cap
KEY_COLUMNS = ["PartitionKey", "RowKey"]
# '|' separates the provider from the customer in child partitions; '}' is the next character,
# so [P|, P}) is every customer partition of provider P and nothing else
CHILD_SEPARATOR, AFTER_SEPARATOR = "|", "}"


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_token: str | None  # None: this was the last page


@dataclass
class Query:
    """An OData filter with its parameters, built a clause at a time (``@name`` between spaces:
    the SDK substitutes parameters only there)."""

    clauses: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    fixed_partition: bool = False  # one PartitionKey: the keyset continues on RowKey alone

    def where(self, clause: str, **parameters: Any) -> "Query":
        self.clauses.append(f"( {clause} )")
        self.parameters.update(parameters)
        return self

    def equal(self, column: str, value: Any) -> "Query":
        name = f"p{len(self.parameters)}"
        return self.where(f"{column} eq @{name}", **{name: value})

    def partition(self, partition_key: str) -> "Query":
        self.fixed_partition = True
        return self.equal("PartitionKey", partition_key)

    def partition_prefix(self, prefix: str) -> "Query":
        return self.where("PartitionKey ge @lo and PartitionKey lt @hi", lo=prefix,
                          hi=prefix[:-1] + chr(ord(prefix[-1]) + 1))

    def after(self, token: str | None) -> "Query":
        if not token:
            return self
        pk, rk = decode_token(token)
        if self.fixed_partition:
            return self.where("RowKey gt @after_rk", after_rk=rk)
        return self.where("PartitionKey gt @after_pk or ( PartitionKey eq @after_pk and RowKey gt @after_rk )",
                          after_pk=pk, after_rk=rk)

    @property
    def text(self) -> str:
        return " and ".join(self.clauses)


def encode_token(row: Mapping[str, Any]) -> str:
    raw = json.dumps([row["PartitionKey"], row["RowKey"]], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str) -> tuple[str, str]:
    try:
        pk, rk = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(pk, str) and isinstance(rk, str):
            return pk, rk
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidInput(f"--page-token {token[:40]!r} is not a token this command printed")


def read_page(table: Any, query: Query, *, select: list[str] | None, limit: int, token: str | None = None,
              keep: Callable[[dict[str, Any]], bool] = lambda row: True) -> Page:
    """Up to ``limit`` rows (1..MAX_LIMIT) that match ``query`` and ``keep``, after ``token``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"--limit must be 1..{MAX_LIMIT}, not {limit}")
    query.after(token)
    kwargs: dict[str, Any] = {"results_per_page": min(MAX_LIMIT, limit + 1)}
    if select:
        kwargs["select"] = sorted({*KEY_COLUMNS, *select})
    rows: list[dict[str, Any]] = []
    for entity in table.client.query_entities(query.text, parameters=query.parameters, **kwargs):
        row = dict(entity)
        if not keep(row):
            continue
        if len(rows) == limit:  # one more exists: there is a next page
            return Page(rows, encode_token(rows[-1]))
        rows.append(row)
    return Page(rows, None)


def read_synced(table: Any, query: Query, *, select: list[str] | None, limit: int, token: str | None,
                include_removed: bool) -> Page:
    """A page of a synced table: tombstones (``removed``, kept for history) left out unless asked."""
    return read_page(table, query, select=[*select, "removed"] if select else None, limit=limit, token=token,
                     keep=lambda row: include_removed or not row.get("removed"))


def parse_day(value: str) -> str:
    """A ``YYYY-MM-DD`` argument, as the string compared with stored ISO dates."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidInput(f"{value!r} is not a date (YYYY-MM-DD)") from None


_AGO = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or timestamp, or an age such as ``90m``, ``24h``, ``7d``."""
    match = _AGO.match(value.strip())
    if match:
        return (now or utc_now()) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    moment = parse_iso(value)
    if moment is None:
        raise InvalidInput(f"--since {value!r} is not an ISO date or time, nor an age like 24h or 7d")
    return moment


def find_one(table: Any, query: Query, what: str, *, include_removed: bool) -> dict[str, Any]:
    """The one row ``query`` names, or :class:`NotFound` (also for a tombstone, unless asked)."""
    page = read_page(table, query, select=None, limit=1)
    if not page.rows:
        raise NotFound(f"{what} not found")
    row = page.rows[0]
    if row.get("removed") and not include_removed:
        raise NotFound(f"{what} was removed upstream; --include-removed shows it")
    return row


# -- the synced tables ---------------------------------------------------------------------------


def provider_rows_page(tables: Any, stream: Stream, provider_id: str, *, limit: int = DEFAULT_LIMIT,
                       token: str | None = None, include_removed: bool = False,
                       select: list[str] | None = None) -> Page:
    """A provider-level stream's rows (customers, invoices: one partition per provider), in key order."""
    query = Query().partition(stream.partition_key(provider_id))
    return read_synced(tables.table(stream.table), query, select=select, limit=limit, token=token,
                       include_removed=include_removed)


def get_provider_row(tables: Any, stream: Stream, provider_id: str, key: str, *,
                     include_removed: bool = False) -> dict[str, Any]:
    """One row of a provider-level stream by its id, in the canonical form the sync stores
    (customer ids lower case); an id of the wrong shape is refused before any read."""
    row_key = escape_key(stream.item_key({"id": key.strip()}) or "")
    query = Query().partition(stream.partition_key(provider_id)).equal("RowKey", row_key)
    return find_one(tables.table(stream.table), query, f"{stream.name[:-1]} {key} of provider {provider_id}",
                    include_removed=include_removed)


@dataclass(frozen=True)
class SubscriptionFilter:
    customer_id: str | None = None
    status: str | None = None
    nce: bool | None = None  # True: new commerce only; False: legacy only
    term_end_before: str | None = None  # YYYY-MM-DD


def _subscriptions_query(provider_id: str, customer_id: str | None) -> Query:
    if customer_id:
        return Query().partition(SUBSCRIPTIONS.partition_key(provider_id, customer_id))
    return Query().partition_prefix(escape_key(provider_id) + CHILD_SEPARATOR)


def subscriptions_page(tables: Any, provider_id: str, where: SubscriptionFilter = SubscriptionFilter(), *,
                       limit: int = DEFAULT_LIMIT, token: str | None = None, include_removed: bool = False,
                       select: list[str] | None = None) -> Page:
    """The provider's subscriptions (one customer's with ``customer_id``). Every filter runs in the
    service: ``status`` as stored (lower case), ``isNce``, and ``commitmentEndDate`` compared as
    an ISO string, which orders like the dates it spells (rows without one never match)."""
    query = _subscriptions_query(provider_id, where.customer_id)
    if where.status:
        query.equal("status", where.status.strip().lower())
    if where.nce is not None:
        query.equal("isNce", where.nce)
    if where.term_end_before:
        query.where("commitmentEndDate lt @term_end", term_end=parse_day(where.term_end_before))
    return read_synced(tables.table(SUBSCRIPTIONS.table), query, select=select, limit=limit, token=token,
                       include_removed=include_removed)


def get_subscription(tables: Any, provider_id: str, subscription_id: str, *, customer_id: str | None = None,
                     include_removed: bool = False) -> dict[str, Any]:
    """One subscription by id: read directly with its customer, else looked up (in the service)
    across the provider's customer partitions."""
    query = _subscriptions_query(provider_id, customer_id)
    query.where("RowKey eq @sub or RowKey eq @sub_lower", sub=escape_key(subscription_id.strip()),
                sub_lower=escape_key(canonical_id(subscription_id)))
    return find_one(tables.table(SUBSCRIPTIONS.table), query, f"subscription {subscription_id} of provider {provider_id}",
                    include_removed=include_removed)


@dataclass(frozen=True)
class RunFilter:
    provider_id: str | None = None  # None: every provider
    stream: str | None = None
    outcome: str | None = None  # a RunOutcome value, "abandoned" included
    since: datetime | None = None


def since_row_key(since: datetime) -> str:
    """RowKeys are ``<10**13 - started ms, 13 digits>-<run id>``: a run started at or after
    ``since`` has a RowKey below this bound."""
    return f"{10**13 - int(since.timestamp() * 1000) + 1:013d}"


def _run_keep(outcome: RunOutcome | None, now: datetime) -> Callable[[dict[str, Any]], bool]:
    """``running`` and ``abandoned`` are both stored as running: told apart by the start time."""
    def keep(row: dict[str, Any]) -> bool:
        row["outcome"] = run_outcome(row, now=now).value
        return outcome is None or row["outcome"] == outcome.value
    return keep


def runs_page(tables: Any, where: RunFilter = RunFilter(), *, limit: int = DEFAULT_LIMIT, token: str | None = None,
              select: list[str] | None = None, now: datetime | None = None) -> Page:
    """``syncruns`` rows, newest first within a provider, ``outcome`` as it stands (abandoned
    for a row still running past the function timeout)."""
    query = Query()
    if where.provider_id:
        query.partition(escape_key(where.provider_id))
    if where.stream:
        query.equal("stream", where.stream)
    outcome = RunOutcome(where.outcome) if where.outcome else None
    if outcome is not None:
        stored = RunOutcome.RUNNING if outcome is RunOutcome.ABANDONED else outcome
        query.equal("outcome", stored.value)
    if where.since is not None:
        query.where("RowKey lt @since", since=since_row_key(where.since))
    if select:
        select = [*select, "outcome", "started_at"]
    return read_page(tables.table(SYNC_RUNS_TABLE), query, select=select, limit=limit, token=token,
                     keep=_run_keep(outcome, now or utc_now()))


def get_run(tables: Any, provider_id: str, run_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    query = Query().partition(escape_key(provider_id)).equal("run_id", run_id.strip())
    page = read_page(tables.table(SYNC_RUNS_TABLE), query, select=None, limit=1, keep=_run_keep(None, now or utc_now()))
    if not page.rows:
        raise NotFound(f"run {run_id} of provider {provider_id} not found")
    return page.rows[0]


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "Query", "RunFilter", "SubscriptionFilter", "decode_token",
           "encode_token", "get_provider_row", "get_run", "get_subscription", "parse_since", "provider_rows_page",
           "read_page", "runs_page", "subscriptions_page"]
