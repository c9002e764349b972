"""The HTTPS server: one origin, every service routed by path, faults and throttling applied
to the APIs under test before their handlers run."""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from simulator.certs import generate_key_material
from simulator.clock import SimulatorClock, parse_iso
from simulator.config import SimulatorConfig
from simulator.billing_control import BillingControl
from simulator.control import Control
from simulator.control_2026 import Control2026
from simulator.entra import Entra
from simulator.faults import MALFORMED, RESET, SERVER_ERROR, TOO_MANY, TRUNCATE, FaultInjector
from simulator.graph_billing import BLOB_SERVICE, GraphBilling, graph_error
from simulator.invoices import Invoices
from simulator.keyvault import KeyVault
from simulator.mfa import MfaReports
from simulator.partner_center import PartnerCenter
from simulator.pc_common import PartnerCenterAuth, api_fault
from simulator.state import SimulatorState
from simulator.throttle import Throttle
from simulator.upstream import Upstream
from simulator.tokens import TokenIssuer
from simulator.web import (
    MAX_BODY_BYTES,
    CaseInsensitiveDict,
    HttpError,
    Request,
    Response,
    Router,
    html_response,
    json_response,
)
from simulator.audit import AuditRecords
from simulator.webhooks import Webhooks

log = logging.getLogger("simulator")
PARTNER_CENTER_HEADERS_SERVICES = ("partner_center", "webhooks")
THROTTLED_SERVICES = ("partner_center",)


def _ms_cv() -> str:
    return base64.b64encode(os.urandom(12)).decode() + ".0"


