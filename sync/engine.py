"""The sync engine: run a stream for a provider (or one of its customers) and fan out.

Service functions used by the timer, the queue trigger and the CLI live here too, so that the
triggers stay thin (decode -> call -> return).

Guarantees (the row rules themselves are in :mod:`sync.rows`):
* a row is written only when new, changed, or coming back after removal (content hash of the
  kept columns + raw JSON compared with the stored row);
* rows missing upstream are marked ``removed=True`` with ``removed_at`` and never deleted, and
  only after the whole collection was read (a failed run tombstones nothing);
* when a customer disappears, its subscriptions and agreements are tombstoned too (children
  first, so a crash in between is repaired by the next run);
* every run writes a ``syncruns`` row (:mod:`sync.runs`) when it starts and finishes it when it
  ends; ``ConsentRequired`` ends the provider's work cleanly, except that an App+User-only stream
  (agreements) whose token is unavailable (consent lost, MFA or Conditional Access refusal) ends
  ``degraded`` alone: its rows stay as they were and the app-only streams go on;
* ids are canonical (lower case) wherever they enter: the ``sync-customer`` message, a run's
  customer id, and the ids read from Partner Center that become keys; an id that is not a GUID
  never goes into a path (the item is skipped and named in the run's row, a run for it fails);
* a row the table refuses (e.g. too large even after fitting) is skipped alone and named in
  the run's row; the rest of its batch is stored.
"""
from __future__ import annotations

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

from shared import telemetry
from shared.clock import utc_now
from shared.clients import ClientRegistry
from shared.errors import ConsentRequired, InvalidInput, TokenRefused, Unavailable, UpstreamRefused
from shared.jsonutil import JsonRejected, get_path, parse_json_text
from shared.logging import get_logger
from shared.partner_center import PartnerCenterClient
from shared.partner_center_errors import PartnerCenterError
from shared.provider_ids import PROVIDER_ID_PATTERN
from shared.providers import ProviderConnection
from shared.queues import MAX_MESSAGE_BYTES
from shared.tables import escape_key, unescape_key
from shared.transport import CallStats

from .names import SYNC_CUSTOMER_QUEUE
from .resources import GUID_PATTERN, InvalidId, canonical_id
from .rows import RowWriter, StoredByKey, live_row_keys, tombstone_rows
# SYNC_RUNS_TABLE and summarize are re-exported: callers of the engine (demo, tests) import them from here
from .runs import SYNC_RUNS_TABLE, RunOutcome, RunResult, SyncMode, Tables, TimerOutcome, record_run, summarize
from .streams import CUSTOMER_STREAMS, CUSTOMERS, Stream

log = get_logger(__name__)


# --------------------------------------------------------------------------------------------
# Running one stream
# --------------------------------------------------------------------------------------------


def _carried_values(tables: Tables, stream: Stream, partition: str) -> dict[str, dict[str, Any]]:
    """The columns another table keeps for this partition's rows, by RowKey (see ``Stream.carried``)."""
    if stream.carried is None:
        return {}
    columns = stream.carried.columns
    kept = tables.table(stream.carried.table).list_entities(partition_key=partition, select=["RowKey", *columns])
    return {row["RowKey"]: {c: row[c] for c in columns if row.get(c) is not None} for row in kept}


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
    stored = StoredByKey(table, partition)
    writer = RowWriter(table, partition, stored, stamp=now(),
                       on_rejected=lambda row, reason: result.skip(row.get("id") or row["RowKey"], reason))
    items = client.iter_items(stream.paginator(parent_id=customer_id),
                              customer_id=customer_id if stream.per_customer else None,
                              exact_numbers=stream.exact_numbers)

    carried = _carried_values(tables, stream, partition)

    def rows() -> Iterator[dict[str, Any]]:
        for item in items:
            result.rows_read += 1
            try:
                row = stream.build_row(item, provider_id=provider_id, customer_id=customer_id)
            except InvalidId as exc:
                result.skip(str(get_path(item, "id")), str(exc))
                log.warning("%s item skipped: %s", stream.name, exc,
                            extra={"provider_id": provider_id, "customer_id": customer_id})
                continue
            if row is None:
                result.rows_skipped += 1
                log.warning("%s item without a key skipped", stream.name,
                            extra={"provider_id": provider_id, "customer_id": customer_id})
                continue
            row.update(carried.get(row["RowKey"], {}))  # after the content hash: upstream decides a write
            yield row

    try:
        writer.write(rows())
    finally:
        result.rows_written += writer.counts.written
        result.duplicates += writer.counts.duplicates

    # only a complete read may tombstone
    gone = list(stored.gone())
    if gone and stream is CUSTOMERS:
        result.children_removed += _tombstone_children(tables, provider_id, gone, when=writer.stamp)
    result.rows_removed += writer.tombstone(gone)
    return result


