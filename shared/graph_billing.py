"""GraphBillingClient: the Microsoft Graph billing reconciliation export (v2), start to rows.

Flow (Graph ``/v1.0/reports/partners/billing``):

1. ``POST .../reconciliation/billed/export`` ``{"invoiceId", "attributeSet"}`` -> 202 + ``Location``;
2. ``GET {Location}`` until the operation is ``succeeded`` (or ``completed``; both spellings are
   in Microsoft's material), honouring ``Retry-After`` between polls, bounded in total time;
   ``failed`` becomes :class:`ExportFailed` (``code == "5000"``: no data for the invoice, e.g. a
   legacy D invoice or data not ready yet);
3. the manifest, from ``resourceLocation@odata.navigationLink`` or inline in ``resourceLocation``;
4. each blob ``{rootDirectory}/{name}?{sasToken}`` streamed: gzip is decompressed chunk by chunk
   and JSON Lines are parsed line by line, so memory stays flat whatever the blob size. A
   connection that breaks mid-blob is re-read from the start and the rows already handed out are
   skipped (blobs are immutable).

The bearer token goes only to the configured Graph origin; blob reads carry the SAS and nothing
else. Retries reuse the Partner Center client's policy and error resolution (429 honours
Retry-After, 5xx/resets/truncated bodies back off with jitter, 401 refreshes the token once).
``POST export`` is retried too: a duplicate export operation costs nothing and reads no data.
"""
from __future__ import annotations

import json
import random
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol
from urllib.parse import urlsplit

import requests

from .errors import PcsyncError, PermissionMissing
from .logging import get_logger
from .partner_center import (
    TRANSIENT_EXCEPTIONS,
    Action,
    CallStats,
    RetryPolicy,
    TruncatedBody,
    get_path,
    parse_retry_after,
    resolve,
)

log = get_logger(__name__)

BILLING_ROOT = "/v1.0/reports/partners/billing"
BILLED_RECONCILIATION_EXPORT = BILLING_ROOT + "/reconciliation/billed/export"
SUCCEEDED_STATUSES = frozenset({"succeeded", "completed"})
RUNNING_STATUSES = frozenset({"notstarted", "running", "queued", "inprogress"})
NO_DATA_CODE = "5000"
DEFAULT_CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024  # one reconciliation row is a few KiB; anything huge is corrupt
_DECOMPRESS_STEP = 1024 * 1024  # never inflate more than this per step (bounds a gzip bomb)


class GraphTokenSource(Protocol):
    """Anything that hands out app-only Graph tokens (``auth.tokens.TokenProvider.graph_token``)."""

    def graph_token(self, *, force_refresh: bool = False) -> str: ...


# --------------------------------------------------------------------------------------------
# Errors (by what the caller can do)
# --------------------------------------------------------------------------------------------


