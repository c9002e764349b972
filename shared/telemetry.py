"""Traces and metrics (OpenTelemetry) for pcsync, free until the composition root turns them on.

The Python worker drops ``extra={...}`` fields from log records, so the structured facts an
operator searches by (provider, stream, customer, run id, outcome, Partner Center request ids)
go on spans and metrics, named ``pcsync.*``.

Until :func:`install` runs (``bootstrap.configure_telemetry`` when a connection string or a local
exporter is set, or a test), :func:`span` yields a span that does nothing and the ``record_*``
functions return at once: OpenTelemetry is imported only by :func:`install`, never at import time.

Secrets never leave in telemetry: every attribute value, event and exception text set through
this module passes through :func:`shared.logging.redact`, and :func:`redacting_processor` (the
first span processor) does the same to the spans of libraries (Azure SDK, instrumentations).
"""
from __future__ import annotations

import contextlib
import threading
import traceback
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping

from .clock import parse_iso
from .logging import get_logger, redact

log = get_logger(__name__)

PREFIX = "pcsync."
_SCOPE = "pcsync"
Attributes = Mapping[str, Any]


class _State:
    def __init__(self) -> None:
        self.tracer: Any = None
        self.meter: Any = None
        self.instruments: dict[str, Any] = {}
        self.lock = threading.Lock()


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def install(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Send spans and metrics to these providers (default: OpenTelemetry's global ones)."""
    from opentelemetry import metrics, trace

    with _state.lock:
        _state.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE)
        _state.meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE)
        _state.instruments = {}


def uninstall() -> None:
    """Back to doing nothing (tests)."""
    with _state.lock:
        _state.tracer = _state.meter = None
        _state.instruments = {}


# --------------------------------------------------------------------------------------------
# Attributes and spans
# --------------------------------------------------------------------------------------------


def _value(value: Any) -> Any:
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(redact(str(v)) for v in value)
    return redact(str(getattr(value, "value", value)))  # enums by their value


def attributes(named: Attributes | None = None, **pcsync: Any) -> dict[str, Any]:
    """Redacted OpenTelemetry attributes: ``named`` as given (e.g. ``http.request.method``),
    keyword ones as ``pcsync.<name>``; None values are left out."""
    merged = {**(named or {}), **{PREFIX + name: value for name, value in pcsync.items()}}
    return {name: _value(value) for name, value in merged.items() if value is not None}


class Span:
    """A started span; :meth:`set` adds attributes (``pcsync.`` keyword ones, ``named`` as given)."""

    def __init__(self, otel: Any = None):
        self._otel = otel

    def set(self, named: Attributes | None = None, **pcsync: Any) -> None:
        if self._otel is not None:
            self._otel.set_attributes(attributes(named, **pcsync))


_NOOP = Span()


def _record_exception(otel: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    text = redact(f"{type(exc).__name__}: {exc}")
    otel.set_status(Status(StatusCode.ERROR, text[:1024]))
    otel.add_event("exception", {
        "exception.type": type(exc).__name__, "exception.message": redact(str(exc)),
        "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
    })


@contextlib.contextmanager
def span(name: str, named: Attributes | None = None, *, client: bool = False, **pcsync: Any) -> Iterator[Span]:
    """A span around the block (a CLIENT span when ``client``), current while it runs; an exception
    leaving the block marks it failed, with its redacted text, and goes on."""
    tracer = _state.tracer
    if tracer is None:
        yield _NOOP
        return
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    # the SDK's own exception recording would export the unredacted message and traceback
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes(named, **pcsync),
                                      record_exception=False, set_status_on_exception=False) as otel:
        try:
            yield Span(otel)
        except BaseException as exc:
            _record_exception(otel, exc)
            raise


# Request ids put on HTTP attempt spans, so that a Microsoft support case can be matched: Partner
# Center's MS-RequestId / MS-CorrelationId, Graph's client-request-id and its answer's request-id.
TRACED_HEADERS = ("ms-requestid", "ms-correlationid", "client-request-id", "request-id")


