"""`pcsync serve`: the function app on this machine, as the Functions host runs it.

Reads local.settings.json like `func start` (its Values into the environment), indexes
``function_app.app``, serves the HTTP functions on http://<host>:<port>/api/... (waitress), feeds
the queue triggers from the storage account's queues and fires the timers on their schedules,
until Ctrl-C or SIGTERM. With --simulator it first starts the playground (devhost.playground).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import signal
import sys
import threading
from typing import Callable

from devhost import local_settings
from devhost.index import FunctionIndex, HostOptions, index_functions, read_host_json
from devhost.playground import Playground, running_playground
from shared.errors import Unavailable

READY = "Ready."
WAITRESS_THREADS = 8
log = logging.getLogger("devhost")


def say(line: str) -> None:
    print(line, flush=True)


def admin_url(port: int) -> str:
    return f"http://localhost:{port}/api/admin"


def _configure_logging() -> None:
    """The host's own lines (runs, failures, poison moves) on stderr; the app's stay at warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _announce_playground(playground: Playground, settings_path: pathlib.Path) -> None:
    if playground.settings_written:
        say(f"Wrote {settings_path} for the playground (Azurite and the simulator)")
    if playground.mismatched:
        say(f"warning: {settings_path} does not match the playground ({', '.join(playground.mismatched)}): "
            "delete it to have a matching one written")


def _announce_sign_in(playground: Playground) -> None:
    sim = playground.simulator
    say(f"Integration user: {sim.integration_user}")
    say("  Sign in: open the consent link in a private window; the simulator's sign-in page signs you in as "
        "this user without a password: press 'Sign in with MFA' (the simulator's CA is "
        f"{sim.ca_bundle}; accept its certificate warning)")


def _timers(index: FunctionIndex, args: argparse.Namespace) -> list:
    from devhost.timers import TimerRunner, describe, schedule

    runners = []
    for function in index.timers:
        try:
            timer = schedule(function, os.environ)
        except ValueError as exc:
            say(f"Timer {function.name}: not scheduled: {exc}")
            continue
        say(describe(timer) + (" (not run: --no-timers)" if args.no_timers else ""))
        if not args.no_timers:
            runners.append(TimerRunner(timer, fire_first=args.run_timers_now or function.run_on_startup))
    return runners


def _queue_pumps(index: FunctionIndex, options: HostOptions) -> list:
    from devhost.queue_pump import QueuePump, connection_string

    pumps = []
    for function in index.queues:
        try:
            connection = connection_string(function.connection, os.environ)
        except KeyError:
            say(f"Queue {function.name}: not listening: app setting {function.connection} is not set")
            continue
        pumps.append(QueuePump(function, connection, options.queues))
        say(f"Queue {function.name}: {function.queue_name} (poison: {function.queue_name}-poison)")
    return pumps


def _http_server(index: FunctionIndex, options: HostOptions, args: argparse.Namespace, key: str):
    from waitress.server import create_server

    from devhost.http_host import HttpHost

    app = HttpHost(index.http, function_key=key, route_prefix=options.route_prefix)
    return create_server(app, host=args.host, port=args.port, threads=WAITRESS_THREADS, ident="pcsync-serve")


def _stop_event() -> threading.Event:
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping


def _serve(args: argparse.Namespace, settings_path: pathlib.Path, announce: Callable[[], None],
           stopping: threading.Event) -> int:
    """Index the app, start every listener, say where things are, serve until stopped."""
    local_settings.load_into(settings_path, os.environ)
    key = local_settings.ensure_function_key(settings_path, os.environ)
    import function_app

    options = read_host_json(pathlib.Path(function_app.__file__).resolve().parent / "host.json", os.environ)
    index = index_functions(function_app.app)
    server = _http_server(index, options, args, key)
    listeners = [*_queue_pumps(index, options), *_timers(index, args)]
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    try:
        for listener in listeners:
            listener.start()
        say(f"Functions: {len(index.http)} HTTP on http://{args.host}:{server.effective_port}/"
            f"{options.route_prefix}/, {len(index.queues)} queue, {len(index.timers)} timer")
        say(f"Admin page: {admin_url(server.effective_port)}")
        announce()
        say(f"Function key: in {settings_path} (Values.{local_settings.FUNCTION_KEY_SETTING}); send it as the "
            "x-functions-key header or ?code=")
        say(READY)
        stopping.wait()
        say("Stopping.")
    finally:
        for listener in listeners:
            listener.stop()
        server.close()
        server.task_dispatcher.shutdown(timeout=5)
    return 0


def _services_only(playground: Playground, port: int, stopping: threading.Event) -> int:
    """The playground without the host: `func start` serves the functions against it."""
    say(f"Admin page: {admin_url(port)}")
    say("  (served once `func start` runs the functions with this local.settings.json)")
    _announce_sign_in(playground)
    say(READY)
    stopping.wait()
    say("Stopping.")
    return 0


def run(args: argparse.Namespace) -> int:
    _configure_logging()
    settings_path = pathlib.Path(args.serve_settings or args.settings or "local.settings.json").resolve()
    if args.services_only and not args.simulator:
        raise local_settings.LocalSettingsError("--services-only starts the playground's services: add --simulator")
    from devservices import port_in_use

    if not args.services_only and args.host in ("127.0.0.1", "localhost") and port_in_use(args.port):
        raise Unavailable(f"port {args.port} is in use (another pcsync serve or func start?): stop it or pass --port")
    # from here a Ctrl-C or SIGTERM stops in order (the simulator saves its state, Azurite stops)
    stopping = _stop_event()
    with contextlib.ExitStack() as stack:
        announce: Callable[[], None] = lambda: None   # noqa: E731
        if args.simulator:
            playground = stack.enter_context(running_playground(
                pathlib.Path(args.data_dir), settings_path, port=args.port, say=say))
            _announce_playground(playground, settings_path)
            if args.services_only:
                return _services_only(playground, args.port, stopping)
            announce = lambda: _announce_sign_in(playground)   # noqa: E731
        return _serve(args, settings_path, announce, stopping)
