"""Helpers shared by the test fixtures."""
from __future__ import annotations

from devservices import AZURITE_ACCOUNT_KEY as ACCOUNT_KEY  # noqa: F401
from devservices import azurite_connection_string, free_ports, wait_for_port  # noqa: F401

# Storage clients in tests fail fast instead of retrying a dead endpoint for a minute and a half.
STORAGE_TEST_OPTIONS = {"retry_total": 0}


def simulator_settings(sim, storage_connection: str, **overrides):
    from shared.settings import Settings

    env = {
        "PCSYNC_STORAGE": storage_connection,
        "PCSYNC_KEY_VAULT_URL": sim.key_vault_url,
        "PCSYNC_CLIENT_ID": sim.client_id,
        "PCSYNC_CLIENT_SECRET_NAME": "pcsync-client-secret",
        "PCSYNC_REDIRECT_URI": "http://localhost:7071/api/consent/callback",
        "PCSYNC_PARTNER_CENTER_URL": sim.partner_center_url,
        "PCSYNC_AUTHORITY_HOST": sim.authority_host,
        "PCSYNC_GRAPH_URL": sim.graph_url,
        "PCSYNC_CA_BUNDLE": sim.ca_bundle,
    }
    env.update(overrides)
    return Settings.from_environment(env)
