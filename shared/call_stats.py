"""CallStats: the counters of one run's calls (or of any scope that binds a client view of its own).

Its own module so that :mod:`shared.transport`, whose loop counts into it, keeps to the loop;
the transport re-exports it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class CallStats:
    """Counters for one sync run (or any scope that binds its own); the views of one run count
    into them from several worker threads."""

    calls: int = 0
    throttled: int = 0
    retries: int = 0
    token_refreshes: int = 0
    budget_wait_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


__all__ = ["CallStats"]
