"""Partner Center webhook signatures: is this callback really from Microsoft?

Verification follows Microsoft's documented steps (partner-center-webhooks, "Authenticating the
callback"), failing closed at every one of them:

1. the headers are present: the signature (``Authorization: Signature <base64>``, or
   ``x-ms-signature`` when the registration asked for it), ``x-ms-certificate-url`` and
   ``x-ms-signature-algorithm`` (only ``rsa-sha256`` is accepted);
2. the certificate URL is https and its ``host[:port]`` is in ``settings.webhook_certificate_hosts``;
   no other URL from the request is ever fetched (an attacker-chosen URL would turn us into an
   SSRF proxy). The download uses a session that ignores proxy/CA environment variables, verifies
   TLS (``settings.ca_bundle`` or the default store), follows no redirects, times out quickly and
   stops reading at ``MAX_CERTIFICATE_BYTES``;
3. the certificate (PEM or DER) is valid now, and its chain ends at a trusted root: the
   certificates in ``settings.ca_bundle`` when that is set, otherwise the certifi bundle that
   ``requests`` trusts. The chain is built and checked by ``cryptography.x509.verification``
   (signatures, validity of every certificate, CA basic constraints, path length); intermediates
   come from extra certificates in the downloaded file or, for the real Microsoft certificate,
   from the Authority Information Access "CA Issuers" URL when its host is one of Microsoft's or
   DigiCert's fixed PKI hosts (``INTERMEDIATE_CERTIFICATE_HOSTS``). Not checked: revocation
   (CRL/OCSP), and extended key usage (the signing certificate carries no client/server EKU);
4. the subject Organization is ``Microsoft Corporation``;
5. the RSA PKCS#1 v1.5 SHA-256 signature verifies over the exact body bytes.

Certificates are cached per URL for ``CERTIFICATE_TTL`` (a failed download or a rejected
certificate for ``FAILED_DOWNLOAD_TTL``), so a burst of events costs one download.
"""
from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import certifi
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from shared.logging import get_logger
from shared.settings import Settings

from .errors import CertificateUnavailable, SignatureRejected

log = get_logger(__name__)

MAX_CERTIFICATE_BYTES = 32 * 1024
CERTIFICATE_TTL = 3600.0          # seconds a downloaded, chain-checked certificate is reused
FAILED_DOWNLOAD_TTL = 60.0        # seconds a failed download is remembered (no refetch storms)
MAX_CACHED_CERTIFICATES = 16
FETCH_TIMEOUT = (3.05, 5.0)       # connect, read (the whole callback must answer quickly)
SIGNATURE_ALGORITHM = "rsa-sha256"
REQUIRED_ORGANIZATION = "Microsoft Corporation"
MIN_RSA_KEY_BITS = 2048
# Hosts Microsoft and DigiCert publish issuing-CA certificates on (AIA "CA Issuers" URLs of the
# certificate Partner Center signs with). Fetched only to complete a chain that is then verified
# against the trust store; any other AIA host is ignored.
INTERMEDIATE_CERTIFICATE_HOSTS = frozenset({"www.microsoft.com", "caissuers.microsoft.com", "cacerts.digicert.com"})
MAX_INTERMEDIATE_FETCHES = 2

Fetch = Callable[[str], bytes]