def _tombstone_children(tables: Tables, provider_id: str, customer_row_keys: list[str], *, when: datetime) -> int:
    removed = 0
    for child in CUSTOMER_STREAMS:
        table = tables.table(child.table)
        for row_key in customer_row_keys:
            # the children's partition exactly as stored: a row kept under a non-canonical (upper
            # case) id by an older version must not lead to the live canonical partition
            partition = escape_key(f"{provider_id}|{unescape_key(row_key)}")
            removed += tombstone_rows(table, partition, list(live_row_keys(table, partition)), when=when)
    return removed


# --------------------------------------------------------------------------------------------
# Queue messages
# --------------------------------------------------------------------------------------------


class InvalidMessage(InvalidInput, ValueError):
    """A queue message that can never succeed (bad JSON or fields)."""


@dataclass(frozen=True)
class ItemMessage:
    """A queue message naming one item of a provider: ``{"provider", <item_field>, "correlationId"}``."""

    item_field: ClassVar[str]
    item_id_pattern: ClassVar[re.Pattern[str]]
    item_problem: ClassVar[str]  # what InvalidMessage says when the item id is not valid
    canonical: ClassVar[Callable[[str], str]] = staticmethod(str.strip)  # the id's one form

    provider_id: str
    item_id: str
    correlation_id: str

    def to_json(self) -> dict[str, str]:
        return {"provider": self.provider_id, self.item_field: self.item_id, "correlationId": self.correlation_id}

    @classmethod
    def parse(cls, body: bytes | str | Mapping[str, Any]) -> Any:
        message, correlation = decode_message(body)
        item = message.get(cls.item_field)
        item = cls.canonical(item) if isinstance(item, str) else None
        if item is None or not cls.item_id_pattern.match(item):
            raise InvalidMessage(cls.item_problem)
        return cls(message["provider"], item, correlation)


@dataclass(frozen=True)
class CustomerMessage(ItemMessage):
    item_field = "customer"
    item_id_pattern = GUID_PATTERN
    item_problem = "'customer' must be a customer tenant id (a GUID)"
    canonical = staticmethod(canonical_id)  # an upper-case id must reach the partition the full sync keeps
    customer_id = property(lambda self: self.item_id)


