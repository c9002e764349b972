"""For tests (and tools) that drive `pcsync serve` from outside, as a browser or an operator would:

    with start_serve(tmp_path) as serve:                      # the playground, on a free port
        serve.get("/api/providers")                            # with the function key
        serve.simulator.control.set_integration_user(roles=[...])
        services = serve.services()                            # the app's Services over the same storage

The process is `python -m cli serve ...` in the repository; its stdout is kept in ``.output`` and its
stderr in ``<tmp_path>/serve-<n>.stderr.log``.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Mapping

from devhost import local_settings
from devhost.playground import SIMULATOR_FILE
from devhost.serve import READY, admin_url

ROOT = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 30


class ServeFailed(RuntimeError):
    pass


def _free_port() -> int:
    from devservices import free_ports

    return free_ports(1)[0]


class ServeProcess:
    def __init__(self, process: subprocess.Popen, *, port: int, settings_path: pathlib.Path, data_dir: pathlib.Path,
                 stderr_path: pathlib.Path, output: list[str]):  # noqa: PLR0913
        self.process, self.port = process, port
        self.settings_path, self.data_dir, self.stderr_path = settings_path, data_dir, stderr_path
        self.output = output
        self.base_url = f"http://127.0.0.1:{port}"
        self.admin_url = admin_url(port)
        self._simulator = None
        self._ready = threading.Event()
        self._drain = threading.Thread(target=self._read_output, name="serve-stdout", daemon=True)
        self._drain.start()

    # -- what the test needs to reach ---------------------------------------------------------

    @property
    def values(self) -> dict[str, str]:
        """The Values of the settings file the process reads."""
        return {k: str(v) for k, v in local_settings.read(self.settings_path).get("Values", {}).items()}

    @property
    def function_key(self) -> str:
        return local_settings.function_key(self.settings_path)

    @property
    def connection_string(self) -> str:
        return self.values["PCSYNC_STORAGE"]

    @property
    def simulator(self):
        """The playground's simulator (simulator.testing.RunningSimulator: .control drives it;
        stopping it is the serve process's business)."""
        if self._simulator is None:
            from simulator.testing import RunningSimulator

            info = json.loads((self.data_dir / SIMULATOR_FILE).read_text(encoding="utf-8"))
            self._simulator = RunningSimulator(**info, client_secret=self.values["AZURE_CLIENT_SECRET"])
        return self._simulator

    @property
    def simulator_control_url(self) -> str:
        return self.simulator.control_url

    def services(self, **overrides: str):
        """The app's Services over the playground's storage and simulator (as the host builds them)."""
        from devservices import build_simulator_runtime

        return build_simulator_runtime(self.simulator, self.connection_string, **overrides)

    def request(self, method: str, path: str, *, key: bool = True, **kwargs: Any):
        """An HTTP request to the host (``path`` from /api/...), with the function key unless key=False."""
        import requests

        headers = dict(kwargs.pop("headers", None) or {})
        if key:
            headers.setdefault("x-functions-key", self.function_key)
        return requests.request(method, self.base_url + path, headers=headers, timeout=kwargs.pop("timeout", 60),
                                **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    # -- lifetime -----------------------------------------------------------------------------

    def _read_output(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            if line.strip() == READY:
                self._ready.set()

    def wait_until_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.stop()
                stderr = self.stderr_path.read_text(encoding="utf-8", errors="replace")[-4000:]
                raise ServeFailed(f"pcsync serve did not become ready (exit code {code}):\n"
                                  + "\n".join(self.output) + "\n--- stderr ---\n" + stderr)
        return self

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._drain.join(timeout=5)
        if self._simulator is not None:
            self._simulator.control.close()
        return self.process.returncode

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_serve(tmp_path: pathlib.Path, *, simulator: bool = True, port: int | None = None,
                extra_args: Iterable[str] = (), env: Mapping[str, str] | None = None,
                settings: Mapping[str, str] | None = None) -> "ServeProcess":
    """Start `pcsync serve` (the playground unless simulator=False) on a free port with its
    settings and data under ``tmp_path``; returns once it printed ``Ready.``. ``env`` adds
    environment variables (they win over local.settings.json, e.g. a short timer schedule);
    ``settings`` writes local.settings.json Values first (without --simulator there must be one)."""
    tmp_path = pathlib.Path(tmp_path)
    settings_path, data_dir = tmp_path / "local.settings.json", tmp_path / ".pcsync-local"
    if settings is not None:
        local_settings.write(settings_path, {"IsEncrypted": False, "Values": dict(settings)})
    port = port or _free_port()
    stderr_path = tmp_path / f"serve-{len(list(tmp_path.glob('serve-*.stderr.log')))}.stderr.log"
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--settings", str(settings_path),
               "--data-dir", str(data_dir), *(["--simulator"] if simulator else []), *extra_args]
    environment = dict(os.environ) | {"PYTHONUNBUFFERED": "1"} | dict(env or {})
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=stderr,
                                   text=True)
    return ServeProcess(process, port=port, settings_path=settings_path, data_dir=data_dir,
                        stderr_path=stderr_path, output=[]).wait_until_ready()
