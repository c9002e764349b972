"""Invoice import benchmark: one big invoice through Graph v2 and one through v1 paging.

    python benchmarks/invoice_bench.py           # 200,000 billed lines per invoice (+ a 5,000-line Azurite leg)
    python benchmarks/invoice_bench.py --quick   # 40,000 lines (+ 2,000 on Azurite)

The simulator runs in its own process, so this process's memory is the importer's alone.

Legs:
* ``v2``: a G invoice, Graph billed reconciliation export (202, polling, manifest, gzip JSON Lines
  blobs streamed), every line mapped, hashed and batched;
* ``v1``: a D invoice, v1 office + azure billing line items (size/offset, 2,000 per page);
* ``azurite``: a smaller G invoice written to Azurite, then re-imported (0 writes expected).

The v2 and v1 legs write through the real table repository to a sink that checks the batch
rules and discards the rows: the pipeline (HTTP, gunzip, JSON, mapping, hashing, batching) is
what is measured. Azurite is left
out of them because it slows down as one partition grows (measured here: about 2,000 small
entities/s into a fresh partition, under 500/s once it holds 20,000; line rows with their raw
JSON are slower still). Table Storage's published target is 2,000 entities/s per partition with
no size term, so this looks like an Azurite artefact. The Azurite leg shows the storage-bound rate at a size where it is
still meaningful, and the no-change re-import.

Peak RSS is sampled every 20 ms during each leg and compared with the RSS just before it
(the baseline of the same run). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROVIDER_ID = "bench-invoices"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * PAGE / 1e6


class PeakRss:
    """Samples this process's RSS in a background thread while a leg runs."""

    def __enter__(self) -> "PeakRss":
        self.baseline = rss_mb()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


class SinkTableClient:
    """Stands in for the SDK's TableClient under a real ``TableRepository``: checks every
    transaction against Table Storage's rules (<= 100 entities, one partition) and keeps nothing,
    so the repository's own batching is part of what is measured."""

    table_name = "invoicelineitems"

    def __init__(self):
        self.written = 0
        self.batches = 0

    def query_entities(self, *_args, **_kwargs):
        return iter(())

    def submit_transaction(self, operations):
        assert len(operations) <= 100 and len({entity["PartitionKey"] for _, entity, _ in operations}) == 1
        self.written += len(operations)
        self.batches += 1


class SinkTables:
    """Real tables (Azurite) for everything but the line items."""

    def __init__(self, real):
        from shared.tables import TableRepository

        self.real = real
        self.sink = SinkTableClient()
        self.lines = TableRepository(self.sink)

    def table(self, name):
        return self.lines if name == "invoicelineitems" else self.real.table(name)


def leg(name, service, provider, invoice_id, expected_lines, source="auto"):
    with PeakRss() as rss:
        started = time.perf_counter()
        result = service.import_invoice(provider, invoice_id, source=source)
        wall = time.perf_counter() - started
    if result.outcome != "succeeded" or result.summary is None:
        raise SystemExit(f"{name}: import failed: {result.outcome} {result.error}")
    figures = {
        "leg": name, "invoice": invoice_id, "source": result.source_text, "lines": result.summary.line_count,
        "expected_lines": expected_lines, "recon": result.summary.status, "rows_written": result.rows_written,
        "rows_unchanged": result.rows_unchanged, "calls": result.calls, "wall_s": round(wall, 2),
        "rows_per_s": round(result.summary.line_count / wall), "baseline_rss_mb": round(rss.baseline, 1),
        "peak_rss_mb": round(rss.peak, 1), "rss_growth_mb": round(rss.peak - rss.baseline, 1),
        "peak_vs_baseline": round(rss.peak / rss.baseline, 2),
    }
    print(f"{name:>8}: {figures['lines']:>7} lines via {figures['source']:<3} in {figures['wall_s']:>6}s = "
          f"{figures['rows_per_s']:>6} rows/s, {figures['calls']} calls, written {figures['rows_written']}, "
          f"recon {figures['recon']}; RSS {figures['baseline_rss_mb']} -> {figures['peak_rss_mb']} MB "
          f"({figures['peak_vs_baseline']}x)", flush=True)
    if figures["lines"] != expected_lines:
        raise SystemExit(f"{name}: {figures['lines']} lines, expected {expected_lines}")
    return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40,000 lines per invoice; about half a minute")
    parser.add_argument("--lines", type=int, help="billed lines per invoice for the v2 and v1 legs")
    parser.add_argument("--azurite-lines", type=int, help="lines for the Azurite leg (0 skips it)")
    args = parser.parse_args(argv)
    args.lines = args.lines or (40_000 if args.quick else 200_000)
    if args.azurite_lines is None:
        args.azurite_lines = 2_000 if args.quick else 5_000
    return args


