"""`pcsync serve --simulator`: Azurite and the simulator beside the local host, with their data
in one folder (default .pcsync-local) so the playground can be stopped and started again.

    <data dir>/playground.json   the ports chosen on the first start (the settings file names them)
    <data dir>/azurite/          Azurite's on-disk data (tables, queues, blobs)
    <data dir>/simulator/        the simulator's key material and state (simulator.persistence)
    <data dir>/simulator.json    how to reach the running simulator (for tests and tools; no secret)
"""
from __future__ import annotations

import contextlib
import json
import pathlib
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import urlsplit

from devhost import local_settings
from shared.errors import Unavailable

PLAYGROUND_FILE = "playground.json"
SIMULATOR_FILE = "simulator.json"
# settings the playground writes that must still match when local.settings.json already exists
MATCHED_SETTINGS = ("PCSYNC_STORAGE", "PCSYNC_KEY_VAULT_URL", "PCSYNC_PARTNER_CENTER_URL", "PCSYNC_CA_BUNDLE",
                    "PCSYNC_CLIENT_ID")


@dataclass(frozen=True)
class Playground:
    connection_string: str
    simulator: object          # simulator.testing.RunningSimulator (not stopped by its holder)
    settings_written: bool
    mismatched: tuple[str, ...]   # settings in an existing local.settings.json that do not match


def _ports(data_dir: pathlib.Path) -> dict:
    """The playground's ports: those of the first start, or new free ones."""
    from devservices import free_ports

    path = data_dir / PLAYGROUND_FILE
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    blob, queue, table, simulator = free_ports(4)
    ports = {"azurite": [blob, queue, table], "simulator": simulator}
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
    return ports


def playground_settings(sim, connection: str, port: int) -> dict[str, str]:
    """The Values of a local.settings.json for the playground: the sample's defaults, the
    simulator's endpoints and app, and a new function key."""
    from devservices import simulator_app_settings

    sample = local_settings.sample_values()
    # the sample points at a simulator on its usual port; this one has the playground's port
    usual = urlsplit(sample.get("PCSYNC_PARTNER_CENTER_URL", "")).netloc
    values = {name: value.replace(usual, urlsplit(sim.partner_center_url).netloc) if usual else value
              for name, value in sample.items()} | simulator_app_settings(sim, connection)
    values.update({"AzureWebJobsStorage": connection, "AZURE_AUTHORITY_HOST": sim.authority_host,
                   "PCSYNC_REDIRECT_URI": f"http://localhost:{port}/api/consent/callback",
                   local_settings.FUNCTION_KEY_SETTING: local_settings.new_function_key()})
    return values


def _settings_file(path: pathlib.Path, sim, connection: str, port: int) -> tuple[bool, tuple[str, ...]]:
    """Write the playground's local.settings.json unless one exists; returns (written, mismatched)."""
    wanted = playground_settings(sim, connection, port)
    if not path.exists():
        local_settings.write(path, {"IsEncrypted": False, "Values": wanted})
        return True, ()
    values = local_settings.read(path).get("Values", {})
    return False, tuple(name for name in MATCHED_SETTINGS if str(values.get(name, "")) != wanted[name])


def _running_simulator(persistent):
    from simulator.testing import RunningSimulator

    return RunningSimulator(**persistent.info())


def _write_simulator_file(data_dir: pathlib.Path, persistent) -> None:
    """Where the simulator is, for tests and tools; its client secret stays in local.settings.json."""
    info = {name: value for name, value in persistent.info().items() if name != "client_secret"}
    (data_dir / SIMULATOR_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _seed_client_secret(sim, connection: str) -> None:
    """The app's client secret in the simulated Key Vault, as a partner stores it in theirs."""
    from devservices import build_simulator_runtime

    build_simulator_runtime(sim, connection)


@contextlib.contextmanager
def _azurite(data_dir: pathlib.Path, ports: dict) -> Iterator[str]:
    from devservices import ServiceUnavailable, running_azurite

    try:
        context = running_azurite(location=data_dir / "azurite", ports=tuple(ports["azurite"]))
        connection = context.__enter__()
    except ServiceUnavailable as exc:
        raise Unavailable(f"Azurite for the playground in {data_dir}: {exc}") from None
    try:
        yield connection
    finally:
        context.__exit__(None, None, None)


@contextlib.contextmanager
def running_playground(data_dir: pathlib.Path, settings_path: pathlib.Path, *, port: int,
                       say: Callable[[str], None]) -> Iterator[Playground]:
    """Azurite and the simulator for the playground, and a settings file that matches them."""
    from simulator.config import SimulatorConfig
    from simulator.persistence import PersistentSimulator

    data_dir = data_dir.resolve()
    ports = _ports(data_dir)
    (data_dir / "azurite").mkdir(parents=True, exist_ok=True)
    with _azurite(data_dir, ports) as connection:
        persistent = PersistentSimulator(str(data_dir / "simulator"), SimulatorConfig(port=ports["simulator"]))
        persistent.start()
        try:
            sim = _running_simulator(persistent)
            say(f"Simulator: {sim.partner_center_url} ({'state restored' if persistent.restored else 'new state'}"
                f" in {data_dir / 'simulator'})")
            _seed_client_secret(sim, connection)
            _write_simulator_file(data_dir, persistent)
            written, mismatched = _settings_file(settings_path, sim, connection, port)
            yield Playground(connection, sim, written, mismatched)
        finally:
            persistent.stop()
