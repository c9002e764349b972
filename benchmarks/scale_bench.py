"""Scale benchmark: full sweep, delta and nightly sweep of one provider by several worker processes
through the queue path, against the simulator (30 ms latency, its rate limit on) and Azurite.

    python benchmarks/scale_bench.py           # 10,000 customers / 50,000 subscriptions at 500 calls/minute
    python benchmarks/scale_bench.py --quick   # 500 customers / 2,500 subscriptions, under a minute

1. Full sweep: the customers timer's work (customers, then one sync-customer message each), the
   messages handled by ``--processes`` worker processes (each its own Services and in-process
   budget, one shared call budget at 95 % of the simulator's limit through table ``callbudget``).
   ``full_wall_vs_bound``: its wall time / (its calls / the limit).
2. 1 % of the customers change upstream, half with an audit record, half only through a signed
   webhook event (delivered to the registered webhook function); a few more change without any
   trace (renewals, EST conversions). The delta timer's work then runs, its messages and the
   webhooks' handled by the workers. ``delta_missed``: traced changes not in the store afterwards.
3. The nightly sweep: ``drift_found`` (its drift report) must equal the traceless changes, and
   ``store_equals_truth`` compares every stored row with the simulator's truth.

Prints one JSON line: customers, subscriptions, full_calls, full_wall_vs_bound, throttled_429,
processes, delta_calls, delta_calls_vs_full, delta_missed, drift_found, store_equals_truth, import_ratio.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PROVIDER_ID = "scale-partner"
BUDGET_SHARE = 0.95  # the client's budget: 95 % of the service's limit


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 customers; under a minute")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--rate", type=int, help="the simulator's calls/minute (default 500; quick 3,000)")
    parser.add_argument("--customers", type=int, help="a size between quick and full (5 subscriptions each)")
    return parser.parse_args(argv)


def pc_calls(sim) -> tuple[int, int]:
    """Partner Center calls and 429s the simulator counted since its counters were reset."""
    counts = [v for k, v in sim.control.calls().items() if " /v1/" in k]
    return sum(v["count"] for v in counts), sum(v["throttled"] for v in counts)


def store_matches(runtime, sim) -> tuple[bool, set[str]]:
    """Every live stored customer and subscription equals the truth; the customers that differ."""
    from shared.tables import escape_key

    def rows(table):
        return [r for r in runtime.tables.table(table).list_entities(
            query="PartitionKey ge @lo and PartitionKey lt @hi",
            parameters={"lo": escape_key(PROVIDER_ID), "hi": escape_key(PROVIDER_ID) + "~"}) if not r.get("removed")]

    differ: set[str] = set()
    truth_customers = {c["id"]: c["companyProfile"]["companyName"] for c in sim.control.customers()}
    stored_customers = {r["id"]: r.get("companyName") for r in rows("customers")}
    differ |= {c for c in truth_customers.keys() | stored_customers.keys()
               if truth_customers.get(c) != stored_customers.get(c)}
    fields = ("quantity", "status", "offerName", "commitmentEndDate", "termDuration")
    truth_subs = {(s["customerId"], s["id"]): tuple(s.get(f) for f in fields) for s in sim.control.subscriptions()}
    stored_subs = {(r["customer_id"], r["id"]): tuple(r.get(f) for f in fields) for r in rows("subscriptions")}
    differ |= {k[0] for k in truth_subs.keys() | stored_subs.keys() if truth_subs.get(k) != stored_subs.get(k)}
    truth_agreements = sum(1 for a in sim.control.agreements() if a["type"] == "MicrosoftCustomerAgreement")
    return not differ and truth_agreements == len(rows("agreements")), differ


def make_changes(sim, customers: list[str]) -> dict[str, list[str]]:
    """1 % traced (half audit, half webhook), and the traceless ones, each on its own customer."""
    from simulator.testing import ControlError

    traced = max(2, len(customers) // 100)
    traceless = max(2, len(customers) // 500)
    wanted = [("subscription_quantity", "audit" if i % 2 == 0 else "webhook") for i in range(traced)]
    wanted += [("renewal" if i % 2 == 0 else "est_conversion", "none") for i in range(traceless)]
    candidates = iter(customers[::max(1, len(customers) // (2 * len(wanted)))] + customers)
    done: dict[str, list[str]] = {"audit": [], "webhook": [], "none": []}
    used: set[str] = set()
    for kind, trace in wanted:
        for customer in candidates:
            if customer in used:
                continue
            try:
                sim.control.upstream_change(kind, customer, trace=trace)
            except ControlError:  # no subscription that can take this change: the next customer
                continue
            used.add(customer)
            done[trace].append(customer)
            break
    return done


def run(args: argparse.Namespace) -> dict:
    from bootstrap import install_services
    from devservices import build_simulator_runtime, register_and_consent, running_azurite
    from devworkers import QueueWorkers, webhook_endpoint
    from simulator.testing import start_simulator_process

    customers, per_customer = (args.customers or (500 if args.quick else 10_000)), 5
    rate = args.rate or (3_000 if args.quick else 500)
    budget = str(int(rate * BUDGET_SHARE))
    sim = start_simulator_process(customers=customers, subscriptions_per_customer=per_customer, nce_fraction=0.5,
                                  rate_limit_per_minute=rate, latency_ms=args.latency_ms,
                                  latency_jitter_ms=args.latency_ms / 5)
    try:
        with running_azurite() as storage, webhook_endpoint() as hooks:
            runtime = build_simulator_runtime(sim, storage, PCSYNC_CALLS_PER_MINUTE=budget)
            install_services(runtime)
            assert register_and_consent(runtime, sim, PROVIDER_ID, name="Scale partner").succeeded
            runtime.webhook_registrations.register(
                PROVIDER_ID, f"{hooks}/api/webhooks/partner-center/{PROVIDER_ID}?code=bench", ["subscription-updated"])
            provider = runtime.providers.get_provider(PROVIDER_ID)
            with QueueWorkers(sim, storage, processes=args.processes,
                              settings={"PCSYNC_CALLS_PER_MINUTE": budget}) as workers:
                figures = phases(args, runtime, sim, provider, workers, rate)
            figures["subscriptions"] = len(sim.control.subscriptions())
            figures["customers"] = customers
    finally:
        sim.stop()
    return figures


def phases(args, runtime, sim, provider, workers, rate: int) -> dict:
    print(f"simulator: {rate}/minute, {args.latency_ms:.0f} ms latency; {args.processes} worker processes, "
          f"budget {BUDGET_SHARE:.0%}", file=sys.stderr, flush=True)
    sim.control.reset_calls()
    started = time.time()
    runtime.delta.run_full(provider, enqueue=True)
    wall = workers.wait_idle() - started
    full_calls, throttled = pc_calls(sim)
    bound = full_calls / rate * 60
    print(f"full sweep: {full_calls} calls in {wall:.1f} s vs bound {bound:.1f} s, {throttled} 429s",
          file=sys.stderr, flush=True)

    sim.control.reset_calls()
    changes = make_changes(sim, [c["id"] for c in sim.control.customers()])
    runtime.delta.run_delta(provider, enqueue=True)
    workers.wait_idle()
    delta_calls, delta_throttled = pc_calls(sim)
    _, differ = store_matches(runtime, sim)
    missed = len(differ & set(changes["audit"] + changes["webhook"]))
    print(f"delta: {delta_calls} calls, {missed} traced change(s) missed, {len(differ)} customer(s) differ",
          file=sys.stderr, flush=True)

    sim.control.reset_calls()
    sweep = runtime.delta.run_full(provider, enqueue=True)
    workers.wait_idle()
    night_calls, night_throttled = pc_calls(sim)
    report = runtime.delta.reports.latest(provider.id)
    assert report["sweep_id"] == sweep.sweep_id
    equal, _ = store_matches(runtime, sim)
    print(f"nightly sweep: {night_calls} calls, drift {report['findings']} {json.dumps(report['by_type'])} "
          f"(traceless changes: {len(changes['none'])})", file=sys.stderr, flush=True)
    return {"full_calls": full_calls, "full_wall_vs_bound": round(wall / bound, 3),
            "throttled_429": throttled + delta_throttled + night_throttled, "processes": args.processes,
            "delta_calls": delta_calls, "delta_calls_vs_full": round(delta_calls / full_calls, 4),
            "delta_missed": missed, "drift_found": report["findings"], "store_equals_truth": equal,
            "traceless_changes": len(changes["none"])}


KEYS = ("customers", "subscriptions", "full_calls", "full_wall_vs_bound", "throttled_429", "processes",
        "delta_calls", "delta_calls_vs_full", "delta_missed", "drift_found", "store_equals_truth", "import_ratio")


def main(argv: list[str] | None = None) -> int:
    from cold_start_bench import measure_import_ratio

    args = parse_args(argv)
    figures = run(args)
    figures["import_ratio"] = measure_import_ratio(11 if args.quick else 21)["import_ratio"]
    print(json.dumps({key: figures[key] for key in KEYS}))
    ok = figures["throttled_429"] == 0 and figures["delta_missed"] == 0 and figures["store_equals_truth"] \
        and figures["drift_found"] == figures["traceless_changes"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