def certificate_host(url: str) -> str:
    """``host[:port]`` of an https URL, lower-case; raises SignatureRejected for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SignatureRejected("x-ms-certificate-url is not a valid URL") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise SignatureRejected("x-ms-certificate-url must be an https URL")
    if parts.username or parts.password:
        raise SignatureRejected("x-ms-certificate-url must not carry credentials")
    host = parts.hostname.lower()
    return f"{host}:{port}" if port and port != 443 else host


def http_fetcher(*, ca_bundle: str | None, timeout: tuple[float, float] = FETCH_TIMEOUT,
                 max_bytes: int = MAX_CERTIFICATE_BYTES) -> Fetch:
    """GET a small document: no proxies or CA variables from the environment, no redirects,
    a short timeout and a size cap. Raises CertificateUnavailable."""
    session = requests.Session()
    session.trust_env = False
    lock = threading.Lock()

    def fetch(url: str) -> bytes:
        try:
            with lock, session.get(url, timeout=timeout, verify=ca_bundle or True, allow_redirects=False,
                                   stream=True) as response:
                if response.status_code != 200:
                    raise CertificateUnavailable(f"certificate download answered HTTP {response.status_code}")
                content = b""
                for chunk in response.iter_content(8192):
                    content += chunk
                    if len(content) > max_bytes:
                        raise CertificateUnavailable(f"certificate is larger than {max_bytes} bytes")
                return content
        except requests.RequestException as exc:
            raise CertificateUnavailable(f"certificate download failed: {type(exc).__name__}") from None

    return fetch


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM (one or more certificates) or DER (one); raises CertificateUnavailable."""
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertificateUnavailable("the signing certificate is neither PEM nor DER") from None
    if not certificates:
        raise CertificateUnavailable("the signing certificate file holds no certificate")
    return certificates


def default_trust_anchors(ca_bundle: str | None) -> list[x509.Certificate]:
    """The certificates in ``ca_bundle``; without it, certifi's bundle (what requests trusts)."""
    with open(ca_bundle or certifi.where(), "rb") as fh:
        return x509.load_pem_x509_certificates(fh.read())


def _organizations(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def _ca_issuer_urls(certificate: x509.Certificate) -> list[str]:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in aia
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]


@dataclass
class _Cached:
    expires: float
    certificate: x509.Certificate | None = None
    error: str | None = None


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return (value or "").strip()
    return ""


def signature_from_headers(headers: Mapping[str, str]) -> bytes:
    """The raw signature from ``x-ms-signature`` or ``Authorization`` (``Signature <base64>``)."""
    raw = _header(headers, "x-ms-signature") or _header(headers, "authorization")
    if not raw:
        raise SignatureRejected("the signature header (Authorization or x-ms-signature) is missing")
    scheme, _, value = raw.partition(" ")
    if value and scheme.lower() == "signature":
        raw = value.strip()
    elif value or not _header(headers, "x-ms-signature"):
        raise SignatureRejected("the signature must be given as 'Signature <base64>'")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRejected("the signature is not base64") from None


