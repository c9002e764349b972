"""Invoice import benchmark: one big invoice through Graph v2 and one through v1 paging.

    python benchmarks/invoice_bench.py           # 200,000 billed lines per invoice (+ a 5,000-line Azurite leg)
    python benchmarks/invoice_bench.py --quick   # 40,000 lines (+ 2,000 on Azurite)

The simulator runs in its own process, so this process's memory is the importer's alone.

Legs:
* ``v2``: a G invoice, Graph billed reconciliation export (202, polling, manifest, gzip JSON Lines
  blobs streamed), every line mapped, hashed and batched;
* ``v1``: a D invoice, v1 office + azure billing line items (size/offset, 2,000 per page);
* ``azurite``: a smaller G invoice written to Azurite, then re-imported (0 writes expected).

The v2 and v1 legs write to a table sink that checks the batch rules and discards the rows: the
pipeline (HTTP, gunzip, JSON, mapping, hashing, batching) is what is measured. Azurite is left
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


class SinkTable:
    """Accepts batches like Table Storage (<= 100 entities, one partition) and keeps nothing."""

    def __init__(self):
        self.written = 0
        self.batches = 0

    def list_entities(self, **_):
        return iter(())

    def upsert_entities(self, entities, *, replace=True):
        entities = list(entities)
        assert len(entities) <= 100 and len({e["PartitionKey"] for e in entities}) == 1
        self.written += len(entities)
        self.batches += 1
        return len(entities)


class SinkTables:
    """Real tables (Azurite) for everything but the line items."""

    def __init__(self, real):
        self.real = real
        self.sink = SinkTable()

    def table(self, name):
        return self.sink if name == "invoicelineitems" else self.real.table(name)


def leg(name, service, provider, invoice_id, expected_lines, source="auto"):
    with PeakRss() as rss:
        started = time.perf_counter()
        result = service.import_invoice(provider, invoice_id, source=source)
        wall = time.perf_counter() - started
    if result.outcome != "succeeded" or result.summary is None:
        raise SystemExit(f"{name}: import failed: {result.outcome} {result.error}")
    figures = {
        "leg": name, "invoice": invoice_id, "source": result.source, "lines": result.summary.line_count,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40,000 lines per invoice; about half a minute")
    parser.add_argument("--lines", type=int, help="billed lines per invoice for the v2 and v1 legs")
    parser.add_argument("--azurite-lines", type=int, help="lines for the Azurite leg (0 skips it)")
    args = parser.parse_args(argv)
    lines = args.lines or (40_000 if args.quick else 200_000)
    azurite_lines = args.azurite_lines if args.azurite_lines is not None else (2_000 if args.quick else 5_000)


    from devservices import build_simulator_runtime, register_and_consent, running_azurite
    from shared.runtime import set_runtime
    from simulator.testing import start_simulator_process
    from sync.engine import SyncService
    from sync.invoices.service import InvoiceService

    sim = start_simulator_process(customers=50, invoices=1, line_items_per_invoice=10, rate_limit_per_minute=1_000_000,
                                  export_running_polls=1, export_retry_after_seconds=0)
    try:
        with running_azurite() as storage:
            runtime = build_simulator_runtime(sim, storage)
            set_runtime(runtime)
            outcome = register_and_consent(runtime, sim, PROVIDER_ID, name="Benchmark partner")
            if not outcome.succeeded:
                raise SystemExit(f"consent failed: {outcome.message}")
            provider = runtime.providers.get_provider(PROVIDER_ID)

            sink_tables = SinkTables(runtime.tables)
            sink_service = InvoiceService.for_runtime(
                runtime, sync=SyncService.for_runtime(runtime, tables=sink_tables, calls_per_minute=1_000_000))
            g = sim.control.add_invoice(kind="G", line_items=lines)
            d = sim.control.add_invoice(kind="D", line_items=lines)
            results = [leg("v2", sink_service, provider, g["id"], lines),
                       leg("v1", sink_service, provider, d["id"], lines)]
            assert sink_tables.sink.written == 2 * lines

            if azurite_lines:
                service = InvoiceService.for_runtime(
                    runtime, sync=SyncService.for_runtime(runtime, calls_per_minute=1_000_000))
                small = sim.control.add_invoice(kind="G", line_items=azurite_lines)
                results.append(leg("azurite", service, provider, small["id"], azurite_lines))
                results.append(leg("reimport", service, provider, small["id"], azurite_lines))
                if results[-1]["rows_written"] != 0:
                    raise SystemExit("re-import of an unchanged invoice wrote rows")
            set_runtime(None)
    finally:
        sim.stop()

    by_leg = {r["leg"]: r for r in results}
    summary = {
        "lines": lines,
        "v2_rows_per_s": by_leg["v2"]["rows_per_s"], "v2_peak_rss_mb": by_leg["v2"]["peak_rss_mb"],
        "v2_baseline_rss_mb": by_leg["v2"]["baseline_rss_mb"], "v2_peak_vs_baseline": by_leg["v2"]["peak_vs_baseline"],
        "v1_rows_per_s": by_leg["v1"]["rows_per_s"], "v1_peak_rss_mb": by_leg["v1"]["peak_rss_mb"],
        "v1_baseline_rss_mb": by_leg["v1"]["baseline_rss_mb"], "v1_peak_vs_baseline": by_leg["v1"]["peak_vs_baseline"],
        "v1_calls": by_leg["v1"]["calls"], "v2_calls": by_leg["v2"]["calls"],
    }
    if "azurite" in by_leg:
        summary.update({"azurite_lines": azurite_lines, "azurite_rows_per_s": by_leg["azurite"]["rows_per_s"],
                        "reimport_rows_per_s": by_leg["reimport"]["rows_per_s"],
                        "reimport_writes": by_leg["reimport"]["rows_written"]})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