def header_attributes(kind: str, headers: Mapping[str, str]) -> dict[str, list[str]]:
    """``http.<kind>.header.<name>`` attributes (OpenTelemetry's names) of the traced headers."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    return {f"http.{kind}.header.{name}": [lowered[name]] for name in TRACED_HEADERS if name in lowered}


def annotate(named: Attributes | None = None, **pcsync: Any) -> None:
    """Add attributes to the current span (e.g. an outcome known deep inside the work)."""
    if _state.tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes(named, **pcsync))


def redacting_processor() -> Any:
    """A span processor, to be added first, that redacts the attributes, events and status of every
    span as it ends, before the exporting processors see it: for the spans of libraries, which do
    not go through :func:`attributes`. The SDK hands the same ended span to each processor in turn
    and offers no public way to change one, hence the private fields."""
    from opentelemetry.sdk.trace import Event, SpanProcessor
    from opentelemetry.trace import Status

    class RedactingSpanProcessor(SpanProcessor):
        def on_end(self, ended: Any) -> None:
            ended._attributes = {k: _value(v) for k, v in (ended.attributes or {}).items()}
            ended._events = tuple(Event(e.name, {k: _value(v) for k, v in (e.attributes or {}).items()},
                                        e.timestamp) for e in ended.events)
            if ended.status.description:
                ended._status = Status(ended.status.status_code, redact(ended.status.description))

    return RedactingSpanProcessor()


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

_COUNTERS = {
    "runs": ("{run}", "sync runs and invoice imports, by outcome"),
    "rows.read": ("{row}", "rows read from Partner Center"),
    "rows.written": ("{row}", "rows written to Table Storage (changed rows only)"),
    "rows.removed": ("{row}", "rows marked removed because they disappeared upstream"),
    "calls": ("{call}", "Partner Center and Graph calls, retries included"),
    "throttled": ("{call}", "calls answered 429"),
    "retries": ("{call}", "calls sent again after a transient failure"),
    "writeback.outcomes": ("{writeback}", "write-backs by final (or failed) state"),
    "invoice.reconciliations": ("{invoice}", "invoice checksum results by reconciliation status"),
}


def _instrument(name: str) -> Any:
    with _state.lock:
        instrument = _state.instruments.get(name)
        if instrument is None and _state.meter is not None:
            if name == "run.duration":
                instrument = _state.meter.create_histogram(PREFIX + name, unit="s", description="run duration")
            else:
                unit, description = _COUNTERS[name]
                instrument = _state.meter.create_counter(PREFIX + name, unit=unit, description=description)
            _state.instruments[name] = instrument
        return instrument


def _add(name: str, amount: float, labels: dict[str, Any]) -> None:
    instrument = _instrument(name)
    if instrument is not None and amount:
        instrument.add(amount, labels)


def record_run(result: Any) -> None:
    """The counters of a finished run (a ``sync.runs.RunResult`` or an invoice import's)."""
    if _state.meter is None:
        return
    labels = attributes(provider=result.provider_id, stream=result.stream, outcome=result.outcome)
    _add("runs", 1, labels)
    for name, amount in (("rows.read", result.rows_read), ("rows.written", result.rows_written),
                         ("rows.removed", result.rows_removed), ("calls", result.calls),
                         ("throttled", result.throttled_429), ("retries", result.retries)):
        _add(name, amount, labels)
    _instrument("run.duration").record(result.duration_s, labels)


def record_writeback(provider_id: str, operation: str, state: Any) -> None:
    if _state.meter is not None:
        _add("writeback.outcomes", 1, attributes(provider=provider_id, operation=operation, outcome=state))


def record_reconciliation(provider_id: str, status: Any) -> None:
    if _state.meter is not None:
        _add("invoice.reconciliations", 1, attributes(provider=provider_id, outcome=status))


def watch_refresh_tokens(list_providers: Callable[[], Iterable[Any]],
                         clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
    """An observable gauge ``pcsync.consent.refresh_token_days_left`` per provider, read from the
    providers' ``refresh_token_expires_at`` each time metrics are collected."""
    meter = _state.meter
    if meter is None:
        return
    from opentelemetry.metrics import Observation

    def observe(_options: Any) -> list[Any]:
        try:
            providers = list(list_providers())
        except Exception as exc:  # storage blips must not break the metrics export
            log.warning("refresh token expiry not observed: %s", exc)
            return []
        now = clock()
        observations = []
        for provider in providers:
            expires = parse_iso(getattr(provider, "refresh_token_expires_at", None))
            if expires is not None:
                days = (expires - now).total_seconds() / 86400
                observations.append(Observation(round(days, 2), attributes(provider=provider.id)))
        return observations

    meter.create_observable_gauge(PREFIX + "consent.refresh_token_days_left", callbacks=[observe], unit="d",
                                  description="days until each provider's refresh token expires if unused")
