"""Webhook signature verification with a locally generated CA (no network)."""
from __future__ import annotations

import datetime as dt

import pytest

from sync.webhooks.errors import CertificateUnavailable, SignatureRejected
from sync.webhooks.verify import SignatureVerifier, certificate_host, signature_from_headers
from tests.fakes.webhooks import NOW, make_ca, make_leaf, sign, signed_headers

BODY = b'{"EventName":"test-created","ResourceUri":"https://x/v1/webhooks/registration/test","ResourceName":"test","ResourceChangeUtcDate":"2026-03-01T12:00:00+00:00"}'
URL = "https://certs.example.test/cert.cer"


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture(scope="module")
def leaf(ca):
    return make_leaf(ca)


class Clock:
    def __init__(self, moment: dt.datetime = NOW):
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


class Fetcher:
    def __init__(self, documents: dict[str, bytes]):
        self.documents = documents
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.documents:
            raise CertificateUnavailable("certificate download answered HTTP 404")
        return self.documents[url]


def verifier(ca, documents, *, clock=None, hosts=("certs.example.test",), **kwargs) -> SignatureVerifier:
    fetch = documents if callable(documents) else Fetcher(documents)
    return SignatureVerifier(allowed_hosts=hosts, fetch=fetch, trust_anchors=lambda: [ca.cert],
                             clock=clock or Clock(), **kwargs)


def test_valid_signature_in_authorization_header(ca, leaf):
    v = verifier(ca, {URL: leaf.pem})
    assert v.verify(signed_headers(leaf.key, BODY), BODY).subject == leaf.cert.subject


def test_x_ms_signature_header_with_or_without_scheme_and_der_certificate(ca, leaf):
    v = verifier(ca, {URL: leaf.der})
    assert v.verify(signed_headers(leaf.key, BODY, ms_header=True), BODY).subject == leaf.cert.subject
    bare = {k: v for k, v in signed_headers(leaf.key, BODY).items() if k != "Authorization"}
    bare["X-MS-Signature"] = sign(leaf.key, BODY)
    assert v.verify(bare, BODY).subject == leaf.cert.subject


def test_tampered_body_is_rejected(ca, leaf):
    v = verifier(ca, {URL: leaf.pem})
    with pytest.raises(SignatureRejected, match="does not match"):
        v.verify(signed_headers(leaf.key, BODY), BODY.replace(b"test-created", b"test-creates"))


def test_signature_by_another_key_is_rejected(ca, leaf):
    other = make_leaf(ca)
    with pytest.raises(SignatureRejected, match="does not match"):
        verifier(ca, {URL: leaf.pem}).verify(signed_headers(other.key, BODY), BODY)


@pytest.mark.parametrize("drop, message", [
    ("Authorization", "signature header"),
    ("x-ms-certificate-url", "x-ms-certificate-url header is missing"),
    ("x-ms-signature-algorithm", "x-ms-signature-algorithm header is missing"),
])
def test_missing_headers(ca, leaf, drop, message):
    headers = {k: v for k, v in signed_headers(leaf.key, BODY).items() if k != drop}
    with pytest.raises(SignatureRejected, match=message):
        verifier(ca, {URL: leaf.pem}).verify(headers, BODY)


@pytest.mark.parametrize("value, message", [
    ("Bearer abcdefgh", "Signature <base64>"),
    ("Signature not*base64!", "not base64"),
    ("abcdefgh", "Signature <base64>"),
])
def test_malformed_signature_headers(value, message):
    with pytest.raises(SignatureRejected, match=message):
        signature_from_headers({"Authorization": value})


def test_only_rsa_sha256_is_accepted(ca, leaf):
    with pytest.raises(SignatureRejected, match="not supported"):
        verifier(ca, {URL: leaf.pem}).verify(signed_headers(leaf.key, BODY, algorithm="rsa-sha1"), BODY)
    verifier(ca, {URL: leaf.pem}).verify(signed_headers(leaf.key, BODY, algorithm="RSA-SHA256"), BODY)


@pytest.mark.parametrize("url, message", [
    ("http://certs.example.test/cert.cer", "https"),
    ("https://evil.example.test/cert.cer", "allowed certificate host"),
    ("https://certs.example.test:8443/cert.cer", "allowed certificate host"),
    ("https://user:pw@certs.example.test/cert.cer", "credentials"),
    ("file:///etc/passwd", "https"),
    ("https://[::1/cert", "valid URL"),
])
def test_certificate_url_outside_the_allow_list_is_never_fetched(ca, leaf, url, message):
    fetch = Fetcher({url: leaf.pem})
    with pytest.raises(SignatureRejected, match=message):
        verifier(ca, fetch).verify(signed_headers(leaf.key, BODY, url=url), BODY)
    assert fetch.calls == []


def test_certificate_host_keeps_non_default_ports():
    assert certificate_host("https://127.0.0.1:8443/_sim/webhook-cert.cer") == "127.0.0.1:8443"
    assert certificate_host("https://Store.Blob.Core.Windows.Net:443/cert/x.cer") == "store.blob.core.windows.net"


def test_port_in_allow_list(ca, leaf):
    url = "https://127.0.0.1:8443/_sim/webhook-cert.cer"
    v = verifier(ca, {url: leaf.pem}, hosts=("127.0.0.1:8443",))
    assert v.verify(signed_headers(leaf.key, BODY, url=url), BODY).subject == leaf.cert.subject


