"""GraphBillingClient: the Microsoft Graph billing reconciliation export (v2), start to rows.

Flow (Graph ``/v1.0/reports/partners/billing``):

1. ``POST .../reconciliation/billed/export`` ``{"invoiceId", "attributeSet"}`` -> 202 + ``Location``;
2. ``GET {Location}`` until the operation is ``succeeded`` (or ``completed``; both spellings are
   in Microsoft's material), honouring ``Retry-After`` between polls, bounded in total time;
   ``failed`` becomes :class:`ExportFailed` (``code == "5000"``: no data for the invoice, e.g. a
   legacy D invoice or data not ready yet);
3. the manifest, from ``resourceLocation@odata.navigationLink`` or inline in ``resourceLocation``;
4. each blob ``{rootDirectory}/{name}?{sasToken}`` streamed: gzip is decompressed chunk by chunk
   and JSON Lines are parsed line by line (:mod:`shared.jsonlines`), so memory stays flat
   whatever the blob size. A
   connection that breaks mid-blob is re-read from the start and the rows already handed out are
   skipped (blobs are immutable).

The bearer token goes only to the configured Graph origin; blob reads carry the SAS and nothing
else. Requests go through the shared :mod:`shared.transport` (its resolution table and retry
policy: 429 honours Retry-After, 5xx/resets/truncated bodies back off with jitter, 401 refreshes
the token once); what is Graph's own is the error body, the class per error type, and the blob
rules. ``POST export`` is retried too: a duplicate export operation costs nothing and reads no data.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import requests

from .graph_billing_errors import (
    BlobFormatError,
    ExportExpired,
    ExportFailed,
    ExportTimedOut,
    GraphBillingError,
    GraphPermissionMissing,
    GraphServiceError,
)
from .client_base import HttpClient
from .jsonlines import DEFAULT_MAX_LINE_BYTES, iter_gzip_json_lines
from .jsonutil import as_text, get_path
from .logging import get_logger
from .tokens import GraphTokenSource
from .transport import TRANSIENT_EXCEPTIONS, Call, CallStats, Dialect, ErrorType, Failure, error_fields, parse_retry_after

log = get_logger(__name__)

BILLING_ROOT = "/v1.0/reports/partners/billing"
BILLED_RECONCILIATION_EXPORT = BILLING_ROOT + "/reconciliation/billed/export"
BILLED_USAGE_EXPORT = BILLING_ROOT + "/usage/billed/export"
UNBILLED_RECONCILIATION_EXPORT = BILLING_ROOT + "/reconciliation/unbilled/export"
UNBILLED_USAGE_EXPORT = BILLING_ROOT + "/usage/unbilled/export"
SUCCEEDED_STATUSES = frozenset({"succeeded", "completed"})
RUNNING_STATUSES = frozenset({"notstarted", "running", "queued", "inprogress"})
DEFAULT_CHUNK_BYTES = 256 * 1024


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
        """Tolerant of key case and of the 2022 beta names (``rootFolder``, ``rootFolderSAS``);
        a manifest that does not add up (:func:`manifest_problem`) is a :class:`BlobFormatError`."""
        problem = manifest_problem(body)
        if problem:
            raise BlobFormatError(problem)
        root = get_path(body, "rootDirectory") or get_path(body, "rootFolder")
        sas = get_path(body, "sasToken") or get_path(body, "rootFolderSAS") or ""
        blobs = [BlobRef(get_path(entry, "name").strip(), as_text(get_path(entry, "partitionValue")))
                 for entry in get_path(body, "blobs")]
        count = get_path(body, "blobCount")
        # Part numbers lead the names (part-00000-...), so name order is the export's order and
        # stays the same across re-exports of an unchanged invoice.
        blobs.sort(key=lambda b: b.name)
        return cls(
            id=as_text(get_path(body, "id")),
            root_directory=root.rstrip("/"),
            sas_token=str(sas).lstrip("?"),
            blobs=tuple(blobs),
            data_format=as_text(get_path(body, "dataFormat")),
            etag=as_text(get_path(body, "eTag")),
            blob_count=int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None,
        )

    def blob_url(self, blob: BlobRef) -> str:
        url = f"{self.root_directory}/{blob.name}"
        return f"{url}?{self.sas_token}" if self.sas_token else url


def manifest_problem(body: Any) -> str | None:
    """Why an export manifest is unusable (None when it is usable): it must be a JSON object with
    a usable ``rootDirectory``, a ``blobs`` array of named blobs, and ``blobCount`` (when
    present) the number of blobs. A manifest read as "no blobs" would import no lines and
    tombstone every stored one."""
    if not isinstance(body, Mapping):
        return f"the manifest must be a JSON object, not {type(body).__name__}"
    root = get_path(body, "rootDirectory") or get_path(body, "rootFolder")
    if not isinstance(root, str) or not root.startswith(("https://", "http://")):
        return f"manifest has no usable rootDirectory: {str(root)[:200]!r}"
    blobs = get_path(body, "blobs")
    if not isinstance(blobs, list):
        return "manifest has no 'blobs' array"
    for entry in blobs:
        name = get_path(entry, "name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            return f"manifest lists a blob without a name: {str(entry)[:200]!r}"
    count = get_path(body, "blobCount")
    if count is not None and (isinstance(count, bool) or not isinstance(count, (int, float)) or count != len(blobs)):
        return f"manifest says blobCount {count!r} but lists {len(blobs)} blob(s)"
    return None


def operation_problem(body: Any) -> str | None:
    """Why an export operation answer is unusable: not a JSON object, no ``status``, or an
    inline manifest that does not add up."""
    if not isinstance(body, Mapping):
        return f"the export operation must be a JSON object, not {type(body).__name__}"
    if not isinstance(get_path(body, "status"), str):
        return "the export operation has no status"
    inline = get_path(body, "resourceLocation")
    return manifest_problem(inline) if isinstance(inline, Mapping) else None


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
        id=as_text(get_path(body, "id")),
        location=location,
        status=status,
        retry_after=retry_after,
        manifest_url=link if isinstance(link, str) and link else None,
        manifest=manifest,
        error_code=as_text(get_path(error, "code")) if isinstance(error, Mapping) else None,
        error_message=as_text(get_path(error, "message")) if isinstance(error, Mapping) else None,
    )


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


def _graph_error(response: requests.Response) -> tuple[str | None, str | None]:
    """Graph's ``{"error": {"code", "message"}}`` (or a flat ``code``/``message``)."""
    return error_fields(response, code_paths=(("error", "code"), ("code",)),
                        message_paths=(("error", "message"), ("message",)))


