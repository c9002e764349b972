"""Sync benchmark: a full provider sync against the simulator (subprocess) and Azurite.

    python benchmarks/sync_bench.py           # 1,000 customers / 5,000 subscriptions, ~1 minute bound
    python benchmarks/sync_bench.py --quick   # 200 customers / 1,000 subscriptions, < 1 minute

Prints calls made vs the minimum needed, wall time vs the bound the rate limit allows
(calls / rate limit), 429s seen, rows written by a no-change re-run and peak RSS of this
process (the simulator runs in its own process). The last line is one JSON object with the keys
calls, min_calls, wall_s, bound_s, wall_vs_bound, throttled_429, resync_writes, peak_rss_mb.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROVIDER_ID = "bench-partner"
CUSTOMER_PAGE = 500  # sync.streams.CUSTOMERS.page_size


def consent(runtime, sim) -> None:
    from devservices import register_and_consent

    outcome = register_and_consent(runtime, sim, PROVIDER_ID, name="Benchmark partner")
    if not outcome.succeeded:
        raise SystemExit(f"consent failed: {outcome.message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 customers; finishes in well under a minute")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    return parser.parse_args(argv)


def timed_sync(service, provider, workers: int) -> tuple[dict, float]:
    from sync.runs import summarize

    started = time.monotonic()
    totals = summarize(service.sync_provider_now(provider, workers=workers))
    return totals, time.monotonic() - started


def run_syncs(args: argparse.Namespace, customers: int, subs: int, rate: int, budget: int) -> dict:
    """A first sync and a no-change re-run against a fresh simulator and Azurite."""
    from bootstrap import install_services
    from devservices import build_simulator_runtime, running_azurite
    from simulator.testing import start_simulator_process

    sim = start_simulator_process(customers=customers, subscriptions_per_customer=subs, nce_fraction=0.5,
                                  rate_limit_per_minute=rate, latency_ms=args.latency_ms,
                                  latency_jitter_ms=args.latency_ms / 5)
    try:
        with running_azurite() as storage:
            runtime = build_simulator_runtime(sim, storage)
            install_services(runtime)
            consent(runtime, sim)
            provider = runtime.providers.get_provider(PROVIDER_ID)
            truth_customers = len(sim.control.customers())
            truth_subs = len(sim.control.subscriptions())
            service = runtime.derive(calls_per_minute=budget, client_options={"pool_size": args.workers + 2}).sync
            sim.control.reset_calls()
            print(f"simulator: {truth_customers} customers, {truth_subs} subscriptions, "
                  f"{args.latency_ms:.0f} ms latency, {rate}/minute rate limit (client budget {budget}/minute), "
                  f"{args.workers} workers", flush=True)
            first, wall = timed_sync(service, provider, args.workers)
            print(f"first sync:  {first['calls']} calls, {first['rows_written']} rows written, "
                  f"{first['failed']} failed runs, {wall:.1f} s", flush=True)
            second, rewall = timed_sync(service, provider, args.workers)
            print(f"no-change re-run: {second['calls']} calls, {second['rows_written']} rows written, "
                  f"{second['rows_removed']} removed, {rewall:.1f} s", flush=True)
            sim_calls = sim.control.calls()
    finally:
        sim.stop()
    return {"first": first, "second": second, "wall": wall, "truth_customers": truth_customers, "sim_calls": sim_calls}


def report(run: dict, rate: int, budget: int) -> dict:
    """Print the comparisons; returns the figures of the last (JSON) line."""
    first, second, wall = run["first"], run["second"], run["wall"]
    min_calls = math.ceil(run["truth_customers"] / CUSTOMER_PAGE) + 2 * run["truth_customers"]  # + subs + agreements
    bound = first["calls"] / rate * 60
    throttled = first["throttled_429"] + second["throttled_429"]
    sim_throttled = sum(v.get("throttled", 0) for v in run["sim_calls"].values())
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"calls: {first['calls']} made vs {min_calls} minimum ({first['calls'] / min_calls:.3f}x)")
    print(f"wall: {wall:.1f} s vs bound {bound:.1f} s ({wall / bound:.2f}x); the client budget ({budget}/minute, "
          "a sliding window) sends a first window's worth at once, then paces at 90% of the limit")
    print(f"429s: {throttled} seen by the client, {sim_throttled} counted by the simulator")
    print(f"no-change re-run writes: {second['rows_written'] + second['rows_removed']}")
    print(f"peak RSS (sync process): {peak_rss_mb:.0f} MB")
    return {
        "calls": first["calls"], "min_calls": min_calls, "wall_s": round(wall, 2), "bound_s": round(bound, 2),
        "wall_vs_bound": round(wall / bound, 3), "throttled_429": throttled,
        "resync_writes": second["rows_written"] + second["rows_removed"], "peak_rss_mb": round(peak_rss_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    customers, subs, rate = (200, 5, 1000) if args.quick else (1000, 5, 2000)
    budget = int(rate * 0.9)  # the client keeps 10% below the service's limit
    run = run_syncs(args, customers, subs, rate, budget)
    print(json.dumps(report(run, rate, budget)))
    return 0 if run["first"]["failed"] == 0 and run["second"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
