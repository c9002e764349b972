"""Key material generated at start: TLS certificate, JWT signing key, webhook signing cert.

Nothing is ever written to the repository; files go to a temporary directory that the
server removes when it stops.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The webhook verifier documented by Microsoft checks for this organisation name; the CA
# carries it too so that issuer checks pass as well.
MICROSOFT_ORG = "Microsoft Corporation"


@dataclass(frozen=True)
class KeyMaterial:
    ca_bundle: str            # PEM path of the self-signed CA-style server certificate
    server_key_path: str
    jwt_key: rsa.RSAPrivateKey
    webhook_key: rsa.RSAPrivateKey
    webhook_cert_pem: bytes   # signed by the CA so a chain check against ca_bundle passes


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, MICROSOFT_ORG),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signing_key: rsa.RSAPrivateKey, *,
                 ca: bool, key_encipherment: bool, extensions=()) -> x509.Certificate:
    """The builder chain both certificates share; ``extensions`` (extension, critical) pairs follow
    BasicConstraints and KeyUsage in the order given."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=key_encipherment, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                     decipher_only=False), critical=True)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _server_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    # Self-signed and a CA at once: the TLS server certificate is also the ca_bundle that signs
    # the webhook certificate (key_encipherment is for RSA key exchange in TLS).
    name = _name("localhost", "pcsync simulator (not a real Microsoft certificate)")
    public = key.public_key()
    return _certificate(name, name, public, key, ca=True, key_encipherment=True, extensions=[
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.SubjectKeyIdentifier.from_public_key(public), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(public), False),
    ])


def _webhook_certificate(key: rsa.RSAPrivateKey, ca_key: rsa.RSAPrivateKey,
                         ca_cert: x509.Certificate) -> x509.Certificate:
    subject = _name("pcnotifications-dispatch.simulator.local", "Partner Center webhooks (simulated)")
    return _certificate(subject, ca_cert.subject, key.public_key(), ca_key, ca=False, key_encipherment=False,
                        extensions=[(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)])


def generate_key_material(directory: str) -> KeyMaterial:
    server_key = _new_key()
    server_cert = _server_certificate(server_key)
    ca_bundle = os.path.join(directory, "simulator-ca.pem")
    key_path = os.path.join(directory, "simulator-key.pem")
    with open(ca_bundle, "wb") as fh:
        fh.write(server_cert.public_bytes(serialization.Encoding.PEM))
    # The private key file is readable by the owner only.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    webhook_key = _new_key()
    webhook_cert = _webhook_certificate(webhook_key, server_key, server_cert)
    return KeyMaterial(
        ca_bundle=ca_bundle,
        server_key_path=key_path,
        jwt_key=_new_key(),
        webhook_key=webhook_key,
        webhook_cert_pem=webhook_cert.public_bytes(serialization.Encoding.PEM),
    )