class Simulator:
    """Owns the state and the routing; independent of the socket layer."""

    def __init__(self, config: SimulatorConfig, base_url: str, keys, blob_url: str | None = None):
        self.config, self.base_url, self.keys = config, base_url, keys
        # Export blobs live on their own storage host, as Graph's do (an ADLS account, not graph.microsoft.com).
        self.blob_url = blob_url or base_url
        start = parse_iso(config.start_time) if config.start_time else None
        self.clock = SimulatorClock(start)
        self.state = SimulatorState(config, self.clock)
        self.issuer = TokenIssuer(self.state, keys.jwt_key, base_url)
        self.faults = FaultInjector(config)
        self.throttle = Throttle(config.rate_limit_per_minute, config.effective_customer_rate_limit)
        self.router = Router()
        pc_auth = PartnerCenterAuth(self.state, self.issuer)
        self.entra = Entra(self.state, self.issuer, base_url)
        self.webhooks = Webhooks(self.state, pc_auth, keys, base_url)
        # Order matters: fixed paths are registered before the catch-all /{tenant}/... routes.
        billing = BillingControl(self.state)
        billing.register(self.router)
        Control(self.state, self.entra, self.faults, self.throttle, self.webhooks, keys.webhook_cert_pem,
                self.info(), billing).register(self.router)
        Control2026(self.state).register(self.router)
        Upstream(self.state, self.webhooks, base_url).register(self.router)
        PartnerCenter(self.state, pc_auth, self.faults).register(self.router)
        AuditRecords(self.state, pc_auth).register(self.router)
        Invoices(self.state, pc_auth).register(self.router)
        MfaReports(self.state, pc_auth).register(self.router)
        self.webhooks.register(self.router)
        GraphBilling(self.state, self.issuer, base_url, self.blob_url).register(self.router)
        KeyVault(self.state, self.issuer, base_url, base_url).register(self.router)
        self.entra.register(self.router)

    def info(self) -> dict:
        state = self.state
        return {
            "partner_center_url": self.base_url, "authority_host": self.base_url, "graph_url": self.base_url,
            "key_vault_url": self.base_url, "control_url": f"{self.base_url}/_sim", "ca_bundle": self.keys.ca_bundle,
            "tenant_id": state.partner.tenant_id, "client_id": state.app.client_id,
            "client_secret": state.app.client_secret, "integration_user": state.user.upn,
            "port": int(self.base_url.rsplit(":", 1)[1]), "blob_url": self.blob_url,
        }

    def handle(self, req: Request, listener: str = "main") -> tuple[Response, str | None]:
        """Returns the response and an optional transport fault (reset or truncate). The blob
        listener serves the blob service only, and the main listener everything else."""
        route, params, path_known = self.router.match(req.method, req.path)
        if route is not None and (route.service == BLOB_SERVICE) != (listener == BLOB_SERVICE) \
                and self.blob_url != self.base_url:
            route, path_known = None, False
        if route is None:
            return self._unknown(req, path_known), None
        req.params = params
        service = route.service
        decision = self.faults.decide(service)
        if decision.latency_seconds:
            time.sleep(decision.latency_seconds)
        transport_fault = decision.action if decision.action in (RESET, TRUNCATE) else None
        throttled = faulted = False
        if decision.action == RESET:
            response, faulted = Response(0), True
        elif decision.action == SERVER_ERROR:
            response, faulted = self._server_busy(service), True
        elif decision.action == TOO_MANY:
            # Short on purpose: clients under test honour Retry-After with real sleeps.
            response, throttled, faulted = self._too_many(1), True, True
        else:
            retry_after = self.throttle.acquire(params.get("customer_id")) if service in THROTTLED_SERVICES else None
            if retry_after is not None:
                response, throttled = self._too_many(retry_after), True
            else:
                response = self._run(route.handler, req)
                if decision.action == MALFORMED and req.method == "GET" and 200 <= response.status < 300:
                    response, faulted = self._malformed(), True
        if service in PARTNER_CENTER_HEADERS_SERVICES:
            self._add_partner_center_headers(req, response)
        if service != "control":
            self.state.record_call(route.counter_key, response.status, throttled, faulted or bool(transport_fault))
        return response, transport_fault

    @staticmethod
    def _run(handler, req: Request) -> Response:
        try:
            return handler(req)
        except HttpError as err:
            return err.response
        except Exception:   # a simulator bug must still answer, without leaking request data
            log.error("simulator handler failed for %s %s\n%s", req.method, req.path, traceback.format_exc())
            return json_response(500, {"code": 0, "description": "Simulator internal error", "data": [],
                                       "source": "Simulator"})

    def _unknown(self, req: Request, path_known: bool) -> Response:
        status = 405 if path_known else 404
        if req.path.startswith("/v1.0/"):
            return graph_error(status, "NotFound" if status == 404 else "MethodNotAllowed", f"{req.method} {req.path}")
        if req.path.startswith(("/v1/", "/webhooks/")):
            response = api_fault(status, 1000 if status == 404 else 0,
                                 "Not found" if status == 404 else "Method not allowed")
            self._add_partner_center_headers(req, response)
            return response
        return json_response(status, {"error": {"code": "NotFound" if status == 404 else "MethodNotAllowed",
                                                "message": f"{req.method} {req.path} is not served by the simulator"}})

    def _malformed(self) -> Response:
        """A 200 that is not what was asked for (the fault_malformed knob picks one of these)."""
        kind = self.faults.pick(("error", "html", "empty", "no_items"))
        if kind == "error":
            return json_response(200, {"error": {"code": "InternalError", "message": "Something went wrong."}})
        if kind == "html":
            return html_response(200, "<html><body><h1>Service Unavailable</h1></body></html>")
        if kind == "empty":
            return Response(200, b"", [("Content-Type", "application/json")])
        return json_response(200, {"totalCount": 0, "attributes": {"objectType": "Collection"}})

    @staticmethod
    def _server_busy(service: str) -> Response:
        if service == "graph":
            return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable.")
        return api_fault(503, 0, "The service is temporarily unavailable. Please retry.", source="PartnerFD")

    @staticmethod
    def _too_many(retry_after: int) -> Response:
        return json_response(429, {"statusCode": 429,
                                   "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."},
                             headers=[("Retry-After", str(retry_after))], content_type="application/json")

    @staticmethod
    def _add_partner_center_headers(req: Request, response: Response) -> None:
        response.headers += [
            ("MS-RequestId", req.headers.get("MS-RequestId") or str(uuid.uuid4())),
            ("MS-CorrelationId", req.headers.get("MS-CorrelationId") or str(uuid.uuid4())),
            ("MS-CV", _ms_cv()), ("MS-ServerId", "0000SIM1"),
            ("Request-Context", "appId=cid-v1:00000000-0000-0000-0000-0000000051d1"),
        ]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pcsync-simulator"
    def version_string(self):
        return self.server_version

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def log_message(self, fmt, *args):
        # Only method and path are logged: query strings and bodies may carry codes or secrets.
        if self.server.verbose:
            log.info("%s %s", self.command, self.path.split("?", 1)[0])

    def _read_body(self) -> bytes | None:
        """Content-Length or chunked request bodies; None when the framing is unusable."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                try:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    return None
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > MAX_BODY_BYTES:
                    return None
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            return None
        if size < 0 or size > MAX_BODY_BYTES:
            return None
        return self.rfile.read(size) if size else b""

    def _dispatch(self):
        body = self._read_body()
        if body is None:
            self._write(json_response(400, {"error": {"code": "BadRequest",
                                                      "message": "Invalid or oversized request body framing"}}))
            self.close_connection = True
            return
        req = Request(method=self.command, target=self.path,
                      headers=CaseInsensitiveDict(self.headers.items()), body=body,
                      base_url=self.server.simulator.base_url)
        response, transport_fault = self.server.simulator.handle(req, self.server.listener)
        if transport_fault == RESET:
            self._reset()
        else:
            self._write(response, truncate=transport_fault == TRUNCATE)

    def _reset(self):
        """Close without answering; SO_LINGER 0 makes the client see a connection reset."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def _write(self, response: Response, truncate: bool = False):
        self.send_response(response.status, response.reason)
        for key, value in response.headers:
            if key.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(key, value)
        if response.stream is not None and self.command != "HEAD":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in response.stream:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.close_connection = True
            return
        body = response.body or b""
        if truncate and body:
            # Promise the whole body, send half, then hang up: the client sees an incomplete read.
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients hanging up mid-request (resets, probes, TLS failures) are normal here.
        log.debug("connection error from %s", client_address, exc_info=True)