def _make_error(cls: type[Exception], text: str, failure: Failure) -> Exception:
    return cls(text, status=failure.answer.status, code=failure.answer.code, request_id=failure.call.request_id,
               url=failure.call.target)


_API = Dialect(
    name="graph",
    request_id_header="client-request-id",
    parse_error=_graph_error,
    # a missing permission is the partner's to fix; whatever else went wrong on the way is Graph's
    errors={ErrorType.FORBIDDEN: GraphPermissionMissing,
            **dict.fromkeys((ErrorType.THROTTLED, ErrorType.SERVICE, ErrorType.TRANSPORT), GraphServiceError)},
    default_error=GraphBillingError,
    make_error=_make_error,
    hints={ErrorType.FORBIDDEN: "Grant the app the Microsoft Graph application permission PartnerBilling.Read.All "
                                "(with admin consent)."},
)
_GONE = (ErrorType.NOT_FOUND, ErrorType.GONE)
# an operation or manifest link that is gone: the export expired
_EXPIRING = replace(_API, errors={**_API.errors, **dict.fromkeys(_GONE, ExportExpired)})
# a blob read (no token) that is refused or missing means the SAS or the export expired
_BLOB = replace(
    _API,
    errors={**_API.errors, **dict.fromkeys((ErrorType.FORBIDDEN, *_GONE), ExportExpired)},
    hints=dict.fromkeys((ErrorType.FORBIDDEN, *_GONE),
                        "The blob's SAS or the export has expired; a new export is needed."),
)


