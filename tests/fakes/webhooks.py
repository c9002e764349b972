"""Helpers for the webhook tests: a local CA and signing certificates, signed requests, a tiny
HTTP server that captures what the simulator delivers, and a Runtime that trusts the simulator's
certificate host."""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@dataclass
class Issued:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(cn: str, org: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
    if org:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


_KEYS: list[rsa.RSAPrivateKey] = []


def new_key() -> rsa.RSAPrivateKey:
    """2048-bit keys are slow to make; tests reuse a few."""
    if len(_KEYS) < 4:
        _KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _KEYS[-1]
    key = _KEYS.pop(0)
    _KEYS.append(key)
    return key


def make_ca(cn: str = "Test Root CA", *, issuer: Issued | None = None, org: str = "Microsoft Corporation",
            aia: str | None = None) -> Issued:
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(issuer.cert.subject if issuer else _name(cn, org))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=365))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    )
    if aia:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia))]), critical=False)
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


def make_leaf(ca: Issued, *, org: str | None = "Microsoft Corporation", not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None, aia: str | None = None) -> Issued:
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("pcnotifications-dispatch.microsoft.com", org))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=30))
        .not_valid_after(not_after or NOW + dt.timedelta(days=300))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if aia:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia))]), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def sign(key: rsa.RSAPrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def signed_headers(key: rsa.RSAPrivateKey, body: bytes, *, url: str = "https://certs.example.test/cert.cer",
                   algorithm: str = "rsa-sha256", ms_header: bool = False) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "x-ms-certificate-url": url,
               "x-ms-signature-algorithm": algorithm}
    headers["x-ms-signature" if ms_header else "Authorization"] = f"Signature {sign(key, body)}"
    return headers


# ---- capturing what the simulator delivers ------------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@contextlib.contextmanager
def capture_server(respond: Callable[[Delivery], tuple[int, bytes]] | None = None
                   ) -> Iterator[tuple[str, list[Delivery]]]:
    """A plain-HTTP server on 127.0.0.1 that records each POST and answers with ``respond``'s
    status and body (200 and nothing by default)."""
    received: list[Delivery] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            delivery = Delivery(self.path, {k: v for k, v in self.headers.items()}, body)
            received.append(delivery)
            status, answer = respond(delivery) if respond else (200, b"")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def webhook_runtime(sim, storage):
    """A Runtime on clean Azurite and the simulator (whose app settings already allow its own
    certificate host), with the app's client secret in the simulated Key Vault."""
    from devservices import build_simulator_runtime
    from tests.support import STORAGE_TEST_OPTIONS

    return build_simulator_runtime(sim, storage, storage_options=STORAGE_TEST_OPTIONS)


def consented_webhook_runtime(sim, storage, provider_id: str):
    """For fixtures (``yield from``): the webhook runtime, installed, with a consented provider."""
    from devservices import register_and_consent
    from bootstrap import install_services

    runtime = webhook_runtime(sim, storage)
    install_services(runtime)
    outcome = register_and_consent(runtime, sim, provider_id, name="Webhook partner")
    assert outcome.succeeded, outcome.message
    try:
        yield runtime
    finally:
        install_services(None)


def http_request(delivery: Delivery, *, provider: str | None = None, body: bytes | None = None):
    """The captured delivery as the ``func.HttpRequest`` the Functions host would build."""
    import azure.functions as func
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(delivery.path)
    route_provider = provider or parts.path.rstrip("/").rsplit("/", 1)[-1]
    return func.HttpRequest("POST", f"http://localhost{delivery.path}", headers=delivery.headers,
                            params=dict(parse_qsl(parts.query)), route_params={"provider": route_provider},
                            body=delivery.body if body is None else body)


# ---- the service's replay and binding stores, in memory ------------------------------------


class MemoryAcceptedEvents:
    """replay.AcceptedEvents in memory: {(provider, identity): accepted at}."""

    def __init__(self):
        self.claims: dict[tuple[str, str], object] = {}

    def claim(self, provider_id: str, identity: str, *, at) -> bool:
        if (provider_id, identity) in self.claims:
            return False
        self.claims[(provider_id, identity)] = at
        return True

    def release(self, provider_id: str, identity: str) -> None:
        self.claims.pop((provider_id, identity), None)


class FakeCustomers:
    """replay.CustomerDirectory: {provider id: set of customer ids}; records each question."""

    def __init__(self, customers: dict[str, set[str]] | None = None):
        self.customers = customers or {}
        self.asked: list[tuple[str, str]] = []

    def belongs(self, provider, customer_id: str) -> bool:
        self.asked.append((provider.id, customer_id))
        return customer_id in self.customers.get(provider.id, set())
