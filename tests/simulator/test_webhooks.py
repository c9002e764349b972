"""Webhook registration and signed delivery, verified the way Microsoft documents it."""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from conftest import PartnerCenterClient, app_only_token, assert_same_shape, load_sample


@pytest.fixture
def callback():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/webhooks/partner-center", received
    server.shutdown()
    server.server_close()


def test_registration_and_signed_delivery(fresh_sim, callback):
    sim = fresh_sim
    url, received = callback
    client = PartnerCenterClient(sim, app_only_token(sim))
    assert "subscription-updated" in client.get("/webhooks/v1/registration/events").json()
    assert client.get("/webhooks/v1/registration").status_code == 404
    created = client.post("/webhooks/v1/registration",
                          json={"WebhookUrl": url, "WebhookEvents": ["subscription-updated", "test-created"]})
    assert created.status_code == 200
    assert_same_shape(load_sample("webhook-registration-response.json"), created.json())
    assert client.post("/webhooks/v1/registration", json={"WebhookUrl": url, "WebhookEvents": ["test-created"]}
                       ).status_code == 409

    customer = sim.control.customers()[0]["id"]
    resource = f"{sim.partner_center_url}/webhooks/v1/customers/{customer}/subscriptions/abc"
    delivery = sim.control.send_webhook("subscription-updated", resource)
    assert delivery["delivered"] and delivery["status"] == 200
    headers, body = received[-1]
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["x-ms-signature-algorithm"] == "rsa-sha256"
    scheme, signature = headers["authorization"].split(" ", 1)
    assert scheme == "Signature"

    # Download the certificate from the header URL, check chain and organisation, verify.
    cert_pem = sim.session().get(headers["x-ms-certificate-url"]).content
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Microsoft Corporation"
    with open(sim.ca_bundle, "rb") as fh:
        ca = x509.load_pem_x509_certificate(fh.read())
    cert.verify_directly_issued_by(ca)
    cert.public_key().verify(base64.b64decode(signature), body, padding.PKCS1v15(), hashes.SHA256())
    assert_same_shape(load_sample("webhook-callback-test-created.json"), __import__("json").loads(body))

    # validation event goes to the same callback
    validation = client.post("/webhooks/v1/registration/validationEvents")
    status = client.get(f"/webhooks/v1/registration/validationEvents/{validation.json()['correlationId']}").json()
    assert_same_shape(load_sample("webhook-validation-event-status.json"), status)
    assert status["results"][0]["responseCode"] == "OK"
    assert len(received) == 2


def test_unregistered_event_is_refused(fresh_sim):
    with pytest.raises(Exception, match="409"):
        fresh_sim.control.send_webhook("invoice-ready", "https://example.test/v1/invoices/G1")