def decode_message(body: bytes | str | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A queue message's JSON object and its correlation id (a new one when absent); every
    pcsync queue message is a small JSON object."""
    if not isinstance(body, Mapping):
        try:
            body = parse_json_text(body, max_bytes=MAX_MESSAGE_BYTES)
        except JsonRejected as exc:
            raise InvalidMessage(f"message body is {exc}") from None
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
    return CustomerMessage.parse(body)


# --------------------------------------------------------------------------------------------
# The service: providers, clients, run records, fan-out
# --------------------------------------------------------------------------------------------


@dataclass
class ProviderOutcome(TimerOutcome):
    customers_enqueued: int = 0


def run_telemetry(result: RunResult) -> None:
    """A finished run's outcome and counts on its span, and its metrics."""
    telemetry.annotate(outcome=result.outcome, rows_read=result.rows_read, rows_written=result.rows_written,
                       rows_removed=result.rows_removed, calls=result.calls, throttled=result.throttled_429,
                       retries=result.retries, error=result.error)
    telemetry.record_run(result)


def _scope(provider_id: str, customer_id: str | None) -> str:
    return f"{provider_id}/{customer_id}" if customer_id else provider_id


class SyncService:
    """Runs streams for providers. Built once per process by the composition root; Partner
    Center clients (and so call budgets and connection pools) come from the injected
    :class:`~shared.clients.ClientRegistry`, shared with the other services."""

    def __init__(self, *, tables: Tables, providers: Any, queues: Any, clients: ClientRegistry):
        self.tables = tables
        self.providers = providers
        self.queues = queues
        self.clients = clients

    # -- one recorded run --------------------------------------------------------------------

    def run_stream(
        self,
        stream: Stream,
        provider: ProviderConnection,
        *,
        customer_id: str | None = None,
        correlation_id: str | None = None,
        client: PartnerCenterClient | None = None,
        mode: SyncMode | None = None,
        work: Callable[..., RunResult] = sync_stream,
    ) -> RunResult:
        """Run one stream for a provider (and customer), recording it in ``syncruns``; ``work``
        reads and writes it (default: the whole collection, :func:`sync_stream`).

        Never raises for Partner Center or consent failures: they become the run's outcome
        (``result.exception`` keeps the error for callers that decide on retries).
        """
        correlation_id = correlation_id or str(uuid.uuid4())
        customer_id = canonical_id(customer_id) if customer_id is not None else None
        result = RunResult(provider.id, stream.name, customer_id, correlation_id, mode=mode)
        with telemetry.span("pcsync.sync.run", provider=provider.id, stream=stream.name, customer=customer_id,
                            run_id=result.run_id, correlation_id=correlation_id):
            stats = CallStats()
            record_run(self.tables, result)  # "running": a run killed mid-way still leaves its row
            try:
                bound = (client or self.clients.partner_center(provider)).bind(correlation_id=correlation_id, stats=stats)
                work(stream, client=bound, tables=self.tables, provider_id=provider.id,
                     customer_id=customer_id, result=result)
                result.end(RunOutcome.SUCCEEDED)
            except (ConsentRequired, TokenRefused) as exc:
                self.token_unavailable(stream, provider, result, exc, f"{stream.name} sync of {_scope(provider.id, customer_id)}")
            except (PartnerCenterError, InvalidId, Unavailable, UpstreamRefused) as exc:
                # Partner Center, a bad id, or a dependency blip (Entra, Key Vault): this run failed
                # and says so; the provider's other runs go on
                result.end(RunOutcome.FAILED, exc)
                log.warning("%s sync failed for %s: %s", stream.name, _scope(provider.id, customer_id), exc,
                            extra={"provider_id": provider.id, "customer_id": customer_id, "stream": stream.name})
            except Exception as exc:  # record, then let the runtime see it
                result.crashed(exc)
                self._finish(result, stats)
                raise
            self._finish(result, stats)
            return result

    def token_unavailable(self, stream: Stream, provider: ProviderConnection, result: RunResult,
                          exc: ConsentRequired | TokenRefused, what: str) -> None:
        """The App+User token is unavailable: an App+User-only stream degrades (the provider's other
        work goes on); a stream that should work app-only needed it (app-only refused) and fails
        as before: ``consent_required`` for a lost consent, ``failed`` for a refusal."""
        if stream.requires_user:
            result.degrade(exc)
            log.warning("%s degraded: App+User token unavailable (%s); app-only streams go on", what, result.cause,
                        extra={"provider_id": provider.id, "stream": stream.name})
        elif isinstance(exc, ConsentRequired):
            self.consent_lost(provider, result, exc, what)
        else:
            result.end(RunOutcome.FAILED, exc)
            log.warning("%s failed: %s", what, exc, extra={"provider_id": provider.id, "stream": stream.name})

    def consent_lost(self, provider: ProviderConnection, result: RunResult, exc: ConsentRequired, what: str) -> None:
        """End the run as ``consent_required`` and drop the provider's cached clients."""
        result.end(RunOutcome.CONSENT_REQUIRED, exc)
        self.clients.forget(provider.id)
        log.warning("provider %s needs consent again (%s); %s stopped", provider.id, exc.status, what,
                    extra={"provider_id": provider.id})

    def _finish(self, result: RunResult, stats: CallStats) -> None:
        result.take_stats(stats)
        record_run(self.tables, result)
        run_telemetry(result)
        log.info(
            "sync %s %s: %s read=%d written=%d removed=%d calls=%d 429s=%d in %.1fs",
            result.stream, _scope(result.provider_id, result.customer_id), result.outcome, result.rows_read,
            result.rows_written, result.rows_removed, result.calls, result.throttled_429, result.duration_s,
            extra={"provider_id": result.provider_id, "stream": result.stream, "run_id": result.run_id},
        )

    def workable_provider(self, provider_id: str, what: str) -> ProviderConnection | None:
        """The provider queue work is for, or None (logged) when it is missing, disabled or
        without a consent (:func:`syncs_app_only`): such a message is dropped, not retried."""
        provider = self.providers.find_provider(provider_id)
        if provider is not None and provider.enabled and syncs_app_only(provider):
            return provider
        state = "missing" if provider is None else ("disabled" if not provider.enabled else
                                                    f"consent {provider.consent_status}")
        log.info("%s dropped: provider %s", what, state, extra={"provider_id": provider_id})
        return None

    # -- flows -------------------------------------------------------------------------------

    def live_customer_ids(self, provider_id: str) -> Iterator[str]:
        """The live customers' ids, canonical; a stored id that is not a GUID is passed over."""
        table = self.tables.table(CUSTOMERS.table)
        seen: set[str] = set()
        for row in table.list_entities(partition_key=CUSTOMERS.partition_key(provider_id), select=["id", "removed"]):
            customer_id = canonical_id(row.get("id") or "")
            if not row.get("removed") and GUID_PATTERN.match(customer_id) and customer_id not in seen:
                seen.add(customer_id)
                yield customer_id

    def sync_customer(
        self,
        provider: ProviderConnection,
        customer_id: str,
        *,
        correlation_id: str | None = None,
        streams: Iterable[Stream] = CUSTOMER_STREAMS,
        client: PartnerCenterClient | None = None,
        mode: SyncMode | None = None,
    ) -> list[RunResult]:
        """Subscriptions and agreements of one customer; stops at consent failure."""
        results = []
        for stream in streams:
            result = self.run_stream(stream, provider, customer_id=customer_id,
                                     correlation_id=correlation_id, client=client, mode=mode)
            results.append(result)
            if result.outcome == RunOutcome.CONSENT_REQUIRED:
                break
        return results

    def sync_provider_customers(self, provider: ProviderConnection, *, correlation_id: str | None = None,
                                enqueue: bool = True) -> ProviderOutcome:
        """Timer work for one provider: customers, then one ``sync-customer`` message each."""
        correlation_id = correlation_id or str(uuid.uuid4())
        result = self.run_stream(CUSTOMERS, provider, correlation_id=correlation_id)
        outcome = ProviderOutcome(provider.id, result.outcome, runs=[result], error=result.error)
        if result.outcome != RunOutcome.SUCCEEDED or not enqueue:
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
        correlation_id = correlation_id or str(uuid.uuid4())
        wanted = tuple(streams) if streams is not None else (CUSTOMERS, *CUSTOMER_STREAMS)
        child_streams = tuple(s for s in wanted if s.per_customer)
        results: list[RunResult] = []
        if customer_id is None and CUSTOMERS in wanted:
            first = self.run_stream(CUSTOMERS, provider, correlation_id=correlation_id)
            results.append(first)
            if first.outcome != RunOutcome.SUCCEEDED:
                return results
        if not child_streams:
            return results
        customers = [customer_id] if customer_id else list(self.live_customer_ids(provider.id))
        if on_fan_out:
            on_fan_out(len(customers))

        def one(cid: str) -> list[RunResult]:
            runs = self.sync_customer(provider, cid, correlation_id=correlation_id, streams=child_streams)
            if on_customer_done:
                on_customer_done(cid, runs)
            return runs

        for runs in fan_out(customers, one, workers=workers, thread_name="pcsync-sync",
                            stops=lambda runs: any(r.outcome == RunOutcome.CONSENT_REQUIRED for r in runs)):
            results.extend(runs)
        return results

    def handle_customer_message(self, message: CustomerMessage) -> list[RunResult]:
        """Queue work: returns the runs; raises only when a redelivery could succeed."""
        what = f"sync-customer for {message.provider_id}/{message.customer_id}"
        provider = self.workable_provider(message.provider_id, what)
        if provider is None:
            return []
        results = self.sync_customer(provider, message.customer_id, correlation_id=message.correlation_id)
        retryable = [r for r in results if r.retryable]
        if retryable:
            raise retryable[0].exception  # type: ignore[misc]
        return results


def fan_out(work_items: Iterable[str], work: Callable[[str], Any], *, workers: int, thread_name: str,
            stops: Callable[[Any], bool]) -> list[Any]:
    """``work`` for each item on a bounded thread pool, in item order; once a result ``stops``
    (consent lost), items not yet started are skipped."""
    stop = threading.Event()

    def one(item: str) -> Any:
        if stop.is_set():
            return None
        done = work(item)
        if stops(done):
            stop.set()
        return done

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=thread_name) as pool:
        return [done for done in pool.map(one, work_items) if done is not None]