class SimulatorServer:
    """Binds the socket, generates key material, serves on a background thread or the caller's."""

    def __init__(self, config: SimulatorConfig | None = None, *, keys=None):
        # A private copy: runtime knob changes must not leak into the caller's object.
        self.config = dataclasses.replace(config) if config else SimulatorConfig()
        self._tempdir = tempfile.mkdtemp(prefix="pcsync-sim-")
        try:
            # given keys (simulator.persistence keeps them across restarts) or fresh ones
            self.keys = keys or generate_key_material(self._tempdir)
            self.httpd = _HttpsServer((self.config.host, self.config.port), _RequestHandler)
            self.blob_httpd = _HttpsServer((self.config.host, 0), _RequestHandler)
        except Exception:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            raise
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.keys.ca_bundle, self.keys.server_key_path)
        self.base_url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        blob_url = f"https://127.0.0.1:{self.blob_httpd.server_address[1]}"
        self.simulator = Simulator(self.config, self.base_url, self.keys, blob_url)
        for httpd, listener in ((self.httpd, "main"), (self.blob_httpd, BLOB_SERVICE)):
            # Handshake in the worker thread (on first read), not in the accept loop.
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
            httpd.simulator, httpd.listener, httpd.verbose = self.simulator, listener, self.config.verbose
        self._threads: list[threading.Thread] = []

    def info(self) -> dict:
        return self.simulator.info()

    def start_background(self) -> "SimulatorServer":
        # A short poll interval keeps stop() fast (tests start and stop many simulators).
        for httpd, name in ((self.httpd, "pcsync-simulator"), (self.blob_httpd, "pcsync-simulator-blobs")):
            thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def serve_forever(self) -> None:
        blobs = threading.Thread(target=self.blob_httpd.serve_forever, name="pcsync-simulator-blobs", daemon=True)
        blobs.start()
        self._threads.append(blobs)
        self.httpd.serve_forever()

    def stop(self) -> None:
        for httpd in (self.httpd, self.blob_httpd):
            httpd.shutdown()
            httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        shutil.rmtree(self._tempdir, ignore_errors=True)
