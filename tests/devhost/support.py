"""Shared by the `pcsync serve` tests."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 90.0, what: str = "condition"):
    """Poll until ``predicate()`` is truthy and return it; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
