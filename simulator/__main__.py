"""python -m simulator [--port 0] [--seed N] ...: prints one JSON line when ready, then serves
until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import json
import logging
import signal
import sys
import threading
import typing

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer

# Fields that stay library-only: tests change them through SimulatorConfig, the CLI never did.
_NOT_FLAGS = {"nce_cancellation_days", "refresh_token_inactivity_days", "auth_code_lifetime_seconds",
              "access_token_lifetime_seconds"}
# --help has always listed these two first; the rest follow the dataclass order.
_FIRST_FLAGS = ("host", "port")
_HELP = {
    "port": "0 picks a free port",
    "latency_ms": "mean added latency",
    "fault_services": "comma-separated: partner_center,graph,webhooks,entra,keyvault,blobs",
    "start_time": "ISO-8601 start of the simulator clock (default: now)",
    "verbose": "log method and path of each request to stderr",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --kebab-case flag per SimulatorConfig field, so a new knob reaches the CLI by itself."""
    defaults = SimulatorConfig()
    hints = typing.get_type_hints(SimulatorConfig)
    flags = [f for f in dataclasses.fields(SimulatorConfig) if f.name not in _NOT_FLAGS]
    flags.sort(key=lambda f: f.name not in _FIRST_FLAGS)   # stable: keeps the dataclass order otherwise
    for f in flags:
        flag, default, kind = "--" + f.name.replace("_", "-"), getattr(defaults, f.name), hints[f.name]
        options = {"help": _HELP.get(f.name)}
        if kind is bool:
            options["action"] = "store_true"
        elif typing.get_origin(kind) is tuple:
            # Tuples travel as one comma-separated string; parse_args splits it again.
            options["default"] = ",".join(default)
        else:
            # "int | None" parses as int; plain str needs no type (argparse keeps the text).
            number = [t for t in typing.get_args(kind) or (kind,) if t in (int, float)]
            options.update(default=default, type=number[0] if number else None)
        parser.add_argument(flag, **options)


def parse_args(argv: list[str] | None = None) -> tuple[SimulatorConfig, str | None]:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    _add_config_flags(parser)
    parser.add_argument("--ca-file", default=None,
                        help="also write the CA bundle here (a stable path for PCSYNC_CA_BUNDLE in "
                             "local.settings.json)")
    args = vars(parser.parse_args(argv))
    ca_file = args.pop("ca_file")
    args["fault_services"] = tuple(s for s in args["fault_services"].split(",") if s)
    try:
        return SimulatorConfig(**args), ca_file
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    config, ca_file = parse_args(argv)
    logging.basicConfig(level=logging.INFO if config.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = SimulatorServer(config)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start_background()
    info = server.info()
    if ca_file:
        os.makedirs(os.path.dirname(os.path.abspath(ca_file)), exist_ok=True)
        shutil.copyfile(info["ca_bundle"], ca_file)
        info["ca_bundle"] = os.path.abspath(ca_file)
    print(json.dumps(info), flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
