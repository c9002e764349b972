"""The sync engine: run a stream, diff by content hash, batch-upsert, tombstone, record the run.

Service functions used by the timer, the queue trigger and the CLI live here too, so that the
triggers stay thin (decode -> call -> return).

Guarantees:
* a row is written only when new, changed, or coming back after removal (content hash of the
  kept columns + raw JSON compared with the stored row);
* rows missing upstream are marked ``removed=True`` with ``removed_at`` and never deleted, and
  only after the whole collection was read (a failed run tombstones nothing);
* when a customer disappears, its subscriptions and agreements are tombstoned too (children
  first, so a crash in between is repaired by the next run);
* every run writes a ``syncruns`` row; ``ConsentRequired`` ends the provider's work cleanly.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from shared.call_budget import CALL_BUDGET_TABLE, SharedCallBudget
from shared.errors import ConsentRequired
from shared.logging import get_logger
from shared.partner_center import (
    DEFAULT_CALLS_PER_MINUTE,
    CallBudget,
    CallStats,
    PartnerCenterClient,
    PartnerCenterError,
    ServiceError,
    ThrottledError,
    TokenSource,
    TransportError,
)
from shared.providers import PROVIDER_ID_PATTERN, ProviderConnection
from shared.tables import MAX_BATCH_OPERATIONS, escape_key

from .streams import CUSTOMER_STREAMS, CUSTOMERS, STREAMS, Stream

log = get_logger(__name__)

SYNC_RUNS_TABLE = "syncruns"
SYNC_CUSTOMER_QUEUE = "sync-customer"

OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED = "failed"
OUTCOME_CONSENT_REQUIRED = "consent_required"
OUTCOME_RUNNING = "running"

# Failures the queue runtime should retry (redelivery may succeed); others are final.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (ThrottledError, ServiceError, TransportError)
MAX_ERROR_TEXT = 2000


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Tables(Protocol):
    def table(self, name: str) -> Any: ...


TokenSourceFactory = Callable[[Any, ProviderConnection], TokenSource]


def default_token_source(runtime: Any, provider: ProviderConnection) -> TokenSource:
    """The production token source: ``auth.tokens.token_provider_for`` (imported on use)."""
    from auth.tokens import token_provider_for  # type: ignore[import-not-found]

    return token_provider_for(runtime, provider)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    provider_id: str
    stream: str
    customer_id: str | None = None
    correlation_id: str = ""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = field(default_factory=utc_now)
    finished_at: datetime | None = None
    rows_read: int = 0
    rows_written: int = 0
    rows_removed: int = 0
    children_removed: int = 0
    rows_skipped: int = 0
    duplicates: int = 0
    calls: int = 0
    throttled_429: int = 0
    retries: int = 0
    outcome: str = OUTCOME_RUNNING
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def duration_s(self) -> float:
        end = self.finished_at or utc_now()
        return (end - self.started_at).total_seconds()

    @property
    def retryable(self) -> bool:
        return isinstance(self.exception, RETRYABLE_ERRORS)

    def to_entity(self) -> dict[str, Any]:
        # newest first within a provider's partition: reverse milliseconds, then the run id
        reverse_ms = 10**13 - int(self.started_at.timestamp() * 1000)
        entity = {
            "PartitionKey": escape_key(self.provider_id),
            "RowKey": f"{reverse_ms:013d}-{self.run_id}",
            "run_id": self.run_id,
            "provider_id": self.provider_id,
            "stream": self.stream,
            "customer_id": self.customer_id or "",
            "correlation_id": self.correlation_id,
            "started_at": self.started_at,
            "outcome": self.outcome,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_removed": self.rows_removed,
            "children_removed": self.children_removed,
            "rows_skipped": self.rows_skipped,
            "duplicates": self.duplicates,
            "calls": self.calls,
            "throttled_429": self.throttled_429,
            "retries": self.retries,
            "error": (self.error or "")[:MAX_ERROR_TEXT],
        }
        if self.finished_at is not None:
            entity["finished_at"] = self.finished_at
            entity["duration_s"] = round(self.duration_s, 3)
        return entity


# --------------------------------------------------------------------------------------------
# Running one stream
# --------------------------------------------------------------------------------------------


def _batched(rows: Iterable[dict[str, Any]], size: int = MAX_BATCH_OPERATIONS) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stored_state(table: Any, partition_key: str) -> dict[str, tuple[str | None, bool]]:
    """RowKey -> (content_hash, removed) for one partition; small per row, no payloads."""
    return {
        row["RowKey"]: (row.get("content_hash"), bool(row.get("removed")))
        for row in table.list_entities(partition_key=partition_key, select=["RowKey", "content_hash", "removed"])
    }


def tombstone_rows(table: Any, partition_key: str, row_keys: Iterable[str], *, when: datetime) -> int:
    """Merge ``removed=True`` + ``removed_at`` into rows (their content columns stay)."""
    written = 0
    marks = ({"PartitionKey": partition_key, "RowKey": rk, "removed": True, "removed_at": when} for rk in row_keys)
    for batch in _batched(marks):
        written += table.upsert_entities(batch, replace=False)
    return written


def sync_stream(
    stream: Stream,
    *,
    client: PartnerCenterClient,
    tables: Tables,
    provider_id: str,
    customer_id: str | None = None,
    result: RunResult,
    now: Callable[[], datetime] = utc_now,
) -> RunResult:
    """Read the whole collection and bring the partition in line with it (counts go to ``result``)."""
    table = tables.table(stream.table)
    partition = stream.partition_key(provider_id, customer_id)
    stored = _stored_state(table, partition)
    seen: set[str] = set()
    budget_key = customer_id if stream.parent else None
    stamp = now()

    def changed_rows() -> Iterator[dict[str, Any]]:
        for item in client.iter_items(stream.paginator(customer_id=customer_id), customer_id=budget_key):
            result.rows_read += 1
            row = stream.build_row(item, provider_id=provider_id, customer_id=customer_id)
            if row is None:
                result.rows_skipped += 1
                log.warning("%s item without a key skipped", stream.name,
                            extra={"provider_id": provider_id, "customer_id": customer_id})
                continue
            key = row["RowKey"]
            if key in seen:
                result.duplicates += 1
                continue
            seen.add(key)
            if stored.get(key) == (row["content_hash"], False):
                continue
            row["removed"] = False  # a reappearing row clears its tombstone (replace drops removed_at)
            row["updated_at"] = stamp
            yield row

    pending: list[dict[str, Any]] = []
    try:
        for row in changed_rows():
            pending.append(row)
            if len(pending) >= MAX_BATCH_OPERATIONS:
                result.rows_written += table.upsert_entities(pending, replace=True)
                pending = []
    finally:
        # keep what was read before a failure: the rows are correct, and a re-run skips them
        if pending:
            result.rows_written += table.upsert_entities(pending, replace=True)

    # only a complete read may tombstone
    gone = [key for key, (_, removed) in stored.items() if key not in seen and not removed]
    if gone and stream.name == CUSTOMERS.name:
        result.children_removed += _tombstone_children(tables, provider_id, gone, when=stamp)
    if gone:
        result.rows_removed += tombstone_rows(table, partition, gone, when=stamp)
    return result


def _tombstone_children(tables: Tables, provider_id: str, customer_row_keys: list[str], *, when: datetime) -> int:
    from shared.tables import unescape_key

    removed = 0
    for child in CUSTOMER_STREAMS:
        table = tables.table(child.table)
        for row_key in customer_row_keys:
            partition = child.partition_key(provider_id, unescape_key(row_key))
            live = [rk for rk, (_, gone) in _stored_state(table, partition).items() if not gone]
            removed += tombstone_rows(table, partition, live, when=when)
    return removed


# --------------------------------------------------------------------------------------------
# The service: providers, clients, budgets, run records
# --------------------------------------------------------------------------------------------


class InvalidMessage(ValueError):
    """A ``sync-customer`` message that can never succeed (bad JSON or fields)."""


@dataclass(frozen=True)
class CustomerMessage:
    provider_id: str
    customer_id: str
    correlation_id: str

    def to_json(self) -> dict[str, str]:
        return {"provider": self.provider_id, "customer": self.customer_id, "correlationId": self.correlation_id}


_CUSTOMER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def decode_message(body: bytes | str | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A queue message's JSON object and its correlation id (a new one when absent); every
    pcsync queue message is a small JSON object."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("message body is not UTF-8") from None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            raise InvalidMessage("message body is not JSON") from None
    if not isinstance(body, Mapping):
        raise InvalidMessage("message body must be a JSON object")
    provider = body.get("provider")
    if not isinstance(provider, str) or not PROVIDER_ID_PATTERN.match(provider):
        raise InvalidMessage("'provider' must be a provider id")
    correlation = body.get("correlationId") or str(uuid.uuid4())
    if not isinstance(correlation, str) or len(correlation) > 64:
        raise InvalidMessage("'correlationId' must be a string of at most 64 characters")
    return body, correlation


def parse_customer_message(body: bytes | str | Mapping[str, Any]) -> CustomerMessage:
    message, correlation = decode_message(body)
    customer = message.get("customer")
    if not isinstance(customer, str) or not _CUSTOMER_ID.match(customer):
        raise InvalidMessage("'customer' must be a customer tenant id")
    return CustomerMessage(message["provider"], customer, correlation)


@dataclass
class ProviderOutcome:
    provider_id: str
    outcome: str
    customers_enqueued: int = 0
    runs: list[RunResult] = field(default_factory=list)
    error: str | None = None


class SyncService:
    """Runs streams for providers. One per process (see :func:`service_for`): it keeps one
    Partner Center client, and so one call budget and one connection pool, per partner tenant.

    With ``shared_budget`` (the default for a runtime, ``PCSYNC_SHARED_BUDGET``) the partner-tenant
    budget is shared with the other worker processes through table ``callbudget``
    (:class:`~shared.call_budget.SharedCallBudget`); the per-customer budget stays in-process."""

    def __init__(
        self,
        *,
        tables: Tables,
        providers: Any,
        partner_center_url: str,
        ca_bundle: str | None = None,
        queues: Any = None,
        token_sources: TokenSourceFactory | None = None,
        runtime: Any = None,
        calls_per_minute: int = DEFAULT_CALLS_PER_MINUTE,
        customer_calls_per_minute: int | None = None,
        shared_budget: bool = False,
        client_options: Mapping[str, Any] | None = None,
    ):
        self.tables = tables
        self.providers = providers
        self.queues = queues
        self.partner_center_url = partner_center_url
        self.ca_bundle = ca_bundle
        self.runtime = runtime
        self._token_sources = token_sources
        self.calls_per_minute = calls_per_minute
        self.customer_calls_per_minute = customer_calls_per_minute
        self.shared_budget = shared_budget
        self.client_options = dict(client_options or {})
        self._clients: dict[str, tuple[str, PartnerCenterClient]] = {}
        self._budgets: dict[str, CallBudget | SharedCallBudget] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_runtime(cls, runtime: Any, **overrides: Any) -> "SyncService":
        settings = runtime.settings
        options: dict[str, Any] = {
            "tables": runtime.tables,
            "providers": runtime.providers,
            "queues": runtime.queues,
            "partner_center_url": settings.partner_center_url,
            "ca_bundle": settings.ca_bundle,
            "runtime": runtime,
            "calls_per_minute": settings.calls_per_minute,
            "customer_calls_per_minute": settings.customer_calls_per_minute,
            "shared_budget": settings.shared_budget,
        }
        options.update(overrides)
        return cls(**options)

    # -- clients and budgets -----------------------------------------------------------------

    def budget_for(self, tenant_id: str) -> CallBudget | SharedCallBudget:
        """The tenant's call budget, one per process: in-process only, or (``shared_budget``)
        the in-process one plus leases from table ``callbudget`` shared with other processes."""
        with self._lock:
            budget = self._budgets.get(tenant_id)
            if budget is None:
                local = CallBudget(partner_limit=self.calls_per_minute, customer_limit=self.customer_calls_per_minute)
                if self.shared_budget:
                    tables = self.tables
                    # the table is created on first lease, under the budget's storage-failure fallback
                    budget = SharedCallBudget(lambda: tables.table(CALL_BUDGET_TABLE).client, tenant_id.lower(),
                                              limit=self.calls_per_minute, local=local)
                else:
                    budget = local
                self._budgets[tenant_id] = budget
            return budget

    def token_source_for(self, provider: ProviderConnection) -> TokenSource:
        """The provider's token source (auth's TokenProvider unless the service was given another)."""
        factory = self._token_sources or default_token_source
        return factory(self.runtime, provider)

    def client_for(self, provider: ProviderConnection) -> PartnerCenterClient:
        """The provider's client (built once); bind it per run for correlation id and counters."""
        with self._lock:
            cached = self._clients.get(provider.id)
            if cached and cached[0] == provider.tenant_id:
                return cached[1]
        token_source = self.token_source_for(provider)
        client = PartnerCenterClient(
            self.partner_center_url, token_source, budget=self.budget_for(provider.tenant_id),
            ca_bundle=self.ca_bundle, **self.client_options,
        )
        with self._lock:
            self._clients[provider.id] = (provider.tenant_id, client)
        return client

    def forget_client(self, provider_id: str) -> None:
        with self._lock:
            cached = self._clients.pop(provider_id, None)
        if cached:
            cached[1].close()

    # -- one recorded run --------------------------------------------------------------------

    def _record(self, result: RunResult) -> None:
        try:
            self.tables.table(SYNC_RUNS_TABLE).upsert_entity(result.to_entity(), replace=True)
        except Exception:  # the run record must never hide the run's own outcome
            log.exception("could not write the syncruns row", extra={"run_id": result.run_id})

    def run_stream(
        self,
        stream: Stream,
        provider: ProviderConnection,
        *,
        customer_id: str | None = None,
        correlation_id: str | None = None,
        client: PartnerCenterClient | None = None,
    ) -> RunResult:
        """Run one stream for a provider (and customer), recording it in ``syncruns``.

        Never raises for Partner Center or consent failures: they become the run's outcome
        (``result.exception`` keeps the error for callers that decide on retries).
        """
        correlation_id = correlation_id or str(uuid.uuid4())
        result = RunResult(provider.id, stream.name, customer_id, correlation_id)
        stats = CallStats()  # the syncruns row is written once, when the run ends
        try:
            bound = (client or self.client_for(provider)).bind(correlation_id=correlation_id, stats=stats)
            sync_stream(stream, client=bound, tables=self.tables, provider_id=provider.id,
                        customer_id=customer_id, result=result)
            result.outcome = OUTCOME_SUCCEEDED
        except ConsentRequired as exc:
            result.outcome, result.error, result.exception = OUTCOME_CONSENT_REQUIRED, str(exc), exc
            self.forget_client(provider.id)
            log.warning("provider %s needs consent again (%s); its sync stops", provider.id, exc.status,
                        extra={"provider_id": provider.id})
        except PartnerCenterError as exc:
            result.outcome, result.error, result.exception = OUTCOME_FAILED, str(exc), exc
            log.warning("%s sync failed for %s%s: %s", stream.name, provider.id,
                        f"/{customer_id}" if customer_id else "", exc,
                        extra={"provider_id": provider.id, "customer_id": customer_id, "stream": stream.name})
        except Exception as exc:  # record, then let the runtime see it
            result.outcome, result.error, result.exception = OUTCOME_FAILED, f"{type(exc).__name__}: {exc}", exc
            result.finished_at = utc_now()
            self._finish(result, stats)
            raise
        self._finish(result, stats)
        return result

    def _finish(self, result: RunResult, stats: CallStats) -> None:
        result.calls, result.throttled_429, result.retries = stats.calls, stats.throttled, stats.retries
        result.finished_at = result.finished_at or utc_now()
        self._record(result)
        log.info(
            "sync %s %s%s: %s read=%d written=%d removed=%d calls=%d 429s=%d in %.1fs",
            result.stream, result.provider_id, f"/{result.customer_id}" if result.customer_id else "",
            result.outcome, result.rows_read, result.rows_written, result.rows_removed, result.calls,
            result.throttled_429, result.duration_s,
            extra={"provider_id": result.provider_id, "stream": result.stream, "run_id": result.run_id},
        )

    # -- flows -------------------------------------------------------------------------------

    def live_customer_ids(self, provider_id: str) -> Iterator[str]:
        table = self.tables.table(CUSTOMERS.table)
        for row in table.list_entities(partition_key=CUSTOMERS.partition_key(provider_id), select=["id", "removed"]):
            if not row.get("removed") and row.get("id"):
                yield row["id"]

    def sync_customer(
        self,
        provider: ProviderConnection,
        customer_id: str,
        *,
        correlation_id: str | None = None,
        streams: Iterable[Stream] = CUSTOMER_STREAMS,
        client: PartnerCenterClient | None = None,
    ) -> list[RunResult]:
        """Subscriptions and agreements of one customer; stops at consent failure."""
        results = []
        for stream in streams:
            result = self.run_stream(stream, provider, customer_id=customer_id,
                                     correlation_id=correlation_id, client=client)
            results.append(result)
            if result.outcome == OUTCOME_CONSENT_REQUIRED:
                break
        return results

    def sync_provider_customers(self, provider: ProviderConnection, *, correlation_id: str | None = None,
                                enqueue: bool = True) -> ProviderOutcome:
        """Timer work for one provider: customers, then one ``sync-customer`` message each."""
        correlation_id = correlation_id or str(uuid.uuid4())
        result = self.run_stream(CUSTOMERS, provider, correlation_id=correlation_id)
        outcome = ProviderOutcome(provider.id, result.outcome, runs=[result], error=result.error)
        if result.outcome != OUTCOME_SUCCEEDED or not enqueue:
            return outcome
        for customer_id in self.live_customer_ids(provider.id):
            message = CustomerMessage(provider.id, customer_id, correlation_id)
            self.queues.send_json(SYNC_CUSTOMER_QUEUE, message.to_json())
            outcome.customers_enqueued += 1
        return outcome

    def sync_all_providers(self, *, correlation_id: str | None = None) -> list[ProviderOutcome]:
        """The customers timer: every enabled provider with active consent."""
        return for_each_active_provider(
            self.providers, lambda p: self.sync_provider_customers(p, correlation_id=correlation_id),
            ProviderOutcome, "customers sync",
        )

    def sync_provider_now(
        self,
        provider: ProviderConnection,
        *,
        streams: Iterable[Stream] | None = None,
        customer_id: str | None = None,
        workers: int = 4,
        correlation_id: str | None = None,
        on_fan_out: Callable[[int], None] | None = None,
        on_customer_done: Callable[[str, list[RunResult]], None] | None = None,
    ) -> list[RunResult]:
        """The timer + queue flow in one process (CLI, tests, benchmarks): customers, then each
        live customer's streams on a bounded thread pool instead of the queue. A consent failure
        stops the remaining work; ``streams``/``customer_id`` narrow it down."""
        from concurrent.futures import ThreadPoolExecutor

        correlation_id = correlation_id or str(uuid.uuid4())
        wanted = tuple(streams) if streams is not None else (CUSTOMERS, *CUSTOMER_STREAMS)
        child_streams = tuple(s for s in wanted if s.parent == CUSTOMERS.name)
        results: list[RunResult] = []
        if customer_id is None and CUSTOMERS in wanted:
            first = self.run_stream(CUSTOMERS, provider, correlation_id=correlation_id)
            results.append(first)
            if first.outcome != OUTCOME_SUCCEEDED:
                return results
        if not child_streams:
            return results
        customers = [customer_id] if customer_id else list(self.live_customer_ids(provider.id))
        if on_fan_out:
            on_fan_out(len(customers))
        stop = threading.Event()

        def one(cid: str) -> list[RunResult]:
            if stop.is_set():
                return []
            runs = self.sync_customer(provider, cid, correlation_id=correlation_id, streams=child_streams)
            if any(r.outcome == OUTCOME_CONSENT_REQUIRED for r in runs):
                stop.set()
            if on_customer_done:
                on_customer_done(cid, runs)
            return runs

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pcsync-sync") as pool:
            for runs in pool.map(one, customers):
                results.extend(runs)
        return results

    def handle_customer_message(self, message: CustomerMessage) -> list[RunResult]:
        """Queue work: returns the runs; raises only when a redelivery could succeed."""
        provider = self.providers.find_provider(message.provider_id)
        if provider is None or not provider.enabled or provider.consent_status != "active":
            state = "missing" if provider is None else ("disabled" if not provider.enabled else f"consent {provider.consent_status}")
            log.info("sync-customer for %s/%s dropped: provider %s", message.provider_id, message.customer_id, state,
                     extra={"provider_id": message.provider_id, "customer_id": message.customer_id})
            return []
        results = self.sync_customer(provider, message.customer_id, correlation_id=message.correlation_id)
        retryable = [r for r in results if r.retryable]
        if retryable:
            raise retryable[0].exception  # type: ignore[misc]
        return results


