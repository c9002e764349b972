"""Helpers shared by the test fixtures."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pathlib
import secrets
import time

from azure.core.credentials import AccessToken

# Storage clients in tests fail fast instead of retrying a dead endpoint for a minute and a half.
STORAGE_TEST_OPTIONS = {"retry_total": 0}


def simulator_settings(sim, storage_connection: str, **overrides):
    from shared.settings import Settings

    from devservices import simulator_app_settings

    env = simulator_app_settings(sim, storage_connection)
    env.update(overrides)
    return Settings.from_environment(env)


# ../shared sits beside the checkout (on developer machines and in CI alike).
SAMPLES_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "partner-center-samples"


def started_simulator(**options):
    """A simulator started with ``options`` and stopped afterwards; for module fixtures:
    ``yield from started_simulator(customers=3, ...)``."""
    from simulator.testing import start_simulator

    running = start_simulator(**options)
    try:
        yield running
    finally:
        running.stop()


def simulator_runtime(sim, storage_connection: str):
    """Yield a Runtime wired to the simulator and the given storage, installed as the process
    runtime, with the app's client secret in the simulated Key Vault and no faults injected.
    For fixtures: ``yield from simulator_runtime(sim, storage)``."""
    from devservices import build_simulator_runtime
    from bootstrap import install_services

    sim.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0, latency_ms=0, write_202=0)
    runtime = build_simulator_runtime(sim, storage_connection, storage_options=STORAGE_TEST_OPTIONS)
    install_services(runtime)
    try:
        yield runtime
    finally:
        install_services(None)
        sim.control.set_faults(fault_5xx=0, fault_429=0, fault_reset=0, fault_truncate=0, write_202=0)


STORAGE_AUDIENCE = "https://storage.azure.com"


class StorageTokenCredential:
    """A TokenCredential standing in for the app's managed identity against Azurite in OAuth mode:
    it issues JWT-shaped tokens with the audience and issuer Azurite checks (Azurite does not check
    signatures, so the token is signed with a throwaway key). Records the scopes it was asked for."""

    def __init__(self, *, audience: str = STORAGE_AUDIENCE, tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47"):
        self.audience = audience
        self.tenant_id = tenant_id
        self.scopes: list[tuple[str, ...]] = []
        self._key = secrets.token_bytes(32)

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        now = int(time.time())
        claims = {"aud": self.audience, "iss": f"https://sts.windows.net/{self.tenant_id}/", "iat": now,
                  "nbf": now - 60, "exp": now + 3600, "tid": self.tenant_id, "oid": "test-managed-identity"}

        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + part(json.dumps(claims).encode())
        signature = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return AccessToken(f"{signing_input}.{part(signature)}", now + 3600)


def http_request(method: str, route: str, *, base: str = "http://localhost:7071", params=None, route_params=None,
                 body: bytes = b"", headers=None):
    """A real azure.functions HttpRequest for ``/api/<route>``, as the host hands it to a function."""
    import azure.functions as func

    return func.HttpRequest(method=method, url=f"{base}/api/{route}", body=body, params=params or {},
                            route_params=route_params or {}, headers=headers or {})


def function_caller(registered_functions):
    """``call(name, request) -> (response, body text)`` through the registered app's functions."""
    def call(name, req):
        response = registered_functions[name].get_user_function()(req)
        return response, response.get_body().decode()
    return call
