"""Local development services used by the demo, the tests and the benchmarks: Azurite from
node_modules on free ports, in memory. (The Partner Center side is the `simulator` package.)"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def running_azurite() -> Iterator[str]:
    """Start Azurite (in memory, free ports) and yield its connection string."""
    if not AZURITE_BIN.exists():
        raise ServiceUnavailable(f"{AZURITE_BIN} not found: run `npm ci` (make does)")
    blob, queue, table = free_ports(3)
    # Started directly, not through npx, so that terminate() stops the node process itself.
    proc = subprocess.Popen(
        [str(AZURITE_BIN), "--silent", "--inMemoryPersistence", "--loose", "--skipApiVersionCheck",
         "--disableTelemetry", "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for port in (blob, queue, table):
            wait_for_port(port)
        if proc.poll() is not None:
            raise ServiceUnavailable(f"azurite exited with {proc.returncode}")
        yield azurite_connection_string(blob, queue, table)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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


def register_and_consent(runtime, sim, provider_id: str, *, name: str = "Simulated partner", mfa: bool | str = True):
    """Run the real consent flow for a provider (created for the simulator's partner tenant when it
    does not exist yet), answering the simulator's sign-in page as the integration user.
    Returns the consent outcome."""
    from urllib.parse import parse_qsl, urlsplit

    from auth.consent import ConsentService

    if runtime.providers.find_provider(provider_id) is None:
        runtime.providers.put_provider(provider_id, {"name": name, "countryCode": "US", "currencyCode": "USD",
                                                     "tenantId": sim.tenant_id})
    consent = ConsentService.for_runtime(runtime)
    link = consent.create_link(provider_id)
    redirect = sim.control.sign_in(link.url, mfa=mfa)
    return consent.complete(dict(parse_qsl(urlsplit(redirect).query)), callback_url=redirect.split("?")[0])
