"""`pcsync serve`: its options only. The host itself (waitress, the queue pumps, the simulator)
loads when the command runs, so other commands never import it."""
from __future__ import annotations

import argparse
from typing import Any

DEFAULT_PORT = 7071
DEFAULT_DATA_DIR = ".pcsync-local"


def serve(args: argparse.Namespace, services: Any) -> int:
    from devhost.serve import run

    return run(args)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the function app locally (HTTP routes, queue triggers, timers) as the Functions host does",
        description="Run the function app's functions on this machine: HTTP on http://HOST:PORT/api/..., queue "
                    "triggers from the storage account's queues (host.json rules), timers on their schedules. "
                    "Reads local.settings.json like `func start`.")
    parser.add_argument("--simulator", action="store_true",
                        help="the playground: also start Azurite and the Partner Center simulator, with their data "
                             "under --data-dir, and write a matching local.settings.json if there is none")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help=f"the playground's data folder (default {DEFAULT_DATA_DIR})")
    # its own dest: the top-level --settings (read by every command) stays usable before `serve`
    parser.add_argument("--settings", dest="serve_settings", default=None,
                        help="local.settings.json to read (default ./local.settings.json)")
    parser.add_argument("--services-only", action="store_true",
                        help="with --simulator: start Azurite and the simulator only, for `func start` (Core Tools) "
                             "to host the functions against them")
    parser.add_argument("--run-timers-now", action="store_true", help="fire every timer once at start")
    parser.add_argument("--no-timers", action="store_true", help="do not run the timers (schedules are still shown)")
    parser.set_defaults(handler=serve, reads_settings=True)
