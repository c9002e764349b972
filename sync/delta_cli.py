"""`pcsync sync --mode delta|full`: a delta (the activity log since the cursor, then one re-read
per customer it names) or a full sweep (catch-up, every customer, the drift report), run here
with a bounded thread pool instead of the queue. The command prints the runs' summary table, then
:func:`outcome_line`:
the mode that ran, the cursor, the calls made and saved, and (full) the drift found."""
from __future__ import annotations

import json
from typing import Any

from .delta import DeltaOutcome, DeltaService
from .runs import SyncMode

MODES = tuple(m.value for m in SyncMode)


def outcome_line(outcome: DeltaOutcome) -> str:
    parts = [f"mode {outcome.mode}"]
    if outcome.fallback:
        parts.append(f"(instead of a delta: {outcome.fallback})")
    parts.append(f"cursor {outcome.cursor or '-'}")
    parts.append(f"{outcome.records} activity record(s), {outcome.customers} customer(s)")
    parts.append(f"{outcome.calls} call(s)")
    if outcome.calls_saved is not None:
        parts.append(f"{outcome.calls_saved} saved vs a full sweep")
    if outcome.drift is not None:
        parts.append(f"drift {outcome.drift['findings']} row(s) {json.dumps(outcome.drift['by_type'], sort_keys=True)}")
    return ", ".join(parts)


def sync_mode(sync: Any, provider: Any, mode: str, workers: int) -> DeltaOutcome:
    """Run the mode over ``sync`` (the CLI's keep-going engine)."""
    service = DeltaService(sync, workers=workers)
    return service.run_delta(provider) if mode == SyncMode.DELTA else service.run_full(provider)


__all__ = ["MODES", "outcome_line", "sync_mode"]
