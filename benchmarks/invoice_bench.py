"""Invoice import benchmark: one big invoice through Graph v2 and one through v1 paging.

    python benchmarks/invoice_bench.py           # 200,000 billed lines per invoice, a 5,000-line Azurite leg,
                                                 # a 1,000,000-line leg and the usage checksum on 100,000 lines
    python benchmarks/invoice_bench.py --quick   # 40,000 lines (+ 2,000 on Azurite), no 1,000,000-line leg

The simulator runs in its own process, so this process's memory is the importer's alone.

Legs:
* ``v2``: a G invoice, Graph billed reconciliation export (202, polling, manifest, gzip JSON Lines
  blobs streamed), every line mapped, hashed and batched;
* ``v1``: a D invoice, v1 office + azure billing line items (size/offset, 2,000 per page);
* ``azurite``: a smaller G invoice imported into Azurite, then ``raw``: the very rows the import
  stored, read back and upserted again into fresh tables of the same Azurite with plain
  100-entity transactions (one partition each, as many threads as the import's writer); the
  pair is repeated ``--azurite-repeats`` times (default 3) on fresh invoices, the previous one's
  rows deleted in between, and ``azurite_ratio_to_raw`` is the median pair's import rows/s /
  raw rows/s (``azurite_ratios``: every pair's): what pcsync's pipeline costs over Table Storage
  itself, measured in the same run. On this shared 2-core machine one pair's raw wall time alone
  moved by 40 % between runs, hence the pairs. Then the last invoice is re-imported
  (``reimport_writes``: a new generation, the previous one swept);
* ``1m``: a 1,000,000-line G invoice into the sink (``peak_rss_mb_1m``: flat memory);
* ``checksum``: the usage checksum over 100,000 reconciliation lines and their usage rows, parsed
  in this process without HTTP (``checksum_s_per_100k``).

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


SINK_TABLES = ("invoicelineitems", "invoiceusage")   # the import's line and usage rows
RAW_WORKERS = 4    # the import's writer threads (sync/invoices/store.py); the raw leg uses as many


class SinkTableClient:
    """Stands in for the SDK's TableClient under a real ``TableRepository``: checks every
    transaction against Table Storage's rules (<= 100 entities, one partition) and keeps nothing,
    so the repository's own batching is part of what is measured. Thread-safe (writers batch
    on threads)."""

    def __init__(self, table_name: str):
        self.table_name = table_name
        self.written = 0
        self.batches = 0
        self._lock = threading.Lock()

    def query_entities(self, *_args, **_kwargs):
        return iter(())

    list_entities = query_entities

    def get_entity(self, *_args, **_kwargs):
        from azure.core.exceptions import ResourceNotFoundError

        raise ResourceNotFoundError("the sink keeps no rows")

    def delete_entity(self, *_args, **_kwargs) -> None:
        return None

    def upsert_entity(self, entity, **_kwargs) -> None:
        self.submit_transaction([("upsert", entity, {})])

    def submit_transaction(self, operations):
        assert len(operations) <= 100 and len({entity["PartitionKey"] for _, entity, *_ in operations}) == 1
        with self._lock:
            self.written += len(operations)
            self.batches += 1


class SinkTables:
    """Real tables (Azurite) for everything but the line and usage rows."""

    def __init__(self, real):
        from shared.tables import TableRepository

        self.real = real
        self.sinks = {name: SinkTableClient(name) for name in SINK_TABLES}
        self._repositories = {name: TableRepository(client) for name, client in self.sinks.items()}

    @property
    def sink(self) -> SinkTableClient:
        return self.sinks["invoicelineitems"]

    def table(self, name):
        return self._repositories.get(name) or self.real.table(name)


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
    parser.add_argument("--azurite-repeats", type=int, default=3,
                        help="(import, raw) pairs of the Azurite leg; azurite_ratio_to_raw is their median")
    parser.add_argument("--million-lines", type=int, help="lines of the flat-memory leg (default 1,000,000; "
                                                            "0 skips it, as --quick does)")
    parser.add_argument("--checksum-lines", type=int, help="reconciliation lines of the checksum leg (default "
                                                             "100,000; 20,000 with --quick; 0 skips it)")
    args = parser.parse_args(argv)
    args.lines = args.lines or (40_000 if args.quick else 200_000)
    if args.azurite_lines is None:
        args.azurite_lines = 2_000 if args.quick else 5_000
    if args.million_lines is None:
        args.million_lines = 0 if args.quick else 1_000_000
    if args.checksum_lines is None:
        args.checksum_lines = 20_000 if args.quick else 100_000
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


def million_leg(runtime, sim, provider, lines: int) -> dict:
    """One huge G invoice into the sink: the importer's peak RSS must stay flat."""
    sink_tables = SinkTables(runtime.tables)
    sink_service = runtime.derive(tables=sink_tables, calls_per_minute=1_000_000).invoices
    huge = sim.control.add_invoice(kind="G", line_items=lines)
    figures = leg("1m", sink_service, provider, huge["id"], lines)
    assert sink_tables.sink.written == lines
    return figures


