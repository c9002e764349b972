"""Microsoft Graph billing reconciliation export (v2): export -> operation -> manifest -> blobs.

Blobs are gzip-compressed JSON Lines produced while they are sent (chunked transfer), so a
million-row export never exists in memory.
"""
from __future__ import annotations

import datetime as dt
import math
import secrets
import uuid
import zlib
from typing import Iterator

from simulator.clock import iso
from simulator.data import GRAPH_BILLING_PERMISSION, GRAPH_RESOURCE
from simulator.jsontext import dumps_rows
from simulator.line_items import DAILY_RATED_USAGE, ONETIME_BILLING, LineItemStream
from simulator.state import SimulatorState
from simulator.tokens import TokenIssuer
from simulator.web import HttpError, Request, Response, Router, json_response

SERVICE = "graph"
BLOB_SERVICE = "blobs"
_OPS = "/v1.0/reports/partners/billing/operations"
_MANIFESTS = "/v1.0/reports/partners/billing/manifests"
_EXPORTS = {  # path suffix -> (stream kind, billed?)
    "reconciliation/billed": (ONETIME_BILLING, True),
    "reconciliation/unbilled": (ONETIME_BILLING, False),
    "usage/billed": (DAILY_RATED_USAGE, True),
    "usage/unbilled": (DAILY_RATED_USAGE, False),
}
ROWS_PER_CHUNK = 500
BLOB_ROOT = "/billingexports/v1"   # on the storage host (blob_url), never on the Graph host


def graph_error(status: int, code: str, message: str, headers=()) -> Response:
    return json_response(status, {"error": {"code": code, "message": message,
                                            "innerError": {"request-id": str(uuid.uuid4()),
                                                           "client-request-id": str(uuid.uuid4())}}},
                         headers=headers)