def syncs_app_only(provider: ProviderConnection) -> bool:
    """Whether the sync works for the provider: its consent is active, or it worked once and was
    lost (expired, revoked): then what works app-only still syncs and the App+User-only streams
    end ``degraded``. A provider that never consented has no app-only access either."""
    return provider.consent_active or provider.consent_blocked is not None


def for_each_active_provider(providers: Any, work: Callable[[ProviderConnection], Any],
                             outcome_type: Callable[..., Any], what: str) -> list[Any]:
    """Run a timer's work for every enabled provider whose consent is active or was lost
    (:func:`syncs_app_only`: degraded). A provider that never consented is skipped and one that
    fails is recorded, so neither stops the others."""
    outcomes = []
    for provider in providers.list_providers(enabled_only=True):
        if provider.consent_blocked is not None:
            log.warning("provider %s: consent is %s; %s runs app-only, App+User-only streams degrade",
                        provider.id, provider.consent_blocked, what, extra={"provider_id": provider.id})
        elif not provider.consent_active:
            log.info("provider %s skipped: consent is %s", provider.id, provider.consent_status,
                     extra={"provider_id": provider.id})
            outcomes.append(outcome_type(provider.id, RunOutcome.SKIPPED, error=f"consent {provider.consent_status}"))
            continue
        try:
            outcomes.append(work(provider))
        except Exception as exc:  # noqa: BLE001 - isolate providers from each other
            log.exception("%s crashed for provider %s", what, provider.id, extra={"provider_id": provider.id})
            outcomes.append(outcome_type(provider.id, RunOutcome.FAILED, error=f"{type(exc).__name__}: {exc}"))
    return outcomes


__all__ = [
    "CustomerMessage", "InvalidMessage", "ItemMessage", "ProviderOutcome", "RunOutcome", "RunResult", "SYNC_CUSTOMER_QUEUE",
    "SYNC_RUNS_TABLE", "SyncService", "decode_message", "fan_out", "for_each_active_provider",
    "parse_customer_message", "summarize", "sync_stream", "syncs_app_only", "tombstone_rows",
]