def azurite_legs(runtime, sim, provider, lines: int, repeats: int) -> list[dict]:
    """``repeats`` pairs of (a fresh invoice imported into Azurite, the rows it stored upserted
    raw into fresh tables of the same Azurite); then the last invoice re-imported. Between pairs
    the previous invoice's rows are deleted (not timed), so that every import writes into tables
    of the same size as the raw upserts do: Azurite slows down as a table grows."""
    from sync.invoices.store import sweep

    service = runtime.derive(calls_per_minute=1_000_000).invoices
    results: list[dict] = []
    for repeat in range(repeats):
        invoice = sim.control.add_invoice(kind="G", line_items=lines)
        imported = leg("azurite" if repeat == 0 else f"azurite{repeat + 1}", service, provider, invoice["id"], lines)
        results += [imported, raw_leg(runtime.settings.storage.connection_string, invoice["id"], imported, repeat)]
        if repeat < repeats - 1:
            for name in SINK_TABLES:  # a generation no row has: every row of the invoice goes
                sweep(runtime.tables.table(name), provider.id, invoice["id"], "-")
    results.append(leg("reimport", service, provider, invoice["id"], lines))
    if results[-1]["rows_written"] != 0:   # reported as reimport_writes
        print(f"re-import: a new generation of {results[-1]['rows_written']} rows (the previous one swept)", flush=True)
    return results


def stored_rows(service, invoice_id: str) -> dict[str, list[dict]]:
    """Every row the import stored for the invoice, per table (not timed)."""
    from azure.core.exceptions import ResourceNotFoundError

    rows = {}
    for name in SINK_TABLES:
        try:
            found = service.get_table_client(name).query_entities("invoice_id eq @id", parameters={"id": invoice_id})
            rows[name] = [dict(entity) for entity in found]
        except ResourceNotFoundError:
            rows[name] = []
    return rows


def raw_upserts(service, rows: dict[str, list[dict]], workers: int = RAW_WORKERS, tag: int = 0) -> float:
    """Upsert the rows into fresh tables in 100-entity, one-partition transactions on
    ``workers`` threads; returns the seconds taken."""
    from collections import defaultdict
    from concurrent.futures import ThreadPoolExecutor

    batches = []
    for name, table_rows in rows.items():
        table = service.create_table(f"raw{name}{os.getpid()}x{tag}")
        by_partition = defaultdict(list)
        for row in table_rows:
            by_partition[row["PartitionKey"]].append(row)
        for partition_rows in by_partition.values():
            batches += [(table, partition_rows[i:i + 100]) for i in range(0, len(partition_rows), 100)]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda batch: batch[0].submit_transaction([("upsert", row) for row in batch[1]]), batches))
    return time.perf_counter() - started


def raw_leg(connection_string: str, invoice_id: str, imported: dict, repeat: int = 0) -> dict:
    """Raw batch upserts of the rows an Azurite leg's import stored, against its wall time."""
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(connection_string)
    rows = stored_rows(service, invoice_id)
    count = sum(len(table_rows) for table_rows in rows.values())
    seconds = raw_upserts(service, rows, tag=repeat)
    import_rate, raw_rate = count / imported["wall_s"], count / seconds
    figures = {"leg": f"raw{repeat + 1}" if repeat else "raw", "rows": count, "per_table": {name: len(r) for name, r in rows.items()},
               "raw_wall_s": round(seconds, 2), "raw_rows_per_s": round(raw_rate),
               "import_rows_per_s": round(import_rate), "ratio_to_raw": round(import_rate / raw_rate, 2)}
    print(f"     raw: {count:>7} stored rows {figures['per_table']} upserted raw in {figures['raw_wall_s']}s = "
          f"{figures['raw_rows_per_s']} rows/s; the import stored them at {figures['import_rows_per_s']} rows/s "
          f"= {figures['ratio_to_raw']}x raw", flush=True)
    return figures