class GraphBillingError(PcsyncError):
    """A Graph billing export step failed. ``retryable`` says whether trying later may help."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 request_id: str | None = None, url: str | None = None):
        self.status = status
        self.code = code
        self.request_id = request_id
        self.url = url
        super().__init__(message)


class ExportFailed(GraphBillingError):
    """The export operation ended ``failed``; ``no_data`` when Graph has no reconciliation data
    for the invoice (code 5000: legacy invoices always, new commerce ones until data is ready)."""

    @property
    def no_data(self) -> bool:
        return self.code == NO_DATA_CODE

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        # Graph's guidance for a failed operation is "restart with a new POST"; 5000 is handled
        # by the caller (fallback or a later run), everything else may succeed on a new export.
        return not self.no_data


class ExportTimedOut(GraphBillingError):
    """The operation was still running when the polling budget ran out."""

    retryable = True


class ExportExpired(GraphBillingError):
    """The operation or manifest link is gone (404/410): start a new export."""

    retryable = True


class GraphServiceError(GraphBillingError):
    """429/5xx/transport failures that persisted through every retry."""

    retryable = True


class GraphPermissionMissing(GraphBillingError, PermissionMissing):
    """403: the app lacks the application permission PartnerBilling.Read.All (admin consent)."""


class BlobFormatError(GraphBillingError):
    """A blob is not gzip JSON Lines of objects (or a line is absurdly long)."""


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobRef:
    name: str
    partition_value: str | None = None


@dataclass(frozen=True)
class Manifest:
    id: str | None
    root_directory: str
    sas_token: str
    blobs: tuple[BlobRef, ...]
    data_format: str | None = None
    etag: str | None = None
    blob_count: int | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Manifest":
        """Tolerant of key case and of the 2022 beta names (``rootFolder``, ``rootFolderSAS``)."""
        root = get_path(body, "rootDirectory") or get_path(body, "rootFolder")
        sas = get_path(body, "sasToken") or get_path(body, "rootFolderSAS") or ""
        if not isinstance(root, str) or not root.startswith(("https://", "http://")):
            raise BlobFormatError(f"manifest has no usable rootDirectory: {str(root)[:200]!r}")
        blobs = []
        for entry in get_path(body, "blobs") or []:
            name = get_path(entry, "name") if isinstance(entry, Mapping) else None
            if isinstance(name, str) and name.strip():
                blobs.append(BlobRef(name.strip(), _text(get_path(entry, "partitionValue"))))
        count = get_path(body, "blobCount")
        # Part numbers lead the names (part-00000-...), so name order is the export's order and
        # stays the same across re-exports of an unchanged invoice.
        blobs.sort(key=lambda b: b.name)
        return cls(
            id=_text(get_path(body, "id")),
            root_directory=root.rstrip("/"),
            sas_token=str(sas).lstrip("?"),
            blobs=tuple(blobs),
            data_format=_text(get_path(body, "dataFormat")),
            etag=_text(get_path(body, "eTag")),
            blob_count=int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None,
        )

    def blob_url(self, blob: BlobRef) -> str:
        url = f"{self.root_directory}/{blob.name}"
        return f"{url}?{self.sas_token}" if self.sas_token else url


@dataclass(frozen=True)
class ExportOperation:
    id: str | None
    location: str
    status: str
    retry_after: float | None = None
    manifest_url: str | None = None
    manifest: Manifest | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCEEDED_STATUSES

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_operation(body: Mapping[str, Any], *, location: str, retry_after: float | None) -> ExportOperation:
    status = str(get_path(body, "status") or "").strip().lower()
    link = get_path(body, "resourceLocation@odata.navigationLink")
    inline = get_path(body, "resourceLocation")
    manifest = None
    if isinstance(inline, Mapping):
        manifest = Manifest.from_json(inline)
    elif isinstance(inline, str) and not link:
        link = inline
    error = get_path(body, "error")
    return ExportOperation(
        id=_text(get_path(body, "id")),
        location=location,
        status=status,
        retry_after=retry_after,
        manifest_url=link if isinstance(link, str) and link else None,
        manifest=manifest,
        error_code=_text(get_path(error, "code")) if isinstance(error, Mapping) else None,
        error_message=_text(get_path(error, "message")) if isinstance(error, Mapping) else None,
    )


# --------------------------------------------------------------------------------------------
# Streaming gzip JSON Lines
# --------------------------------------------------------------------------------------------


def iter_gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress gzip (several members allowed) chunk by chunk. Bytes that do not start with
    the gzip magic pass through unchanged (a proxy may already have decoded them).
    Raises :class:`TruncatedBody` when the stream ends inside a gzip member."""
    decompressor: Any = None
    passthrough: bool | None = None
    head = b""
    for chunk in chunks:
        if not chunk:
            continue
        if passthrough is None:
            head += chunk
            if len(head) < 2:
                continue  # the magic may arrive one byte at a time
            chunk, head = head, b""
            passthrough = not chunk.startswith(b"\x1f\x8b")
        if passthrough:
            yield chunk
            continue
        data = chunk
        while data:
            if decompressor is None:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = decompressor.decompress(data, _DECOMPRESS_STEP)
                while out:
                    yield out
                    if not decompressor.unconsumed_tail:
                        break
                    out = decompressor.decompress(decompressor.unconsumed_tail, _DECOMPRESS_STEP)
            except zlib.error as exc:
                raise BlobFormatError(f"blob is not valid gzip: {exc}") from None
            if decompressor.eof:
                data = decompressor.unused_data  # the next gzip member, if any
                decompressor = None
            else:
                data = b""
    if head:
        yield head  # a one-byte body cannot be gzip
    if decompressor is not None:
        tail = decompressor.flush()
        if tail:
            yield tail
        if not decompressor.eof:
            raise TruncatedBody("gzip stream ended early")