class GraphBilling:
    def __init__(self, state: SimulatorState, issuer: TokenIssuer, base_url: str, blob_url: str | None = None):
        self.state, self.issuer, self.base_url = state, issuer, base_url
        self.blob_url = blob_url or base_url

    def register(self, router: Router) -> None:
        for suffix in _EXPORTS:
            router.add("POST", f"/v1.0/reports/partners/billing/{suffix}/export",
                       lambda req, suffix=suffix: self.start_export(req, suffix), SERVICE)
        router.add("GET", _OPS + "/{operation_id}", self.get_operation, SERVICE)
        router.add("GET", _MANIFESTS + "/{manifest_id}", self.get_manifest, SERVICE)
        router.add("GET", BLOB_ROOT + "/{manifest_id}/{blob_name}", self.get_blob, BLOB_SERVICE)

    def _authorize(self, req: Request) -> None:
        token = req.bearer_token()
        principal = self.issuer.validate(token, [GRAPH_RESOURCE, GRAPH_RESOURCE + "/",
                                                 "00000003-0000-0000-c000-000000000000"]) if token else None
        if principal is None:
            raise HttpError(graph_error(401, "InvalidAuthenticationToken", "Access token is empty, invalid or expired.",
                                        headers=[("WWW-Authenticate", 'Bearer realm="", error="invalid_token"')]))
        granted_in_token = GRAPH_BILLING_PERMISSION in (principal.roles if principal.app_only else principal.scopes)
        with self.state.lock:
            current = self.state.app.graph_application_permissions if principal.app_only \
                else self.state.app.graph_delegated_permissions
            granted_now = GRAPH_BILLING_PERMISSION in current
        if not (granted_in_token and granted_now):
            raise HttpError(graph_error(403, "Forbidden", f"Missing permission {GRAPH_BILLING_PERMISSION}: "
                                                          f"the caller is not authorized to perform this action."))

    def start_export(self, req: Request, suffix: str) -> Response:
        self._authorize(req)
        kind, billed = _EXPORTS[suffix]
        body = req.json()
        if not isinstance(body, dict):
            return graph_error(400, "BadRequest", "The request body must be a JSON object.")
        attribute_set = str(body.get("attributeSet", "full"))
        if attribute_set.lower() not in ("full", "basic"):
            return graph_error(400, "BadRequest", "attributeSet must be 'full' or 'basic'.")
        if billed:
            invoice_id = body.get("invoiceId")
            if not isinstance(invoice_id, str) or not invoice_id:
                return graph_error(400, "BadRequest", "invoiceId is required.")
            target = {"invoiceId": invoice_id}
        else:
            currency, period = body.get("currencyCode"), str(body.get("billingPeriod", "")).lower()
            if not isinstance(currency, str) or len(currency) != 3 or period not in ("current", "last"):
                return graph_error(400, "BadRequest", "currencyCode (ISO 4217) and billingPeriod (current|last) "
                                                      "are required.")
            target = {"currencyCode": currency.upper(), "billingPeriod": period}
        operation_id = str(uuid.uuid4())
        with self.state.lock:
            self.state.export_operations[operation_id] = {
                "id": operation_id, "kind": kind, "billed": billed, "target": target,
                "attributeSet": attribute_set.lower(), "createdDateTime": iso(self.state.clock.now()), "polls": 0,
                "manifest_id": None}
        location = f"{self.base_url}{_OPS}/{operation_id}"
        return Response(202, b"", [("Location", location), ("Retry-After", str(self.state.config.export_retry_after_seconds))])

    def _stream(self, op: dict) -> LineItemStream | None:
        if op["billed"]:
            invoice = self.state.invoice(op["target"]["invoiceId"])
            if invoice is None or not invoice.is_new_commerce:
                return None
            return self.state.invoice_stream(invoice, op["kind"])
        period = "current" if op["target"]["billingPeriod"] == "current" else "previous"
        return self.state.unbilled_stream(op["kind"], period, op["target"]["currencyCode"])

    def get_operation(self, req: Request) -> Response:
        self._authorize(req)
        with self.state.lock:
            op = self.state.export_operations.get(req.params["operation_id"])
            if op is None:
                return graph_error(404, "NotFound", "The operation was not found or has expired.")
            op["polls"] += 1
            polls = op["polls"]
        body = {"id": op["id"], "status": "running", "createdDateTime": op["createdDateTime"],
                "lastActionDateTime": iso(self.state.clock.now())}
        running_polls = int(self.state.config.export_running_polls)
        if polls <= running_polls:
            return json_response(200, {"@odata.type": "#microsoft.graph.partners.billing.runningOperation", **body},
                                 headers=[("Retry-After", str(self.state.config.export_retry_after_seconds))])
        stream = self._stream(op)
        not_ready = self._usage_not_ready(op) if stream is not None else None
        if stream is None or not_ready == "5000":
            return self._no_data(op, body)
        with self.state.lock:
            if op["manifest_id"] is None:
                op["manifest_id"] = self._create_manifest(op, stream, empty=not_ready == "empty")
            manifest_id = op["manifest_id"]
        return json_response(200, {"@odata.type": "#microsoft.graph.partners.billing.exportSuccessOperation", **body,
                                   "status": "succeeded",
                                   "resourceLocation@odata.navigationLink": f"{self.base_url}{_MANIFESTS}/{manifest_id}"})

    def _usage_not_ready(self, op: dict) -> str | None:
        """How a billed usage export answers before its invoice's usage file exists: the plan's
        ``usageNotReady`` ("5000": failed operation; "empty": a manifest without blobs), else None."""
        if op["kind"] != DAILY_RATED_USAGE or not op["billed"]:
            return None
        plan = self.state.billing_plan(self.state.invoice(op["target"]["invoiceId"]).id)
        return None if plan.usage_available(self.state.clock.now()) else plan.usage_not_ready

    @staticmethod
    def _no_data(op: dict, body: dict) -> Response:
        invoice_id = op["target"].get("invoiceId", "")
        what = "usage" if op["kind"] == DAILY_RATED_USAGE else "reconciliation"
        return json_response(200, {"@odata.type": "#microsoft.graph.partners.billing.failedOperation", **body,
                                   "status": "failed",
                                   "error": {"code": "5000", "message": f"No {what} data available currently for "
                                                                        f"Invoice {invoice_id}. Please try again later."}})

    def _create_manifest(self, op: dict, stream: LineItemStream, empty: bool = False) -> str:
        manifest_id = str(uuid.uuid4())
        per_blob = self.state.config.export_items_per_blob
        blob_count = math.ceil(stream.count / per_blob) if stream.count and not empty else 0
        run = uuid.uuid4()
        blobs = [{"name": f"part-{index:05d}-{run}.c000.json.gz", "partitionValue": "default",
                  "start": index * per_blob, "stop": min(stream.count, (index + 1) * per_blob)}
                 for index in range(blob_count)]
        self.state.export_manifests[manifest_id] = {"op": op, "blobs": blobs, "created": iso(self.state.clock.now()),
                                                    "etag": secrets.token_urlsafe(12)}
        return manifest_id

    def get_manifest(self, req: Request) -> Response:
        self._authorize(req)
        manifest_id = req.params["manifest_id"]
        with self.state.lock:
            manifest = self.state.export_manifests.get(manifest_id)
        if manifest is None:
            return graph_error(404, "NotFound", "The manifest was not found or has expired.")
        stamp = self.state.clock.now()
        expiry = iso(stamp.replace(microsecond=0) + dt.timedelta(hours=12))
        return json_response(200, {
            "id": manifest_id, "schemaVersion": "2", "dataFormat": "compressedJSONLines",
            "createdDateTime": manifest["created"], "eTag": manifest["etag"],
            "partnerTenantId": self.state.partner.tenant_id,
            "rootDirectory": f"{self.blob_url}{BLOB_ROOT}/{manifest_id}",
            "sasToken": f"skoid={uuid.uuid4()}&sktid={self.state.partner.tenant_id}&sv=2021-08-06"
                        f"&se={expiry.replace(':', '%3A')}&sr=d&sp=rl&sdd=2&sig=simulated%2Fsignature%3D",
            "partitionType": "Default", "blobCount": len(manifest["blobs"]),
            "blobs": [{"name": b["name"], "partitionValue": b["partitionValue"]} for b in manifest["blobs"]],
        })

    def get_blob(self, req: Request) -> Response:
        if not req.query.get("sig"):
            return Response(403, b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed"
                                 b"</Code><Message>Server failed to authenticate the request. A SAS token is "
                                 b"required.</Message></Error>", [("Content-Type", "application/xml")])
        with self.state.lock:
            manifest = self.state.export_manifests.get(req.params["manifest_id"])
        blob = next((b for b in (manifest or {}).get("blobs", []) if b["name"] == req.params["blob_name"]), None)
        if blob is None:
            return Response(404, b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code>"
                                 b"<Message>The specified blob does not exist.</Message></Error>",
                            [("Content-Type", "application/xml")])
        stream = self._stream(manifest["op"])
        return Response(200, headers=[("Content-Type", "application/octet-stream"), ("x-ms-blob-type", "BlockBlob"),
                                      ("x-ms-version", "2021-08-06")],
                        stream=gzip_json_lines(stream, blob["start"], blob["stop"], manifest["op"]["attributeSet"]))


def gzip_json_lines(stream: LineItemStream, start: int, stop: int, attribute_set: str = "full") -> Iterator[bytes]:
    """Yield gzip bytes for rows [start, stop) of the export, a few hundred rows at a time. Rows
    are written as JSON text from their Decimal values (no float)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)   # wbits=31: gzip container
    for chunk_start in range(start, stop, ROWS_PER_CHUNK):
        text = dumps_rows(stream.export_row(i, attribute_set)
                          for i in range(chunk_start, min(stop, chunk_start + ROWS_PER_CHUNK)))
        data = compressor.compress((text + "\n").encode("utf-8"))
        if data:
            yield data
    yield compressor.flush()
