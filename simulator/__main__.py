"""python -m simulator [--port 0] [--seed N] ...: prints one JSON line when ready, then serves
until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import os
import shutil
import json
import logging
import signal
import sys
import threading

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer


def parse_args(argv: list[str] | None = None) -> SimulatorConfig:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    add = parser.add_argument
    add("--host", default=defaults.host)
    add("--port", type=int, default=defaults.port, help="0 picks a free port")
    add("--seed", type=int, default=defaults.seed)
    add("--customers", type=int, default=defaults.customers)
    add("--subscriptions-per-customer", type=int, default=defaults.subscriptions_per_customer)
    add("--nce-fraction", type=float, default=defaults.nce_fraction)
    add("--invoices", type=int, default=defaults.invoices)
    add("--line-items-per-invoice", type=int, default=defaults.line_items_per_invoice)
    add("--rate-limit-per-minute", type=int, default=defaults.rate_limit_per_minute)
    add("--customer-rate-limit-per-minute", type=int, default=None)
    add("--latency-ms", type=float, default=defaults.latency_ms, help="mean added latency")
    add("--latency-jitter-ms", type=float, default=defaults.latency_jitter_ms)
    add("--fault-5xx", type=float, default=defaults.fault_5xx)
    add("--fault-429", type=float, default=defaults.fault_429)
    add("--fault-reset", type=float, default=defaults.fault_reset)
    add("--fault-truncate", type=float, default=defaults.fault_truncate)
    add("--write-202", type=float, default=defaults.write_202)
    add("--fault-services", default=",".join(defaults.fault_services),
        help="comma-separated: partner_center,graph,webhooks,entra,keyvault,blobs")
    add("--export-running-polls", type=int, default=defaults.export_running_polls)
    add("--export-retry-after-seconds", type=int, default=defaults.export_retry_after_seconds)
    add("--export-items-per-blob", type=int, default=defaults.export_items_per_blob)
    add("--start-time", default=None, help="ISO-8601 start of the simulator clock (default: now)")
    add("--verbose", action="store_true", help="log method and path of each request to stderr")
    add("--ca-file", default=None,
        help="also write the CA bundle here (a stable path for PCSYNC_CA_BUNDLE in local.settings.json)")
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
