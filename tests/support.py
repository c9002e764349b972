"""Helpers shared by the test fixtures."""
from __future__ import annotations

import pathlib

from devservices import AZURITE_ACCOUNT_KEY as ACCOUNT_KEY  # noqa: F401
from devservices import azurite_connection_string, free_ports, wait_for_port  # noqa: F401

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