def sink_legs(runtime, sim, provider, lines: int) -> list[dict]:
    """v2 and v1 legs into the sink: the pipeline without Azurite's write speed."""
    sink_tables = SinkTables(runtime.tables)
    sink_service = runtime.derive(tables=sink_tables, calls_per_minute=1_000_000).invoices
    g = sim.control.add_invoice(kind="G", line_items=lines)
    d = sim.control.add_invoice(kind="D", line_items=lines)
    results = [leg("v2", sink_service, provider, g["id"], lines),
               leg("v1", sink_service, provider, d["id"], lines)]
    assert sink_tables.sink.written == 2 * lines
    return results


def azurite_legs(runtime, sim, provider, lines: int) -> list[dict]:
    """A smaller invoice written to Azurite, then re-imported (no writes expected)."""
    service = runtime.derive(calls_per_minute=1_000_000).invoices
    small = sim.control.add_invoice(kind="G", line_items=lines)
    results = [leg("azurite", service, provider, small["id"], lines),
               leg("reimport", service, provider, small["id"], lines)]
    if results[-1]["rows_written"] != 0:
        raise SystemExit("re-import of an unchanged invoice wrote rows")
    return results


def run_legs(args: argparse.Namespace) -> list[dict]:
    from bootstrap import install_services
    from devservices import build_simulator_runtime, register_and_consent, running_azurite
    from simulator.testing import start_simulator_process

    sim = start_simulator_process(customers=50, invoices=1, line_items_per_invoice=10, rate_limit_per_minute=1_000_000,
                                  export_running_polls=1, export_retry_after_seconds=0)
    try:
        with running_azurite() as storage:
            runtime = build_simulator_runtime(sim, storage)
            install_services(runtime)
            outcome = register_and_consent(runtime, sim, PROVIDER_ID, name="Benchmark partner")
            if not outcome.succeeded:
                raise SystemExit(f"consent failed: {outcome.message}")
            provider = runtime.providers.get_provider(PROVIDER_ID)
            results = sink_legs(runtime, sim, provider, args.lines)
            if args.azurite_lines:
                results += azurite_legs(runtime, sim, provider, args.azurite_lines)
            install_services(None)
    finally:
        sim.stop()
    return results


def summarize_legs(results: list[dict], lines: int, azurite_lines: int) -> dict:
    by_leg = {r["leg"]: r for r in results}
    summary = {"lines": lines}
    for name in ("v2", "v1"):
        summary.update({f"{name}_{key}": by_leg[name][key]
                        for key in ("rows_per_s", "peak_rss_mb", "baseline_rss_mb", "peak_vs_baseline")})
    summary.update({"v1_calls": by_leg["v1"]["calls"], "v2_calls": by_leg["v2"]["calls"]})
    if "azurite" in by_leg:
        summary.update({"azurite_lines": azurite_lines, "azurite_rows_per_s": by_leg["azurite"]["rows_per_s"],
                        "reimport_rows_per_s": by_leg["reimport"]["rows_per_s"],
                        "reimport_writes": by_leg["reimport"]["rows_written"]})
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(summarize_legs(run_legs(args), args.lines, args.azurite_lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
