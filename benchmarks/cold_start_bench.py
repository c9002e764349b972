"""Cold start: how much longer importing the Functions app takes than importing azure.functions
alone, both timed in fresh interpreters of the same run (interleaved, so machine noise hits both).

    .venv/bin/python benchmarks/cold_start_bench.py [--runs 21]

The last line printed is one JSON object: runs, azure_functions_ms, function_app_ms (medians of the
import alone, interpreter start excluded), import_ratio (target <= 1.3).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the import is timed inside the child, so the interpreter's own start-up is not part of either figure
_TIMED_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter with an empty environment (as on a cold
    host: no settings, so an import-time settings read or client would fail rather than be timed)."""
    result = subprocess.run([sys.executable, "-c", _TIMED_IMPORT.format(module=module)], cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def measure_import_ratio(runs: int = 21) -> dict:
    """Medians of ``runs`` fresh imports each; one untimed import of each first writes the bytecode
    caches, so neither side pays for compiling."""
    import_seconds("function_app")
    baseline, app = [], []
    for _ in range(runs):
        baseline.append(import_seconds("azure.functions"))
        app.append(import_seconds("function_app"))
    base_median, app_median = statistics.median(baseline), statistics.median(app)
    return {"runs": runs, "azure_functions_ms": round(base_median * 1000, 1),
            "function_app_ms": round(app_median * 1000, 1), "import_ratio": round(app_median / base_median, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="fresh imports of each module (median taken)")
    args = parser.parse_args(argv)
    print(json.dumps(measure_import_ratio(args.runs)))


if __name__ == "__main__":
    main()
