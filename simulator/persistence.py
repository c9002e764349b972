"""A simulator that keeps its state across restarts (the local playground, `pcsync serve --simulator`).

The simulator holds everything in memory; a playground that is stopped and started again must
still know the partner tenant, the app and its secret in the simulated Key Vault, the integration
user's roles and the refresh tokens it issued (or the consent would be lost). This module keeps
two things in a folder:

- the key material (TLS certificate, which is also the CA bundle, JWT and webhook keys), so the
  CA file named in local.settings.json stays valid and tokens it signed still verify;
- a snapshot of the state (customers, subscriptions, invoices, secrets, refresh tokens, ...),
  written every few seconds when it changed and when the simulator stops.

The snapshot is a pickle the playground writes for itself under its own data folder; it is never
read from anywhere else.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import pickle
import threading
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from simulator.certs import KeyMaterial, generate_key_material
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer

STATE_FILE = "state.pickle"
SAVE_INTERVAL_SECONDS = 2.0
# the generated certificates live a week; renew them a day before they lapse
RENEW_BEFORE = dt.timedelta(days=1)
# state attributes that are rebuilt on start rather than restored
_NOT_SAVED = {"lock", "clock", "config", "factory", "invoice_totals"}   # invoice_totals: a cache
_KEY_FILES = {"jwt_key": "jwt-key.pem", "webhook_key": "webhook-key.pem"}
_WEBHOOK_CERT = "webhook-cert.pem"


def _write_private(path: str, key) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _read_private(path: str):
    with open(path, "rb") as fh:
        return serialization.load_pem_private_key(fh.read(), password=None)


def _still_valid(ca_bundle: str) -> bool:
    with open(ca_bundle, "rb") as fh:
        certificate = x509.load_pem_x509_certificate(fh.read())
    return certificate.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.timezone.utc)


def key_material(directory: str) -> KeyMaterial:
    """The key material kept in ``directory``: loaded when it is there and not about to expire,
    generated (and written there) otherwise."""
    os.makedirs(directory, exist_ok=True)
    ca_bundle, server_key = (os.path.join(directory, name) for name in ("simulator-ca.pem", "simulator-key.pem"))
    paths = {name: os.path.join(directory, file) for name, file in _KEY_FILES.items()}
    webhook_cert = os.path.join(directory, _WEBHOOK_CERT)
    if all(os.path.exists(p) for p in (ca_bundle, server_key, webhook_cert, *paths.values())) and _still_valid(ca_bundle):
        with open(webhook_cert, "rb") as fh:
            cert_pem = fh.read()
        return KeyMaterial(ca_bundle=ca_bundle, server_key_path=server_key, webhook_cert_pem=cert_pem,
                           **{name: _read_private(path) for name, path in paths.items()})
    keys = generate_key_material(directory)
    for name, path in paths.items():
        _write_private(path, getattr(keys, name))
    with open(webhook_cert, "wb") as fh:
        fh.write(keys.webhook_cert_pem)
    return keys


@dataclass
class _Snapshot:
    values: dict
    clock_offset: dt.timedelta


def _snapshot(server: SimulatorServer) -> bytes:
    simulator = server.simulator
    state = simulator.state
    with state.lock:
        values = {k: v for k, v in vars(state).items() if k not in _NOT_SAVED}
        return pickle.dumps(_Snapshot(values, simulator.clock._offset))   # noqa: SLF001 - the clock's own offset


def _restore(server: SimulatorServer, data: bytes) -> None:
    snapshot: _Snapshot = pickle.loads(data)   # noqa: S301 - our own file, written by _snapshot
    simulator = server.simulator
    with simulator.state.lock:
        vars(simulator.state).update(snapshot.values)
    with simulator.clock._lock:   # noqa: SLF001
        simulator.clock._offset = snapshot.clock_offset   # noqa: SLF001


@dataclass
class PersistentSimulator:
    """A SimulatorServer whose keys and state live in ``directory``."""

    directory: str
    config: SimulatorConfig
    server: SimulatorServer = field(init=False)
    restored: bool = field(init=False, default=False)
    _saved_digest: str = field(init=False, default="")
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _saver: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.server = SimulatorServer(self.config, keys=key_material(self.directory))
        path = self.state_path
        if os.path.exists(path):
            with open(path, "rb") as fh:
                _restore(self.server, fh.read())
            self.restored = True

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE_FILE)

    def info(self) -> dict:
        return self.server.info()

    def save(self) -> None:
        """Write the state when it changed since the last write (atomically: a crash mid-write
        leaves the previous snapshot)."""
        data = _snapshot(self.server)
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._saved_digest:
            return
        partial = self.state_path + ".partial"
        # owner-only: the state holds the app's secret and the refresh tokens it issued
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(data)
        os.replace(partial, self.state_path)
        self._saved_digest = digest

    def _save_periodically(self) -> None:
        while not self._stop.wait(SAVE_INTERVAL_SECONDS):
            self.save()

    def start(self) -> "PersistentSimulator":
        self.server.start_background()
        self._saver = threading.Thread(target=self._save_periodically, name="simulator-saver", daemon=True)
        self._saver.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.server.stop()
        self.save()
