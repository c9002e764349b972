"""A trigger's listener: one background thread running a loop until stopped (queue pumps and
timers share it)."""
from __future__ import annotations

import threading

JOIN_SECONDS = 10


class Listener:
    """Subclasses give ``_run`` (which returns once ``self._stop`` is set) and may extend
    ``start``/``stop``."""

    def __init__(self, thread_name: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> "Listener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=JOIN_SECONDS)
