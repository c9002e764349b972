"""Timer triggers on their NCRONTAB schedules (six fields, seconds first, UTC), checked and
expanded by the same code `pcsync doctor` uses (admin.doctor.next_occurrences, over croniter).

A timer never overlaps itself: an occurrence that passes while the previous run is still going
fires once when it ends, with ``past_due`` set, as the host's singleton timer does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping

from azure.functions.timer import TimerRequest

from admin.doctor import next_occurrences
from devhost.index import TimerFunction, invoke, resolve_setting_expressions
from devhost.listener import Listener

log = logging.getLogger("devhost.timers")
# a run that starts this much after its occurrence is past due (the host's own slack is similar)
PAST_DUE_AFTER = timedelta(seconds=1)
SHOWN_OCCURRENCES = 3


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ScheduledTimer:
    function: TimerFunction
    expression: str       # the schedule after %SETTING% resolution

    def next_after(self, moment: datetime) -> datetime:
        return next_occurrences(self.expression, now=moment, count=1)[0]


def schedule(function: TimerFunction, environ: Mapping[str, str]) -> ScheduledTimer:
    """The timer with its schedule resolved and checked; ValueError saying what is wrong."""
    try:
        expression = resolve_setting_expressions(function.schedule, environ)
    except KeyError as missing:
        raise ValueError(f"schedule {function.schedule}: app setting {missing.args[0]} is not set") from None
    try:
        next_occurrences(expression, now=_utcnow(), count=1)
    except ValueError as exc:
        raise ValueError(f"schedule {expression!r} ({function.schedule}): {exc}") from None
    return ScheduledTimer(function, expression)


def describe(timer: ScheduledTimer, *, now: datetime | None = None) -> str:
    times = next_occurrences(timer.expression, now=now or _utcnow(), count=SHOWN_OCCURRENCES)
    shown = ", ".join(t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times)
    return f"Timer {timer.function.name}: {timer.expression!r}, next {shown}"


def fire(timer: ScheduledTimer, *, past_due: bool) -> bool:
    """Run the timer function once; False when it failed (logged; the schedule goes on)."""
    request = TimerRequest(past_due=past_due)
    try:
        invoke(timer.function.function, {timer.function.argument: request})
    except Exception:  # noqa: BLE001 - the host logs a failed run and keeps the schedule
        log.exception("timer %s failed", timer.function.name)
        return False
    log.info("timer %s ran", timer.function.name)
    return True


class TimerRunner(Listener):
    """One thread per timer: sleep until the next occurrence, fire, repeat."""

    def __init__(self, timer: ScheduledTimer, *, fire_first: bool = False,
                 clock: Callable[[], datetime] = _utcnow):
        super().__init__(f"timer-{timer.function.name}")
        self.timer, self.fire_first, self.clock = timer, fire_first, clock

    def _run(self) -> None:
        if self.fire_first:
            fire(self.timer, past_due=False)
        due = self.timer.next_after(self.clock())
        while not self._stop.is_set():
            wait = (due - self.clock()).total_seconds()
            if wait > 0 and self._stop.wait(wait):
                return
            fire(self.timer, past_due=self.clock() - due > PAST_DUE_AFTER)
            due = self.timer.next_after(due)
            if due < self.clock():   # occurrences passed while it ran: one past-due run, then on schedule
                fire(self.timer, past_due=True)
                due = self.timer.next_after(self.clock())
