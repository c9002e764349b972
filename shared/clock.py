"""Time, once: the UTC clock and the one ISO 8601 form pcsync stores and prints."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_iso(moment: datetime | None) -> str | None:
    """``2026-12-01T21:30:00Z``: UTC, whole seconds, the form Partner Center writes itself."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(value: Any) -> datetime | None:
    """A stored or Partner Center timestamp as UTC: ``Z`` or an offset, up to 7 fractional digits
    (Partner Center prints 7, Python reads 6), or a plain date; a naive one is taken as UTC.
    None when empty or not a timestamp."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    match = _TIMESTAMP.match(str(value).strip())
    if not match:
        return None
    day, clock, fraction, zone = match.groups()
    micro = fraction[1:7].ljust(6, "0") if fraction else ""
    stamp = f"{day}T{clock or '00:00:00'}{'.' + micro if micro else ''}{'+00:00' if zone in (None, 'Z') else zone}"
    try:
        return datetime.fromisoformat(stamp).astimezone(timezone.utc)
    except ValueError:
        return None


_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?$")