class SignatureVerifier:
    """Checks a callback's signature; thread-safe; keeps a small certificate cache per URL."""

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str],
        fetch: Fetch,
        trust_anchors: Callable[[], list[x509.Certificate]],
        intermediate_fetch: Fetch | None = None,
        intermediate_hosts: Iterable[str] = INTERMEDIATE_CERTIFICATE_HOSTS,
        clock: Callable[[], float] = time.time,
        ttl: float = CERTIFICATE_TTL,
    ):
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._fetch = fetch
        self._intermediate_fetch = intermediate_fetch or fetch
        self._intermediate_hosts = frozenset(intermediate_hosts)
        self._trust_anchors = trust_anchors
        self._anchors: list[x509.Certificate] | None = None
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "SignatureVerifier":
        fetch = http_fetcher(ca_bundle=settings.ca_bundle)
        return cls(allowed_hosts=settings.webhook_certificate_hosts, fetch=fetch,
                   trust_anchors=lambda: default_trust_anchors(settings.ca_bundle))

    # -- the documented steps --------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> x509.Certificate:
        """Returns the signing certificate; raises SignatureRejected with the failed step."""
        signature = signature_from_headers(headers)
        algorithm = _header(headers, "x-ms-signature-algorithm")
        if not algorithm:
            raise SignatureRejected("the x-ms-signature-algorithm header is missing")
        if algorithm.lower() != SIGNATURE_ALGORITHM:
            raise SignatureRejected(f"signature algorithm {algorithm[:32]!r} is not supported (only rsa-sha256)")
        url = _header(headers, "x-ms-certificate-url")
        if not url:
            raise SignatureRejected("the x-ms-certificate-url header is missing")
        if certificate_host(url) not in self.allowed_hosts:
            raise SignatureRejected("x-ms-certificate-url is not on an allowed certificate host")
        certificate = self.certificate(url)
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureRejected("the signing certificate does not hold an RSA key")
        try:
            public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureRejected("the signature does not match the request body") from None
        return certificate

    def certificate(self, url: str) -> x509.Certificate:
        """The checked certificate for an allowed URL (cached); validity is re-checked on each use."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(url)
        if cached is None or cached.expires <= now:
            cached = self._load(url, now)
            with self._lock:
                if len(self._cache) >= MAX_CACHED_CERTIFICATES:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[url] = cached
        if cached.certificate is None:
            raise SignatureRejected(cached.error or "the signing certificate is not usable")
        self._check_dates(cached.certificate, now)
        return cached.certificate

    def _load(self, url: str, now: float) -> _Cached:
        try:
            certificates = load_certificates(self._fetch(url))
            leaf = certificates[0]
            self._check(leaf, certificates[1:], now)
        except SignatureRejected as exc:  # unavailable, or not acceptable: either way not refetched at once
            log.warning("webhook signing certificate from %s rejected: %s", certificate_host(url), exc)
            return _Cached(now + FAILED_DOWNLOAD_TTL, error=str(exc))
        return _Cached(now + self._ttl, certificate=leaf)

    @staticmethod
    def _check_dates(certificate: x509.Certificate, now: float) -> None:
        moment = datetime.fromtimestamp(now, timezone.utc)
        if moment < certificate.not_valid_before_utc:
            raise SignatureRejected("the signing certificate is not valid yet")
        if moment > certificate.not_valid_after_utc:
            raise SignatureRejected("the signing certificate has expired")

    def _check(self, leaf: x509.Certificate, extra: list[x509.Certificate], now: float) -> None:
        self._check_dates(leaf, now)
        if REQUIRED_ORGANIZATION not in _organizations(leaf.subject):
            raise SignatureRejected(f"the signing certificate's subject Organization is not {REQUIRED_ORGANIZATION}")
        key = leaf.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_KEY_BITS:
            raise SignatureRejected(f"the signing certificate must hold an RSA key of at least {MIN_RSA_KEY_BITS} bits")
        self._check_chain(leaf, extra, now)

    def _anchors_store(self) -> Store:
        if self._anchors is None:
            self._anchors = self._trust_anchors()
        if not self._anchors:
            raise SignatureRejected("no trusted root certificates are configured")
        return Store(self._anchors)

    def _check_chain(self, leaf: x509.Certificate, intermediates: list[x509.Certificate], now: float) -> None:
        ca_policy = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
        verifier = (
            PolicyBuilder().store(self._anchors_store()).time(datetime.fromtimestamp(now, timezone.utc))
            .max_chain_depth(4)
            .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        pool = list(intermediates)
        last_error = ""
        for _ in range(MAX_INTERMEDIATE_FETCHES + 1):
            try:
                verifier.verify(leaf, pool)
                return
            except VerificationError as exc:
                last_error = str(exc)
            missing = self._fetch_issuer(pool[-1] if pool else leaf)
            if missing is None:
                break
            pool.append(missing)
        log.warning("webhook signing certificate chain rejected: %s", last_error[:300])
        raise SignatureRejected("the signing certificate does not chain to a trusted root")

    def _fetch_issuer(self, certificate: x509.Certificate) -> x509.Certificate | None:
        """The issuer from an AIA URL on a known PKI host, or None (other hosts are never fetched)."""
        for url in _ca_issuer_urls(certificate):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in self._intermediate_hosts:
                continue
            try:
                return load_certificates(self._intermediate_fetch(url))[0]
            except CertificateUnavailable as exc:
                log.warning("issuing CA certificate unavailable from %s: %s", parts.hostname, exc)
        return None
