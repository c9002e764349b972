"""Worker processes for tests and benchmarks: several processes, each running the registered
``sync_customer_queue`` function against the same Azurite and simulator, as several Functions
instances would (each with its own ``Services``, clients and in-process budget; the partner
tenant's call budget is shared through table ``callbudget``). Also a local HTTP endpoint that hands
the simulator's webhook deliveries to the registered webhook function.

    with QueueWorkers(sim, storage, processes=4, settings={"PCSYNC_CALLS_PER_MINUTE": "475"}) as workers:
        ...                     # queue sync-customer messages
        workers.wait_idle()     # every message handled (the queue is empty)
    workers.reports             # per process: messages handled, failures, first and last message times

A worker process is ``python devworkers.py '<json>'``; it takes up to ``concurrency`` messages at
once (host.json: batchSize 4 + newBatchThreshold 2 = 6) and stops when its stop file appears.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, Iterator

ROOT = pathlib.Path(__file__).resolve().parent
SIM_FIELDS = ("partner_center_url", "authority_host", "graph_url", "key_vault_url", "control_url", "ca_bundle",
              "tenant_id", "client_id", "client_secret")
HOST_CONCURRENCY = 6  # host.json queues: batchSize 4 + newBatchThreshold 2
VISIBILITY_TIMEOUT = 120


def _queue_client(storage: str, queue: str) -> Any:
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    return QueueClient.from_connection_string(storage, queue, message_decode_policy=TextBase64DecodePolicy(),
                                              message_encode_policy=TextBase64EncodePolicy())


def queue_length(storage: str, queue: str) -> int:
    """Messages still in the queue (visible or being handled): 0 once every one was deleted."""
    try:
        return _queue_client(storage, queue).get_queue_properties().approximate_message_count
    except Exception:  # noqa: BLE001 - not created yet: nothing queued
        return 0


def _registered(name: str) -> Any:
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}[name].get_user_function()


def worker_main(config: dict[str, Any]) -> dict[str, Any]:
    """One worker process: the queue function over this process's own Services."""
    from azure.core.exceptions import ResourceExistsError
    from azure.functions.queue import QueueMessage  # the host's message type, with dequeue_count

    from bootstrap import install_services
    from devservices import build_simulator_runtime
    from sync.names import SYNC_CUSTOMER_QUEUE

    runtime = build_simulator_runtime(SimpleNamespace(**config["sim"]), config["storage"], **config["settings"])
    install_services(runtime)
    handler = _registered("sync_customer_queue")
    queue = _queue_client(config["storage"], SYNC_CUSTOMER_QUEUE)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()  # the host creates a trigger's queue; the first worker here does
    stop = pathlib.Path(config["stop_file"])
    report = {"pid": os.getpid(), "handled": 0, "failed": 0, "first_at": None, "last_at": None}
    lock = threading.Lock()

    def handle(message: Any) -> None:
        started = time.time()
        try:
            handler(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count))
            queue.delete_message(message)
            outcome = "handled"
        except Exception as exc:  # noqa: BLE001 - as the host: the message becomes visible again later
            outcome = "failed"
            report.setdefault("error", f"{type(exc).__name__}: {exc}"[:500])
        with lock:
            report[outcome] += 1
            report["first_at"] = min(report["first_at"] or started, started)
            report["last_at"] = time.time()

    with ThreadPoolExecutor(max_workers=config["concurrency"]) as pool:
        while not stop.exists():
            batch = list(queue.receive_messages(messages_per_page=config["concurrency"],
                                                max_messages=config["concurrency"], visibility_timeout=VISIBILITY_TIMEOUT))
            if not batch:
                time.sleep(0.1)
                continue
            list(pool.map(handle, batch))
    return report


class QueueWorkers:
    """``processes`` worker processes over the simulator ``sim`` and the storage connection string."""

    def __init__(self, sim: Any, storage: str, *, processes: int = 4, concurrency: int = HOST_CONCURRENCY,
                 settings: dict[str, str] | None = None):
        self.storage = storage
        self._dir = tempfile.mkdtemp(prefix="pcsync-workers-")
        self._stop = pathlib.Path(self._dir) / "stop"
        config = {"sim": {name: getattr(sim, name) for name in SIM_FIELDS}, "storage": storage,
                  "settings": dict(settings or {}), "stop_file": str(self._stop), "concurrency": concurrency}
        self._processes = [subprocess.Popen([sys.executable, str(ROOT / "devworkers.py"), json.dumps(config)],
                                            cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        self.reports: list[dict[str, Any]] = []

    def wait_idle(self, timeout: float = 7200, poll: float = 0.5) -> float:
        """Until every sync-customer message was handled; returns the time it happened (time.time())."""
        from sync.names import SYNC_CUSTOMER_QUEUE

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if queue_length(self.storage, SYNC_CUSTOMER_QUEUE) == 0:
                return time.time()
            if any(p.poll() is not None for p in self._processes):
                raise RuntimeError("a worker process ended early")
            time.sleep(poll)
        raise TimeoutError("the sync-customer queue did not drain")

    def stop(self) -> list[dict[str, Any]]:
        self._stop.touch()
        for process in self._processes:
            out, _ = process.communicate(timeout=120)
            lines = [line for line in (out or "").splitlines() if line.startswith("{")]
            if lines:
                self.reports.append(json.loads(lines[-1]))
        return self.reports

    def __enter__(self) -> "QueueWorkers":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.reports:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                for process in self._processes:
                    process.kill()


@contextlib.contextmanager
def webhook_endpoint() -> Iterator[str]:
    """A local HTTP server handing each POST to the registered webhook function; yields its base URL
    (register ``<base>/api/webhooks/partner-center/<provider>?code=<any>``)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl, urlsplit

    import azure.functions as func

    function = _registered("partner_center_webhook")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            request = func.HttpRequest("POST", f"http://localhost{self.path}", headers=dict(self.headers.items()),
                                       params=dict(parse_qsl(parts.query)),
                                       route_params={"provider": parts.path.rstrip("/").rsplit("/", 1)[-1]}, body=body)
            response = function(request)
            payload = response.get_body()
            self.send_response(response.status_code)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(worker_main(json.loads(sys.argv[1]))), flush=True)
