"""Per-subscription order: write-backs on one subscription apply in submission order.

A later change may build on an earlier one (a new name after a reactivation, a quantity after a
renewal choice), so one that did not succeed blocks the later ones on the same subscription
(``blocked``, naming the blocker) until an operator retries it and it succeeds, or dismisses it.
An earlier one still on its way makes the later one wait (its message comes back later). A
scheduled write-back stands in the order at its effective date, not at its submission.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from shared.logging import get_logger
from shared.tables import escape_key

from .log import WritebackLog
from .record import BLOCKING_STATES, WritebackRecord, WritebackState

log = get_logger(__name__)

# An earlier record that is still ``accepted`` but has not moved for this long lost its queue
# message (an operator's retry or resubmission sends it again): it does not hold later ones up.
STALLED_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Gate:
    """Whether a record may apply now: ``blocker`` (blocked behind it), ``earlier`` (wait for it), or neither."""

    blocker: WritebackRecord | None = None
    earlier: WritebackRecord | None = None

    @property
    def open(self) -> bool:
        return self.blocker is None and self.earlier is None


def _comparable(record: WritebackRecord) -> tuple[str, str]:
    moment = record.order_moment
    return (moment.isoformat() if moment else "", record.idempotency_key)


class SubscriptionOrder:
    def __init__(self, log_store: WritebackLog, clock: Callable[[], datetime]):
        self.log_store = log_store
        self.clock = clock

    def on_subscription(self, record: WritebackRecord) -> list[WritebackRecord]:
        """Every record on the record's subscription, in order (the record itself included)."""
        if not record.subscription_id:
            return [record]
        found = self.log_store.for_subscription(escape_key(record.provider_id), record.customer_id,
                                                record.subscription_id)
        records = [WritebackRecord.from_entity(*row) for row in found]
        return sorted(records, key=_comparable)

    def gate(self, record: WritebackRecord) -> Gate:
        """Blocked behind the first earlier record that did not succeed; else waiting for the
        first earlier one still on its way; else open."""
        mine = _comparable(record)
        now = self.clock()
        for earlier in self.on_subscription(record):
            if earlier.idempotency_key == record.idempotency_key or _comparable(earlier) >= mine:
                continue
            if earlier.state in BLOCKING_STATES:
                return Gate(blocker=earlier)
            if earlier.final:
                continue
            if earlier.state == WritebackState.SCHEDULED and (earlier.scheduled_for or now) > now:
                continue
            if earlier.state == WritebackState.ACCEPTED and earlier.updated_at and \
                    now - earlier.updated_at >= STALLED_AFTER:
                log.warning("write-back %s/%s: earlier %s has been accepted since %s without being applied; "
                            "not waiting for it", record.provider_id, record.idempotency_key,
                            earlier.idempotency_key, earlier.updated_at,
                            extra={"provider_id": record.provider_id, "idempotency_key": record.idempotency_key})
                continue
            return Gate(earlier=earlier)
        return Gate()

    def blocked_followers(self, record: WritebackRecord) -> list[WritebackRecord]:
        """The later records on the subscription that are ``blocked`` (behind this one or behind
        a record that waited for it)."""
        mine = _comparable(record)
        return [later for later in self.on_subscription(record)
                if later.state == WritebackState.BLOCKED and _comparable(later) > mine]


def blocked_reason(blocker: WritebackRecord) -> str:
    why = f": {blocker.reason}" if blocker.reason else ""
    return (f"waits behind write-back {blocker.idempotency_key!r} on the same subscription, which is "
            f"{blocker.state}{why}; retry or dismiss {blocker.idempotency_key!r} to go on")[:4000]


__all__ = ["Gate", "STALLED_AFTER", "SubscriptionOrder", "blocked_reason"]