def checksum_leg(lines: int) -> dict | None:
    """The usage checksum over ``lines`` reconciliation lines and their usage rows, in process:
    rows come from the simulator's generator, are mapped as the import maps them, and only the
    checksum's own calls are timed (the mapping time is the baseline of the same run)."""
    try:
        from shared.providers import Tolerance
        from sync.invoices.checksum import UsageChecksum
        from sync.invoices.lines import RECON_COLUMNS, USAGE_COLUMNS, build_row
    except ImportError as exc:   # the checksum is not in this checkout
        print(f"checksum: skipped ({exc})", flush=True)
        return None
    from simulator.testing import bench_streams

    recon, usage = bench_streams(lines)
    checksum, mapping_s, checksum_s = UsageChecksum(), 0.0, 0.0
    for stream, columns, add in ((recon, RECON_COLUMNS, checksum.add_recon), (usage, USAGE_COLUMNS, checksum.add_usage)):
        for index in range(stream.count):
            started = time.perf_counter()
            line = build_row(stream.export_row(index), columns, provider_id=PROVIDER_ID, invoice_id="G000000001",
                             source=stream.kind, index=index, generation="bench")
            mapped = time.perf_counter()
            add(line)
            mapping_s, checksum_s = mapping_s + mapped - started, checksum_s + time.perf_counter() - mapped
    started = time.perf_counter()
    result = checksum.result(Tolerance.parse("0.5%"))
    checksum_s += time.perf_counter() - started
    figures = {"leg": "checksum", "recon_lines": recon.count, "usage_rows": usage.count,
               "status": str(getattr(result, "status", "")), "checksum_s": round(checksum_s, 3),
               "checksum_s_per_100k": round(checksum_s * 100_000 / recon.count, 3),
               "checksum_vs_mapping": round(checksum_s / mapping_s, 3)}
    print(f"checksum: {recon.count} recon lines + {usage.count} usage rows in {figures['checksum_s']}s "
          f"({figures['checksum_s_per_100k']}s per 100,000 lines; {figures['checksum_vs_mapping']}x the time "
          f"to map the same rows), {figures['status']}", flush=True)
    return figures


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
            if args.million_lines:  # before the Azurite legs, whose raw legs hold their rows in memory
                results.append(million_leg(runtime, sim, provider, args.million_lines))
            if args.azurite_lines:
                results += azurite_legs(runtime, sim, provider, args.azurite_lines, args.azurite_repeats)
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
        pairs = [r for r in results if r["leg"].startswith("raw")]
        middle = sorted(pairs, key=lambda r: r["ratio_to_raw"])[len(pairs) // 2]  # the median pair
        summary.update({"azurite_lines": azurite_lines, "azurite_rows_per_s": by_leg["azurite"]["rows_per_s"],
                        "reimport_rows_per_s": by_leg["reimport"]["rows_per_s"],
                        "reimport_writes": by_leg["reimport"]["rows_written"],
                        "azurite_stored_rows": middle["rows"],
                        "azurite_import_rows_per_s": middle["import_rows_per_s"],
                        "azurite_raw_rows_per_s": middle["raw_rows_per_s"],
                        "azurite_ratio_to_raw": middle["ratio_to_raw"],
                        "azurite_ratios": [r["ratio_to_raw"] for r in pairs]})
    if "1m" in by_leg:
        summary.update({"lines_1m": by_leg["1m"]["lines"], "peak_rss_mb_1m": by_leg["1m"]["peak_rss_mb"],
                        "baseline_rss_mb_1m": by_leg["1m"]["baseline_rss_mb"],
                        "rows_per_s_1m": by_leg["1m"]["rows_per_s"]})
    if "checksum" in by_leg:
        summary.update({key: by_leg["checksum"][key] for key in ("checksum_s_per_100k", "checksum_vs_mapping")})
        summary["checksum_recon_lines"] = by_leg["checksum"]["recon_lines"]
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_legs(args)
    if args.checksum_lines:
        results += [figures for figures in (checksum_leg(args.checksum_lines),) if figures]
    print(json.dumps(summarize_legs(results, args.lines, args.azurite_lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
