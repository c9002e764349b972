"""The simulator's business clock: real time plus an offset that tests can move forward."""
from __future__ import annotations

import datetime as dt
import threading

UTC = dt.timezone.utc


def parse_iso(value: str) -> dt.datetime:
    """Parse ISO-8601 (with Z, offsets or up to 7 fractional digits); naive means UTC."""
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{(digits + '000000')[:6]}{rest}"
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(moment: dt.datetime) -> str:
    """UTC ISO-8601 with a Z suffix, the way Partner Center writes most dates."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatorClock:
    def __init__(self, start: dt.datetime | None = None):
        self._lock = threading.Lock()
        self._offset = dt.timedelta(0)
        if start is not None:
            self._offset = start - dt.datetime.now(UTC)

    def now(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.now(UTC) + self._offset

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        with self._lock:
            self._offset += delta
            return dt.datetime.now(UTC) + self._offset

    def set(self, moment: dt.datetime) -> dt.datetime:
        with self._lock:
            self._offset = moment - dt.datetime.now(UTC)
            return moment
