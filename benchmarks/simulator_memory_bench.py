"""Serve 1,000,000 line items through v1 paging and through the Graph v2 export, and compare
the simulator's peak RSS (VmHWM of the subprocess) with its idle RSS measured in the same run.

    .venv/bin/python benchmarks/simulator_memory_bench.py [--line-items 1000000]

The last line printed is one JSON object: line_items, baseline_rss_mb, peak_rss_mb, ratio.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from simulator.testing import start_simulator_process, trusting_session  # noqa: E402


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found for pid {pid}")


def _token(sim, http, resource: str) -> str:
    response = http.post(f"{sim.authority_host}/{sim.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret,
        "scope": f"{resource}/.default"}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def read_v1(sim, http, invoice_id: str) -> int:
    http.headers["Authorization"] = "Bearer " + _token(sim, http, "https://api.partnercenter.microsoft.com")
    count, headers = 0, {}
    path = f"/invoices/{invoice_id}/lineitems?provider=onetime&invoicelineitemtype=billinglineitems&size=2000"
    while path:
        response = http.get(f"{sim.partner_center_url}/v1{path}", headers=headers, timeout=120)
        response.raise_for_status()
        body = response.json()
        count += len(body["items"])
        nxt = body.get("links", {}).get("next")
        path = nxt["uri"] if nxt else None
        headers = {h["key"]: h["value"] for h in nxt["headers"]} if nxt else {}
    return count


def read_v2(sim, http, invoice_id: str) -> int:
    http.headers["Authorization"] = "Bearer " + _token(sim, http, "https://graph.microsoft.com")
    base = f"{sim.graph_url}/v1.0/reports/partners/billing"
    started = http.post(f"{base}/reconciliation/billed/export", json={"invoiceId": invoice_id}, timeout=30)
    started.raise_for_status()
    while True:
        op = http.get(started.headers["Location"], timeout=30).json()
        if op["status"] != "running":
            break
        time.sleep(0.2)
    manifest = http.get(op["resourceLocation@odata.navigationLink"], timeout=30).json()
    count = 0
    for blob in manifest["blobs"]:
        with http.get(f"{manifest['rootDirectory']}/{blob['name']}?{manifest['sasToken']}", stream=True,
                      timeout=300) as response:
            response.raise_for_status()
            with gzip.GzipFile(fileobj=response.raw) as lines:   # streamed, line by line
                for line in lines:
                    json.loads(line)
                    count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--line-items", type=int, default=1_000_000)
    args = parser.parse_args()
    sim = start_simulator_process(invoices=1, customers=50, line_items_per_invoice=args.line_items,
                                  rate_limit_per_minute=10_000_000, export_running_polls=1,
                                  export_retry_after_seconds=0)
    pid = sim.process.pid
    try:
        http = trusting_session(sim.ca_bundle)
        assert sim.control.health()["status"] == "ok"
        baseline = _status_mb(pid, "VmRSS")
        print(f"idle simulator RSS: {baseline:.1f} MB", flush=True)
        invoice = sim.control.invoices()[0]
        assert invoice["id"].startswith("G"), invoice["id"]
        started = time.monotonic()
        v1 = read_v1(sim, http, invoice["id"])
        print(f"v1 paging: {v1} line items in {time.monotonic() - started:.1f} s, "
              f"peak RSS so far {_status_mb(pid, 'VmHWM'):.1f} MB", flush=True)
        started = time.monotonic()
        v2 = read_v2(sim, http, invoice["id"])
        print(f"v2 export: {v2} rows in {time.monotonic() - started:.1f} s", flush=True)
        assert v1 == v2 == args.line_items, (v1, v2)
        peak = _status_mb(pid, "VmHWM")
    finally:
        sim.stop()
    print(json.dumps({"line_items": args.line_items, "baseline_rss_mb": round(baseline, 1),
                      "peak_rss_mb": round(peak, 1), "ratio": round(peak / baseline, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