def iter_json_lines(chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[dict[str, Any]]:
    """Parse JSON Lines from byte chunks without holding more than one line (plus a chunk)."""
    buffer = bytearray()
    line_no = 0

    def parse(raw: bytes) -> dict[str, Any] | None:
        nonlocal line_no
        line_no += 1
        raw = raw.strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise BlobFormatError(f"line {line_no} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BlobFormatError(f"line {line_no} is not a JSON object")
        return value

    for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            row = parse(bytes(buffer[start:end]))
            if row is not None:
                yield row
            start = end + 1
        if start:
            del buffer[:start]
        if len(buffer) > max_line_bytes:
            raise BlobFormatError(f"line {line_no + 1} is longer than {max_line_bytes} bytes")
    if buffer.strip():
        row = parse(bytes(buffer))  # the last line may lack its newline
        if row is not None:
            yield row


def iter_gzip_json_lines(chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[dict[str, Any]]:
    return iter_json_lines(iter_gzip_chunks(chunks), max_line_bytes=max_line_bytes)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


@dataclass
class _Shared:
    graph_url: str
    token_source: GraphTokenSource
    session: Any
    retry: RetryPolicy
    timeout: tuple[float, float]
    verify: Any
    sleep: Callable[[float], None]
    rng: random.Random
    poll_timeout: float
    poll_default: float
    chunk_bytes: int
    max_line_bytes: int
    max_blob_attempts: int


class GraphBillingClient:
    """Graph billing reconciliation export for one partner tenant (app-only token).

    Immutable; ``bind(stats=...)`` returns a view for one import that shares the session.
    ``sleep`` is injectable (tests poll without waiting); ``poll_timeout`` bounds the total
    time spent waiting for an operation, ``poll_default`` is the wait when Retry-After is absent.
    """

    def __init__(
        self,
        graph_url: str,
        token_source: GraphTokenSource,
        *,
        ca_bundle: str | None = None,
        session: Any | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        poll_timeout: float = 900.0,
        poll_default: float = 10.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_blob_attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        stats: CallStats | None = None,
        pool_size: int = 8,
    ):
        if session is None:
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE / proxies from the machine must not apply
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._shared = _Shared(
            graph_url.rstrip("/"), token_source, session, retry or RetryPolicy(), timeout, ca_bundle or True,
            sleep, rng or random.Random(), poll_timeout, poll_default, chunk_bytes, max_line_bytes,
            max_blob_attempts,
        )
        self.stats = stats or CallStats()

    @classmethod
    def from_settings(cls, settings: Any, token_source: GraphTokenSource, **kwargs: Any) -> "GraphBillingClient":
        return cls(settings.graph_url, token_source, ca_bundle=settings.ca_bundle, **kwargs)

    def bind(self, *, stats: CallStats | None = None) -> "GraphBillingClient":
        view = object.__new__(GraphBillingClient)
        view._shared = self._shared
        view.stats = stats or CallStats()
        return view

    def close(self) -> None:
        self._shared.session.close()

    # -- public operations ---------------------------------------------------------------------

    def begin_billed_reconciliation_export(self, invoice_id: str, *, attribute_set: str = "full") -> ExportOperation:
        """Start the export; returns the running operation (its ``location`` is polled)."""
        response = self._call("POST", self._shared.graph_url + BILLED_RECONCILIATION_EXPORT,
                              json_body={"invoiceId": invoice_id, "attributeSet": attribute_set})
        location = response.headers.get("Location") or response.headers.get("Operation-Location")
        if response.status_code != 202 or not location:
            raise GraphBillingError(
                f"export for invoice {invoice_id} answered HTTP {response.status_code} without an operation Location",
                status=response.status_code, url=BILLED_RECONCILIATION_EXPORT)
        return ExportOperation(id=None, location=self._absolute(location), status="notstarted",
                               retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def get_operation(self, location: str) -> ExportOperation:
        response = self._call("GET", location, expired_is_error=True)
        body = _json_object(response)
        return parse_operation(body, location=location,
                               retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def wait_for_manifest(self, operation: ExportOperation) -> Manifest:
        """Poll until the operation ends; the manifest when it succeeded, else a typed error."""
        shared = self._shared
        waited = 0.0
        polls = 0
        current = operation
        while True:
            if current.succeeded:
                if current.manifest is not None:
                    return current.manifest
                if not current.manifest_url:
                    raise GraphBillingError(f"export operation {current.id} succeeded without a manifest link",
                                            url=current.location)
                return self.get_manifest(current.manifest_url)
            if current.failed:
                code = current.error_code
                raise ExportFailed(
                    f"export operation {current.id} failed (code {code}): {current.error_message or 'no message'}",
                    code=code, url=current.location)
            if polls and current.status and current.status not in RUNNING_STATUSES:
                log.warning("graph export operation %s has unknown status %r; polling on", current.id, current.status)
            delay = current.retry_after if current.retry_after is not None else shared.poll_default
            delay = min(max(delay, 0.0), shared.retry.retry_after_cap)
            if waited + delay > shared.poll_timeout:
                raise ExportTimedOut(
                    f"export operation {current.id or current.location} still {current.status or 'running'} after "
                    f"{polls} poll(s) and {waited:.0f}s", url=current.location)
            if delay:
                shared.sleep(delay)
            waited += delay
            polls += 1
            current = self.get_operation(operation.location)

    def get_manifest(self, url: str) -> Manifest:
        return Manifest.from_json(_json_object(self._call("GET", self._absolute(url), expired_is_error=True)))

    def export_billed_reconciliation(self, invoice_id: str, *, attribute_set: str = "full") -> Manifest:
        """Start the billed reconciliation export of one invoice and wait for its manifest."""
        operation = self.begin_billed_reconciliation_export(invoice_id, attribute_set=attribute_set)
        log.info("graph billed reconciliation export for %s started", invoice_id,
                 extra={"invoice_id": invoice_id, "operation": operation.location})
        return self.wait_for_manifest(operation)

    def iter_rows(self, manifest: Manifest) -> Iterator[dict[str, Any]]:
        """Every row of every blob, in blob-name order, streamed."""
        for blob in manifest.blobs:
            yield from self.iter_blob_rows(manifest, blob)

    def iter_blob_rows(self, manifest: Manifest, blob: BlobRef) -> Iterator[dict[str, Any]]:
        shared = self._shared
        url = manifest.blob_url(blob)
        delivered = 0
        attempt = 0
        while True:
            attempt += 1
            response = self._call("GET", url, authorize=False, stream=True)
            seen = 0
            try:
                chunks = response.iter_content(chunk_size=shared.chunk_bytes)
                for row in iter_gzip_json_lines(chunks, max_line_bytes=shared.max_line_bytes):
                    seen += 1
                    if seen > delivered:
                        delivered = seen
                        yield row
                return
            except (TruncatedBody, *TRANSIENT_EXCEPTIONS) as exc:
                if attempt >= shared.max_blob_attempts:
                    raise GraphServiceError(
                        f"blob {blob.name} broke off after {delivered} row(s), {attempt} attempt(s): "
                        f"{type(exc).__name__}", url=_safe_url(url)) from exc
                delay = shared.retry.backoff(attempt, shared.rng)
                self.stats.add(retries=1)
                log.warning("blob %s broke off after %d row(s) (%s); re-reading in %.2fs", blob.name, delivered,
                            type(exc).__name__, delay)
                shared.sleep(delay)
            finally:
                response.close()

    # -- internals -----------------------------------------------------------------------------

    def _absolute(self, url: str) -> str:
        url = url.strip()
        if url.startswith("/"):
            return self._shared.graph_url + url
        return url

    def _check_origin(self, url: str) -> None:
        parts, root = urlsplit(url), urlsplit(self._shared.graph_url)
        if (parts.scheme, parts.netloc.lower()) != (root.scheme, root.netloc.lower()):
            raise GraphBillingError(f"refusing to send the Graph token to another origin: {parts.scheme}://{parts.netloc}")

    def _call(self, method: str, url: str, *, json_body: Any = None, authorize: bool = True, stream: bool = False,
              expired_is_error: bool = False) -> requests.Response:
        """One logical call with the retry policy; returns a 2xx response or raises."""
        shared = self._shared
        policy = shared.retry
        request_id = str(uuid.uuid4())
        if authorize:
            self._check_origin(url)
        started = time.monotonic()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": "application/json", "client-request-id": request_id}
            if authorize:
                headers["Authorization"] = f"Bearer {shared.token_source.graph_token(force_refresh=False)}"
            self.stats.add(calls=1)
            outcome: requests.Response | BaseException
            try:
                outcome = shared.session.request(
                    method, url, json=json_body, headers=headers, timeout=shared.timeout, verify=shared.verify,
                    allow_redirects=False, stream=stream,
                )
                if not stream and 200 <= outcome.status_code < 300 and outcome.status_code != 202:
                    _check_json_body(outcome)
            except (TruncatedBody, *TRANSIENT_EXCEPTIONS) as exc:
                outcome = exc
            action = resolve(outcome)
            if action is Action.SUCCESS:
                return outcome  # type: ignore[return-value]
            status = outcome.status_code if isinstance(outcome, requests.Response) else None
            if isinstance(outcome, requests.Response):
                if stream:
                    outcome.close()
            if action is Action.REFRESH_TOKEN and authorize and not refreshed:
                refreshed = True
                self.stats.add(token_refreshes=1)
                shared.token_source.graph_token(force_refresh=True)
                continue
            if action is Action.RATE_LIMITED:
                self.stats.add(throttled=1)
            out_of_time = time.monotonic() - started > policy.max_elapsed
            if action in (Action.RETRY, Action.RATE_LIMITED) and attempt < policy.max_attempts and not out_of_time:
                delay = (policy.throttle_wait(outcome, attempt, shared.rng)  # type: ignore[arg-type]
                         if action is Action.RATE_LIMITED else policy.backoff(attempt, shared.rng))
                self.stats.add(retries=1)
                log.warning("graph %s %s: %s; retry %d/%d in %.2fs", method, _safe_url(url),
                            status or type(outcome).__name__, attempt, policy.max_attempts - 1, delay,
                            extra={"request_id": request_id})
                shared.sleep(delay)
                continue
            # a blob read (no token) that is refused or missing means the SAS or the export expired
            raise self._error(method, url, outcome, attempts=attempt, request_id=request_id,
                              expired_is_error=expired_is_error, blob=not authorize)

    def _error(self, method: str, url: str, outcome: requests.Response | BaseException, *, attempts: int,
               request_id: str, expired_is_error: bool, blob: bool = False) -> GraphBillingError:
        safe = _safe_url(url)
        if isinstance(outcome, BaseException):
            error = GraphServiceError(f"{method} {safe} failed after {attempts} attempt(s): {type(outcome).__name__}",
                                      request_id=request_id, url=safe)
            error.__cause__ = outcome
            return error
        status = outcome.status_code
        code, message = _graph_error(outcome)
        text = f"{method} {safe} -> HTTP {status}" + (f" ({code})" if code else "") + f": {message or outcome.reason}"
        common = {"status": status, "code": code, "request_id": request_id, "url": safe}
        if blob and status in (403, 404, 410):
            return ExportExpired(text + ". The blob's SAS or the export has expired; a new export is needed.", **common)
        if status == 403:
            return GraphPermissionMissing(
                text + ". Grant the app the Microsoft Graph application permission PartnerBilling.Read.All "
                       "(with admin consent).", **common)
        if status in (404, 410) and expired_is_error:
            return ExportExpired(text, **common)
        if status == 429 or status >= 500:
            return GraphServiceError(text, **common)
        return GraphBillingError(text, **common)


def _safe_url(url: str) -> str:
    """The URL without its query (a blob URL's query is the SAS)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _check_json_body(response: requests.Response) -> None:
    content = response.content
    if not content or not content.strip():
        raise TruncatedBody("empty body")
    try:
        json.loads(content)
    except ValueError as exc:
        raise TruncatedBody(f"body is not complete JSON ({len(content)} bytes)") from exc


def _json_object(response: requests.Response) -> dict[str, Any]:
    body = json.loads(response.content)
    if not isinstance(body, dict):
        raise GraphBillingError(f"expected a JSON object from {_safe_url(response.url or '')}")
    return body


def _graph_error(response: requests.Response) -> tuple[str | None, str | None]:
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return None, (response.text or "").strip()[:300] or None
    if not isinstance(body, Mapping):
        return None, None
    code = get_path(body, "error", "code") or get_path(body, "code")
    message = get_path(body, "error", "message") or get_path(body, "message")
    return (None if code is None else str(code)), (None if message is None else str(message)[:1024])


__all__ = [
    "BILLED_RECONCILIATION_EXPORT", "BlobFormatError", "BlobRef", "ExportExpired", "ExportFailed", "ExportOperation",
    "ExportTimedOut", "GraphBillingClient", "GraphBillingError", "GraphPermissionMissing", "GraphServiceError",
    "GraphTokenSource", "Manifest", "NO_DATA_CODE", "iter_gzip_chunks", "iter_gzip_json_lines", "iter_json_lines",
    "parse_operation",
]
