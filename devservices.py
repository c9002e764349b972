"""Local development services used by the demo, the tests and the benchmarks: Azurite from
node_modules on free ports, in memory (also in OAuth mode over HTTPS, the stand-in for identity-based
storage). (The Partner Center side is the `simulator` package.)"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import socket
import subprocess
import time
from typing import Iterator

ROOT = pathlib.Path(__file__).resolve().parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account key (public, documented by Microsoft).
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServiceUnavailable(RuntimeError):
    pass


def free_ports(count: int) -> list[int]:
    # keep every socket open while choosing, or the kernel may hand out the same port twice
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(port: int) -> bool:
    """Something listens on the port (closed connections in TIME_WAIT do not count, as for Azurite's
    own listening socket)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_for_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServiceUnavailable(f"port {port} did not open within {timeout} s")


def azurite_connection_string(blob: int, queue: int, table: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;"
        f"QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;"
        f"TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1;"
    )


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the starting thread dies, so a killed
    playground leaves no Azurite holding its ports and folder."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _azurite_process(extra_args: list[str], *, location: pathlib.Path | None = None,
                     ports: tuple[int, int, int] | None = None) -> Iterator[tuple[int, int, int]]:
    """Start Azurite (in memory unless ``location`` is given, on ``ports`` or free ones) with extra
    arguments; yield (blob, queue, table) ports."""
    if not AZURITE_BIN.exists():
        raise ServiceUnavailable(f"{AZURITE_BIN} not found: run `npm ci` (make does)")
    blob, queue, table = ports or free_ports(3)
    busy = [port for port in ports or () if port_in_use(port)]
    if busy:  # another process there would answer for Azurite
        raise ServiceUnavailable(f"port(s) {', '.join(map(str, busy))} already in use: is another Azurite running?")
    storage = ["--inMemoryPersistence"] if location is None else ["--location", str(location)]
    # Started directly, not through npx, so that terminate() stops the node process itself.
    proc = subprocess.Popen(
        [str(AZURITE_BIN), "--silent", *storage, "--loose", "--skipApiVersionCheck",
         "--disableTelemetry", "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table),
         *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=None if location is None else _die_with_parent,
    )
    try:
        for port in (blob, queue, table):
            wait_for_port(port)
        if proc.poll() is not None:
            raise ServiceUnavailable(f"azurite exited with {proc.returncode}")
        yield blob, queue, table
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def running_azurite(*, location: pathlib.Path | None = None,
                    ports: tuple[int, int, int] | None = None) -> Iterator[str]:
    """Start Azurite and yield its connection string: in memory on free ports by default; with
    ``location`` its data stays in that folder (the local playground), with ``ports`` on those
    (blob, queue, table) ports, so a restarted Azurite answers on the same connection string."""
    with _azurite_process([], location=location, ports=ports) as (blob, queue, table):
        yield azurite_connection_string(blob, queue, table)


def write_localhost_certificate(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for 127.0.0.1/localhost, valid for a day; returns (cert, key)
    PEM paths. The certificate is also the CA bundle a client needs to trust it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "azurite-cert.pem", directory / "azurite-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclasses.dataclass(frozen=True)
class OAuthAzurite:
    """An Azurite that accepts only bearer tokens over HTTPS (``--oauth basic``): the stand-in
    for identity-based storage. Azurite checks a token's audience, issuer and lifetime, not its
    signature."""

    table_service_uri: str
    queue_service_uri: str
    blob_service_uri: str
    ca_bundle: str


@contextlib.contextmanager
def running_azurite_oauth(directory: pathlib.Path) -> Iterator[OAuthAzurite]:
    """Start Azurite in OAuth mode over HTTPS with a certificate generated into ``directory``."""
    cert, key = write_localhost_certificate(directory)
    with _azurite_process(["--oauth", "basic", "--cert", str(cert), "--key", str(key)]) as (blob, queue, table):
        yield OAuthAzurite(
            table_service_uri=f"https://127.0.0.1:{table}/devstoreaccount1",
            queue_service_uri=f"https://127.0.0.1:{queue}/devstoreaccount1",
            blob_service_uri=f"https://127.0.0.1:{blob}/devstoreaccount1",
            ca_bundle=str(cert),
        )


def simulator_app_settings(sim, storage_connection: str) -> dict[str, str]:
    """The app settings a partner would put in local.settings.json to run pcsync against the
    simulator (the AZURE_* ones let azure-identity reach the simulated Key Vault)."""
    return {
        "PCSYNC_STORAGE": storage_connection,
        "PCSYNC_KEY_VAULT_URL": sim.key_vault_url,
        "PCSYNC_CLIENT_ID": sim.client_id,
        "PCSYNC_CLIENT_SECRET_NAME": "pcsync-client-secret",
        "PCSYNC_REDIRECT_URI": "http://localhost:7071/api/consent/callback",
        "PCSYNC_PARTNER_CENTER_URL": sim.partner_center_url,
        "PCSYNC_AUTHORITY_HOST": sim.authority_host,
        "PCSYNC_GRAPH_URL": sim.graph_url,
        "PCSYNC_CA_BUNDLE": sim.ca_bundle,
        "PCSYNC_WEBHOOK_CERTIFICATE_HOSTS": sim.control_url.split("/")[2],
        "AZURE_TENANT_ID": sim.tenant_id,
        "AZURE_CLIENT_ID": sim.client_id,
        "AZURE_CLIENT_SECRET": sim.client_secret,
    }


def build_simulator_runtime(sim, storage_connection: str, *, storage_options: dict | None = None, **overrides: str):
    """The app's Services (bootstrap.py) over the given storage and the simulator's app settings, authenticating to the
    simulated Key Vault as the app, with the app's client secret stored there (as a partner
    would store it in theirs). ``overrides`` replace app settings by name."""
    from azure.identity import ClientSecretCredential

    from bootstrap import Services
    from shared.settings import Settings

    settings = Settings.from_environment(simulator_app_settings(sim, storage_connection) | overrides)
    credential = ClientSecretCredential(
        sim.tenant_id, sim.client_id, sim.client_secret, authority=sim.authority_host,
        disable_instance_discovery=True, connection_verify=sim.ca_bundle,
    )
    services = Services(settings, credential=credential, storage_options=storage_options)
    services.secrets.set_secret(settings.client_secret_name, sim.client_secret)
    return services


def register_and_consent(services, sim, provider_id: str, *, name: str = "Simulated partner", mfa: bool | str = True):
    """Run the real consent flow for a provider (created for the simulator's partner tenant when it
    does not exist yet), answering the simulator's sign-in page as the integration user.
    Returns the consent outcome."""
    from urllib.parse import parse_qsl, urlsplit

    if services.providers.find_provider(provider_id) is None:
        services.providers.put_provider(provider_id, {"name": name, "countryCode": "US", "currencyCode": "USD",
                                                     "tenantId": sim.tenant_id})
    consent = services.consent
    link = consent.create_link(provider_id)
    redirect = sim.control.sign_in(link.url, mfa=mfa)
    return consent.complete(dict(parse_qsl(urlsplit(redirect).query)), callback_url=redirect.split("?")[0])