# --------------------------------------------------------------------------------------------
# Process-wide service (one per runtime) and the entry points the triggers call
# --------------------------------------------------------------------------------------------

_service_slot: tuple[Any, SyncService] | None = None
_slot_lock = threading.Lock()


def service_for(runtime: Any) -> SyncService:
    """The SyncService for this runtime, built on first use and kept for the process so that
    clients, connection pools and call budgets outlive one invocation."""
    global _service_slot
    with _slot_lock:
        if _service_slot is None or _service_slot[0] is not runtime:
            _service_slot = (runtime, SyncService.for_runtime(runtime))
        return _service_slot[1]


def run_customers_timer(runtime: Any) -> list[ProviderOutcome]:
    return service_for(runtime).sync_all_providers()


def run_customer_message(runtime: Any, body: bytes | str) -> list[RunResult]:
    """Raises :class:`InvalidMessage` for bad input; retryable Partner Center errors propagate."""
    message = parse_customer_message(body)
    return service_for(runtime).handle_customer_message(message)


def for_each_active_provider(providers: Any, work: Callable[[ProviderConnection], Any],
                             outcome_type: Callable[..., Any], what: str) -> list[Any]:
    """Run a timer's work for every enabled provider with active consent. A provider without
    consent is skipped and one that fails is recorded, so neither stops the others."""
    outcomes = []
    for provider in providers.list_providers(enabled_only=True):
        if provider.consent_status != "active":
            log.info("provider %s skipped: consent is %s", provider.id, provider.consent_status,
                     extra={"provider_id": provider.id})
            outcomes.append(outcome_type(provider.id, "skipped", error=f"consent {provider.consent_status}"))
            continue
        try:
            outcomes.append(work(provider))
        except Exception as exc:  # noqa: BLE001 - isolate providers from each other
            log.exception("%s crashed for provider %s", what, provider.id, extra={"provider_id": provider.id})
            outcomes.append(outcome_type(provider.id, OUTCOME_FAILED, error=f"{type(exc).__name__}: {exc}"))
    return outcomes


def stream_names() -> list[str]:
    return list(STREAMS)


def summarize(results: Iterable[RunResult]) -> dict[str, Any]:
    totals: dict[str, Any] = {"runs": 0, "calls": 0, "rows_read": 0, "rows_written": 0, "rows_removed": 0,
                              "children_removed": 0, "throttled_429": 0, "retries": 0, "failed": 0}
    for r in results:
        totals["runs"] += 1
        for key in ("calls", "rows_read", "rows_written", "rows_removed", "children_removed", "throttled_429", "retries"):
            totals[key] += getattr(r, key)
        totals["failed"] += r.outcome != OUTCOME_SUCCEEDED
    return totals


__all__ = [
    "InvalidMessage", "CustomerMessage", "ProviderOutcome", "for_each_active_provider", "RunResult", "SyncService", "parse_customer_message",
    "run_customer_message", "run_customers_timer", "service_for", "summarize", "sync_stream", "tombstone_rows",
]
