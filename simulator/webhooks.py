"""Partner Center webhook registration API and signed event delivery to the callback URL."""
from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from simulator.certs import KeyMaterial
from simulator.pc_common import PartnerCenterAuth, fail, lower_keys, read_json
from simulator.state import SimulatorState
from simulator.web import Request, Response, Router, json_response, route

SERVICE = "webhooks"
SUPPORTED_EVENTS = ["test-created", "subscription-updated", "usagerecords-thresholdExceeded", "referral-created",
                    "referral-updated", "invoice-ready", "customer-created"]
CERT_PATH = "/_sim/webhook-cert.cer"
DELIVERY_TIMEOUT_SECONDS = 10


def _event_time() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0+00:00")


class Webhooks:
    def __init__(self, state: SimulatorState, auth: PartnerCenterAuth, keys: KeyMaterial, base_url: str):
        self.state, self.auth, self.keys, self.base_url = state, auth, keys, base_url
        self._send_lock = threading.Lock()

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

    # ---- registration API ---------------------------------------------------------------
    @route("GET", "/webhooks/v1/registration/events")
    def list_events(self, req: Request) -> Response:
        self.auth.require(req)
        return json_response(200, SUPPORTED_EVENTS)

    @staticmethod
    def _parse_registration(req: Request) -> tuple[str, list[str], bool]:
        body = read_json(req)
        data = lower_keys(body) if isinstance(body, dict) else {}
        url, events = data.get("webhookurl"), data.get("webhookevents")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise fail(400, 2000, "WebhookUrl must be an absolute http(s) URL.", ["WebhookUrl"])
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise fail(400, 2000, "WebhookEvents must be a non-empty list of event names.", ["WebhookEvents"])
        known = {e.lower(): e for e in SUPPORTED_EVENTS}
        unknown = [e for e in events if e.lower() not in known]
        if unknown:
            raise fail(400, 2000, f"Unsupported webhook events: {', '.join(unknown)}.", unknown)
        return url, [known[e.lower()] for e in events], bool(data.get("signaturetokentomssignatureheader", False))

    @staticmethod
    def _render(registration: dict) -> dict:
        return {"SubscriberId": registration["SubscriberId"], "WebhookUrl": registration["WebhookUrl"],
                "WebhookEvents": list(registration["WebhookEvents"]),
                "SignatureTokenToMsSignatureHeader": registration["SignatureTokenToMsSignatureHeader"]}

    @route("GET", "/webhooks/v1/registration")
    def get_registration(self, req: Request) -> Response:
        self.auth.require(req)
        with self.state.lock:
            registration = self.state.webhook_registration
        if registration is None:
            raise fail(404, 1000, "Not found: no webhook registration exists for this partner.")
        return json_response(200, self._render(registration))

    @route("POST", "/webhooks/v1/registration")
    def create_registration(self, req: Request) -> Response:
        self.auth.require(req)
        url, events, ms_header = self._parse_registration(req)
        with self.state.lock:
            if self.state.webhook_registration is not None:
                raise fail(409, 2000, "A webhook registration already exists; update it with PUT.")
            self.state.webhook_registration = {"SubscriberId": str(uuid.uuid4()), "WebhookUrl": url,
                                               "WebhookEvents": events, "SignatureTokenToMsSignatureHeader": ms_header}
            return json_response(200, self._render(self.state.webhook_registration))

    @route("PUT", "/webhooks/v1/registration")
    def update_registration(self, req: Request) -> Response:
        self.auth.require(req)
        url, events, ms_header = self._parse_registration(req)
        with self.state.lock:
            current = self.state.webhook_registration or {"SubscriberId": str(uuid.uuid4())}
            current.update({"WebhookUrl": url, "WebhookEvents": events, "SignatureTokenToMsSignatureHeader": ms_header})
            self.state.webhook_registration = current
            return json_response(200, self._render(current))

    @route("DELETE", "/webhooks/v1/registration")
    def delete_registration(self, req: Request) -> Response:
        self.auth.require(req)
        with self.state.lock:
            existed, self.state.webhook_registration = self.state.webhook_registration is not None, None
        if not existed:
            raise fail(404, 1000, "Not found: no webhook registration exists for this partner.")
        return Response(204)

    @route("POST", "/webhooks/v1/registration/validationEvents")
    def create_validation_event(self, req: Request) -> Response:
        self.auth.require(req)
        with self.state.lock:
            registration = self.state.webhook_registration
        if registration is None or "test-created" not in registration["WebhookEvents"]:
            raise fail(400, 2000, "Register for the test-created event before requesting a validation event.")
        correlation_id = str(uuid.uuid4())
        delivery = self.deliver({"EventName": "test-created",
                                 "ResourceUri": f"{self.base_url}/webhooks/v1/registration/validationEvents/{correlation_id}",
                                 "ResourceName": "test", "AuditUri": None, "ResourceChangeUtcDate": _event_time()})
        result = {"responseCode": delivery.get("reason") or "Error", "responseMessage": delivery.get("error", ""),
                  "systemError": delivery.get("status") is None,
                  "dateTimeUtc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0")}
        with self.state.lock:
            self.state.webhook_validations[correlation_id] = {
                "correlationId": correlation_id, "partnerId": self.state.partner.tenant_id, "status": "completed",
                "callbackUrl": registration["WebhookUrl"], "results": [result]}
        return json_response(200, {"correlationId": correlation_id})

    @route("GET", "/webhooks/v1/registration/validationEvents/{correlation_id}")
    def get_validation_event(self, req: Request) -> Response:
        self.auth.require(req)
        with self.state.lock:
            found = self.state.webhook_validations.get(req.params["correlation_id"])
        if found is None:
            raise fail(404, 1000, "Not found")
        return json_response(200, found)

    # ---- delivery -----------------------------------------------------------------------
    def sign(self, body: bytes) -> str:
        signature = self.keys.webhook_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()

    def deliver(self, event: dict) -> dict:
        """POST the event to the registered callback; returns a delivery record."""
        with self.state.lock:
            registration = dict(self.state.webhook_registration or {})
        if not registration:
            raise ValueError("no webhook registration exists")
        body = json.dumps(event, separators=(",", ":")).encode("utf-8")
        signature = f"Signature {self.sign(body)}"
        headers = {"Content-Type": "application/json", "x-ms-certificate-url": f"{self.base_url}{CERT_PATH}",
                   "x-ms-signature-algorithm": "rsa-sha256"}
        if registration.get("SignatureTokenToMsSignatureHeader"):
            headers["x-ms-signature"] = signature
        else:
            headers["Authorization"] = signature
        record = {"event": event, "url": registration["WebhookUrl"], "status": None}
        session = requests.Session()
        session.trust_env = False   # REQUESTS_CA_BUNDLE would override verify on this machine
        session.verify = self.keys.ca_bundle
        try:
            with self._send_lock:
                response = session.post(registration["WebhookUrl"], data=body, headers=headers,
                                        timeout=DELIVERY_TIMEOUT_SECONDS)
            record.update(status=response.status_code, reason=response.reason)
        except requests.RequestException as exc:
            record["error"] = type(exc).__name__
        finally:
            session.close()
        with self.state.lock:
            self.state.webhook_deliveries.append(record)
            del self.state.webhook_deliveries[:-200]   # keep the log bounded
        return record

    def send_event(self, payload: dict) -> dict:
        """Control API: fill in the documented event fields and deliver if registered."""
        data = {k.lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
        name, resource_uri = data.get("eventname"), data.get("resourceuri")
        if not isinstance(name, str) or not name or not isinstance(resource_uri, str):
            raise ValueError("EventName and ResourceUri are required strings")
        with self.state.lock:
            registration = self.state.webhook_registration
            registered = registration is not None and name.lower() in {e.lower() for e in registration["WebhookEvents"]}
        if not registered:
            raise LookupError(f"no webhook registration for event {name!r}")
        event = {"EventName": name, "ResourceUri": resource_uri,
                 "ResourceName": data.get("resourcename") or name.split("-")[0],
                 "AuditUri": data.get("audituri"), "ResourceChangeUtcDate": data.get("resourcechangeutcdate") or _event_time()}
        return self.deliver(event)
