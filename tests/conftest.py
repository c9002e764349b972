"""Shared fixtures: a real Azurite on free ports (and one in OAuth mode), the simulator, and a
Runtime wired to both.

With CI=true a missing Azurite or simulator fails the run instead of skipping.
"""
from __future__ import annotations

import os
import pathlib

import pytest

from tests.support import STORAGE_TEST_OPTIONS, simulator_runtime

IN_CI = os.environ.get("CI", "").lower() == "true"
TESTS = pathlib.Path(__file__).resolve().parent
# The tiers by directory (see pyproject markers): unit tests use fakes only; function,
# integration and simulator tests need Azurite and/or the simulator; browser tests need Chromium
# and `pcsync serve --simulator`; devhost tests run `pcsync serve` with Azurite (and the simulator).
INTEGRATION_DIRS = ("functions", "integration", "simulator", "browser", "devhost")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = pathlib.Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        if tier in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


def unavailable(reason: str):
    """Fail under CI (a skip would hide a missing install step), skip on a developer machine."""
    if IN_CI:
        pytest.fail(f"required test service unavailable under CI=true: {reason}")
    pytest.skip(reason)


def started(context):
    """Enter a devservices context for a fixture and yield what it gives; a service that cannot
    start is unavailable (a failure under CI)."""
    from devservices import ServiceUnavailable

    try:
        value = context.__enter__()
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    try:
        yield value
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(scope="session")
def azurite():
    """Connection string of an in-memory Azurite started for this test session."""
    from devservices import running_azurite

    yield from started(running_azurite())


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory):
    """A second in-memory Azurite that accepts only bearer tokens, over HTTPS with a certificate
    generated for this session (the stand-in for identity-based storage)."""
    from devservices import running_azurite_oauth

    yield from started(running_azurite_oauth(tmp_path_factory.mktemp("azurite-oauth")))


@pytest.fixture
def storage(azurite):
    """Azurite with every table and queue removed, so each test starts from empty storage."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    tables = TableServiceClient.from_connection_string(azurite, **STORAGE_TEST_OPTIONS)
    for table in list(tables.list_tables()):
        tables.delete_table(table.name)
    queues = QueueServiceClient.from_connection_string(azurite, **STORAGE_TEST_OPTIONS)
    for queue in list(queues.list_queues()):
        queues.delete_queue(queue.name)
    return azurite


@pytest.fixture
def runtime(storage):
    """A Runtime over the clean Azurite, installed as the process runtime for function tests."""
    from bootstrap import Services, install_services
    from shared.settings import Settings

    settings = Settings.from_environment({"PCSYNC_STORAGE": storage})
    rt = Services(settings, storage_options=STORAGE_TEST_OPTIONS)
    install_services(rt)
    yield rt
    install_services(None)


@pytest.fixture(scope="session")
def simulator():
    """The Partner Center / Entra / Graph / Key Vault simulator, in-process over HTTPS."""
    from simulator.testing import start_simulator

    sim = start_simulator()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim_runtime(storage, simulator):
    """A Runtime wired to clean Azurite and the simulator, with the app's client secret in the
    simulated Key Vault (as a partner would store it in theirs)."""
    yield from simulator_runtime(simulator, storage)


@pytest.fixture(scope="session")
def registered_functions():
    """{function name: FunctionBuilder} of the real app; get_functions() may be called only once."""
    from function_app import app

    return {f.get_function_name(): f for f in app.get_functions()}
