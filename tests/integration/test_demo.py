"""`make demo`'s main job ends with a one-line JSON summary of everything it did."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_demo_runs_consent_verify_and_sync_and_summarises_on_its_last_line():
    result = subprocess.run([sys.executable, "demo.py", "--customers", "8"], cwd=ROOT, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert lines[-2].startswith("Try the admin page: make serve, then open http://localhost:7071/api/admin")
    assert summary["provider"] == "microsoft-us"
    assert summary["consent"] == {"status": "active"}
    assert summary["verify"]["failed"] == 0 and summary["verify"]["passed"] >= 6
    assert summary["synced"]["customers"] == 8 and summary["synced"]["subscriptions"] > 0
    assert summary["invoice"]["reconciliation"] == "reconciled" and summary["invoice"]["source"] == "v2"
    assert summary["synced"]["invoicelineitems"] == summary["invoice"]["lines"] > 0
    checksum = summary["checksum"]
    assert checksum["status"] == "passed" and checksum["explained"] == checksum["difference"]  # only rounding
    assert summary["unbilled"]["current"] > 0 and summary["unbilled"]["previous"] > 0
    assert summary["writeback"] == {"state": "succeeded"}
    assert summary["endOfTerm"] == {"state": "succeeded", "action": "cancel"}
    assert summary["preview"]["allowed"] is False and "cancellation window" in summary["preview"]["reason"]
    assert summary["resync_writes"] == 0
    # the demo prints what it stored but never a token or the app's secret
    assert "eyJ" not in result.stdout + result.stderr