def test_organization_must_be_microsoft(ca):
    for org in ("Contoso Ltd", None):
        impostor = make_leaf(ca, org=org)
        fetch = Fetcher({URL: impostor.pem})
        v = verifier(ca, fetch)
        for _ in range(2):
            with pytest.raises(SignatureRejected, match="Organization"):
                v.verify(signed_headers(impostor.key, BODY), BODY)
        assert len(fetch.calls) == 1  # a rejected certificate is not downloaded again at once


def test_expired_and_not_yet_valid_certificates(ca):
    expired = make_leaf(ca, not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1))
    with pytest.raises(SignatureRejected, match="expired"):
        verifier(ca, {URL: expired.pem}).verify(signed_headers(expired.key, BODY), BODY)
    future = make_leaf(ca, not_before=NOW + dt.timedelta(days=1))
    with pytest.raises(SignatureRejected, match="not valid yet"):
        verifier(ca, {URL: future.pem}).verify(signed_headers(future.key, BODY), BODY)


def test_cached_certificate_expiring_is_noticed(ca):
    short = make_leaf(ca, not_after=NOW + dt.timedelta(minutes=10))
    clock = Clock()
    v = verifier(ca, {URL: short.pem}, clock=clock)
    v.verify(signed_headers(short.key, BODY), BODY)
    clock.now += 20 * 60  # still cached (TTL 1 h) but past notAfter
    with pytest.raises(SignatureRejected, match="expired"):
        v.verify(signed_headers(short.key, BODY), BODY)


def test_untrusted_issuer_is_rejected(ca):
    rogue_ca = make_ca("Rogue CA")  # also claims O=Microsoft Corporation
    rogue = make_leaf(rogue_ca)
    with pytest.raises(SignatureRejected, match="trusted root"):
        verifier(ca, {URL: rogue.pem}).verify(signed_headers(rogue.key, BODY), BODY)


def test_self_signed_leaf_is_rejected(ca):
    selfish = make_ca("pcnotifications-dispatch.microsoft.com")
    with pytest.raises(SignatureRejected, match="trusted root"):
        verifier(ca, {URL: selfish.pem}).verify(signed_headers(selfish.key, BODY), BODY)


def test_no_trust_anchors_fails_closed(leaf):
    v = SignatureVerifier(allowed_hosts=["certs.example.test"], fetch=Fetcher({URL: leaf.pem}),
                          trust_anchors=lambda: [], clock=Clock())
    with pytest.raises(SignatureRejected, match="no trusted root"):
        v.verify(signed_headers(leaf.key, BODY), BODY)


def test_intermediate_in_the_downloaded_file(ca):
    intermediate = make_ca("Issuing CA", issuer=ca)
    signer = make_leaf(intermediate)
    v = verifier(ca, {URL: signer.pem + intermediate.pem})
    v.verify(signed_headers(signer.key, BODY), BODY)
    with pytest.raises(SignatureRejected, match="trusted root"):
        verifier(ca, {URL: signer.pem}).verify(signed_headers(signer.key, BODY), BODY)


def test_intermediate_from_aia_only_on_known_pki_hosts(ca):
    intermediate = make_ca("Issuing CA", issuer=ca)
    aia_url = "http://www.microsoft.com/pkiops/certs/issuing.crt"
    signer = make_leaf(intermediate, aia=aia_url)
    fetch = Fetcher({URL: signer.der, aia_url: intermediate.der})
    verifier(ca, fetch).verify(signed_headers(signer.key, BODY), BODY)
    assert fetch.calls == [URL, aia_url]

    elsewhere = "http://169.254.169.254/latest/issuing.crt"
    sneaky = make_leaf(intermediate, aia=elsewhere)
    fetch = Fetcher({URL: sneaky.der, elsewhere: intermediate.der})
    with pytest.raises(SignatureRejected, match="trusted root"):
        verifier(ca, fetch).verify(signed_headers(sneaky.key, BODY), BODY)
    assert fetch.calls == [URL]


def test_certificate_is_cached_for_the_ttl_and_failures_briefly(ca, leaf):
    clock = Clock()
    fetch = Fetcher({URL: leaf.pem})
    v = verifier(ca, fetch, clock=clock)
    for _ in range(3):
        v.verify(signed_headers(leaf.key, BODY), BODY)
    assert len(fetch.calls) == 1
    clock.now += 3601
    v.verify(signed_headers(leaf.key, BODY), BODY)
    assert len(fetch.calls) == 2

    missing = "https://certs.example.test/missing.cer"
    for _ in range(3):
        with pytest.raises(SignatureRejected, match="HTTP 404"):
            v.verify(signed_headers(leaf.key, BODY, url=missing), BODY)
    assert fetch.calls.count(missing) == 1
    clock.now += 61
    with pytest.raises(SignatureRejected):
        v.verify(signed_headers(leaf.key, BODY, url=missing), BODY)
    assert fetch.calls.count(missing) == 2


def test_garbage_certificate(ca, leaf):
    with pytest.raises(SignatureRejected, match="neither PEM nor DER"):
        verifier(ca, {URL: b"not a certificate"}).verify(signed_headers(leaf.key, BODY), BODY)