class GraphBillingClient(HttpClient):
    """Graph billing reconciliation export for one partner tenant (app-only token).

    Immutable; ``bind(stats=...)`` returns a view for one import that shares the session.
    ``poll_timeout`` bounds the total time spent waiting for an operation, ``poll_default`` is
    the wait when Retry-After is absent; ``transport_options`` go to the transport (see
    :mod:`shared.client_base`; an injected ``sleep`` lets tests poll without waiting).
    """

    def __init__(self, graph_url: str, token_source: GraphTokenSource, *, poll_timeout: float = 900.0,
                 poll_default: float = 10.0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, max_blob_attempts: int = 4,
                 stats: CallStats | None = None, **transport_options: Any):
        super().__init__(graph_url, token_source, stats=stats, **transport_options)
        self._poll_timeout, self._poll_default = poll_timeout, poll_default
        self._chunk_bytes, self._max_line_bytes, self._max_blob_attempts = chunk_bytes, max_line_bytes, max_blob_attempts

    def bind(self, *, stats: CallStats | None = None) -> "GraphBillingClient":
        return self._view(stats)

    # -- public operations ---------------------------------------------------------------------

    def begin_billed_reconciliation_export(self, invoice_id: str, *, attribute_set: str = "full") -> ExportOperation:
        """Start the export; returns the running operation (its ``location`` is polled)."""
        return self.begin_export(BILLED_RECONCILIATION_EXPORT, {"invoiceId": invoice_id, "attributeSet": attribute_set},
                                 what=f"invoice {invoice_id}")

    def begin_export(self, path: str, body: Mapping[str, Any], *, what: str) -> ExportOperation:
        """POST one of the billing exports (billed/unbilled, reconciliation/usage)."""
        response, _ = self._call("POST", self._base_url + path, json_body=dict(body))
        location = response.headers.get("Location") or response.headers.get("Operation-Location")
        if response.status_code != 202 or not location:
            raise GraphBillingError(
                f"export for {what} answered HTTP {response.status_code} without an operation Location",
                status=response.status_code, url=path)
        return ExportOperation(id=None, location=self._absolute(location), status="notstarted",
                               retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def get_operation(self, location: str) -> ExportOperation:
        response, body = self._call("GET", location, dialect=_EXPIRING, expect=operation_problem)
        return parse_operation(_json_object(body, location), location=location,
                               retry_after=parse_retry_after(response.headers.get("Retry-After")))

    def wait_for_manifest(self, operation: ExportOperation) -> Manifest:
        """Poll until the operation ends; the manifest when it succeeded, else a typed error."""
        transport = self._transport
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
            delay = current.retry_after if current.retry_after is not None else self._poll_default
            delay = min(max(delay, 0.0), transport.retry.retry_after_cap)
            if waited + delay > self._poll_timeout:
                raise ExportTimedOut(
                    f"export operation {current.id or current.location} still {current.status or 'running'} after "
                    f"{polls} poll(s) and {waited:.0f}s", url=current.location)
            if delay:
                transport.sleep(delay)
            waited += delay
            polls += 1
            current = self.get_operation(operation.location)

    def get_manifest(self, url: str) -> Manifest:
        url = self._absolute(url)
        _, body = self._call("GET", url, dialect=_EXPIRING, expect=manifest_problem)
        return Manifest.from_json(_json_object(body, url))

    def export_billed_reconciliation(self, invoice_id: str, *, attribute_set: str = "full") -> Manifest:
        """Start the billed reconciliation export of one invoice and wait for its manifest."""
        operation = self.begin_billed_reconciliation_export(invoice_id, attribute_set=attribute_set)
        log.info("graph billed reconciliation export for %s started", invoice_id,
                 extra={"invoice_id": invoice_id, "operation": operation.location})
        return self.wait_for_manifest(operation)

    def export_billed_usage(self, invoice_id: str, *, attribute_set: str = "full") -> Manifest:
        """The billed daily-rated usage of one invoice (new commerce)."""
        return self.wait_for_manifest(self.begin_export(
            BILLED_USAGE_EXPORT, {"invoiceId": invoice_id, "attributeSet": attribute_set},
            what=f"usage of invoice {invoice_id}"))

    def export_unbilled(self, usage: bool, currency_code: str, billing_period: str, *,
                        attribute_set: str = "full") -> Manifest:
        """Unbilled reconciliation (``usage=False``) or daily-rated usage of the ``current`` or
        ``last`` billing period, in one currency."""
        path = UNBILLED_USAGE_EXPORT if usage else UNBILLED_RECONCILIATION_EXPORT
        return self.wait_for_manifest(self.begin_export(
            path, {"currencyCode": currency_code, "attributeSet": attribute_set, "billingPeriod": billing_period},
            what=f"unbilled {'usage' if usage else 'reconciliation'} {currency_code} {billing_period}"))

    def iter_rows(self, manifest: Manifest) -> Iterator[dict[str, Any]]:
        """Every row of every blob, in blob-name order, streamed."""
        for blob in manifest.blobs:
            yield from self.iter_blob_rows(manifest, blob)

    def iter_blob_rows(self, manifest: Manifest, blob: BlobRef) -> Iterator[dict[str, Any]]:
        """A blob's rows; a read that breaks off is started again and the rows already handed
        out are skipped (blobs are immutable), so the caller sees each row once."""
        transport = self._transport
        url = manifest.blob_url(blob)
        delivered = 0
        attempt = 0
        while True:
            attempt += 1
            response, _ = self._call("GET", url, dialect=_BLOB, authorize=False, stream=True)
            seen = 0
            try:
                chunks = response.iter_content(chunk_size=self._chunk_bytes)
                # numbers as Decimal, from the text: unit prices have more digits than a float keeps
                for row in iter_gzip_json_lines(chunks, max_line_bytes=self._max_line_bytes, parse_float=Decimal):
                    seen += 1
                    if seen > delivered:
                        delivered = seen
                        yield row
                return
            except TRANSIENT_EXCEPTIONS as exc:
                if attempt >= self._max_blob_attempts:
                    raise GraphServiceError(
                        f"blob {blob.name} broke off after {delivered} row(s), {attempt} attempt(s): "
                        f"{type(exc).__name__}", url=_safe_url(url)) from exc
                delay = transport.retry.backoff(attempt, transport.rng)
                self.stats.add(retries=1)
                log.warning("blob %s broke off after %d row(s) (%s); re-reading in %.2fs", blob.name, delivered,
                            type(exc).__name__, delay)
                transport.sleep(delay)
            finally:
                response.close()

    # -- internals -----------------------------------------------------------------------------

    def _absolute(self, url: str) -> str:
        url = url.strip()
        if url.startswith("/"):
            return self._base_url + url
        return url

    def _check_origin(self, url: str) -> None:
        if not self._on_origin(url):
            parts = urlsplit(url)
            raise GraphBillingError(f"refusing to send the Graph token to another origin: {parts.scheme}://{parts.netloc}")

    def _call(self, method: str, url: str, *, dialect: Dialect = _API, json_body: Any = None, authorize: bool = True,
              stream: bool = False, expect: Callable[[Any], str | None] | None = None) -> tuple[requests.Response, Any]:
        """One logical call through the transport: a 2xx response and its decoded body (None when
        streamed), or the dialect's typed error."""
        if authorize:
            self._check_origin(url)
        request_id = str(uuid.uuid4())
        call = Call(
            method, url, target=_safe_url(url), request_id=request_id,
            headers={"Accept": "application/json", "client-request-id": request_id},
            body=json_body, token=self._token_source.graph_token if authorize else None,
            replay_safe=True,  # reads, and POST export: a duplicate export operation costs nothing
            stream=stream, allow_empty=method == "POST",  # 202 Accepted has no body
            expect=expect,  # an answer that is not what was asked for is retried, then fails
        )
        return self._transport.send(call, dialect, self.stats)


def _safe_url(url: str) -> str:
    """The URL without its query (a blob URL's query is the SAS)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _json_object(body: Any, url: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GraphBillingError(f"expected a JSON object from {_safe_url(url)}")
    return body


__all__ = [
    "BILLED_RECONCILIATION_EXPORT", "BILLED_USAGE_EXPORT", "BlobRef", "UNBILLED_RECONCILIATION_EXPORT",
    "UNBILLED_USAGE_EXPORT", "ExportOperation", "GraphBillingClient", "Manifest", "manifest_problem",
    "operation_problem", "parse_operation",
]
