"""The write-backs timer (``PCSYNC_SCHEDULE_WRITEBACKS``): the work that waits for a time.

Each run
1. applies the scheduled write-backs that are due (``effectiveDate`` reached);
2. re-checks the ones waiting on a customer (an attestation link: accepted, expired?);
3. re-reads each subscription whose end-of-term action was set at least the settling time ago
   (Partner Center may convert "auto-renew off" into EST within 24 hours) and records on the
   write-back whether the action held or drifted;
4. raises and clears the end-of-term alerts from the synced subscriptions (EST without a chosen
   EST, drift from the chosen action), so the next sync's view is reported too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.clock import parse_iso, to_iso
from shared.logging import get_logger
from shared.partner_center_errors import PartnerCenterError

from .alerts import AlertKind, Alerts, sweep
from .end_of_term import drift
from .log import INVALID_PARTITION
from .record import WritebackRecord, WritebackState
from .rules import snapshot
from .subscription_apply import subscription_path

log = get_logger(__name__)


@dataclass
class TimerReport:
    applied: list[str] = field(default_factory=list)  # keys of scheduled records applied
    rechecked: list[str] = field(default_factory=list)  # keys of waiting records re-checked
    verified: dict[str, str] = field(default_factory=dict)  # key -> held | drifted | unreadable
    alerts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "rechecked": self.rechecked, "verified": self.verified,
                "alerts": self.alerts}


class WritebackTimer:
    def __init__(self, service: Any):
        self.service = service
        self.clock = service.clock

    def _records(self, found: list) -> list[WritebackRecord]:
        return [WritebackRecord.from_entity(*row) for row in found if row[0].get("PartitionKey") != INVALID_PARTITION]

    def run(self, providers: list[Any]) -> TimerReport:
        """One pass; a record or provider that fails is logged and the others go on."""
        report = TimerReport()
        now = self.clock()
        log_store = self.service.log_store
        for record in self._records(log_store.in_state(WritebackState.SCHEDULED.value)):
            if record.scheduled_for is None or record.scheduled_for <= now:
                if self._isolated(record.idempotency_key, lambda r=record: self._apply(r)):
                    report.applied.append(record.idempotency_key)
        for record in self._records(log_store.in_state(WritebackState.WAITING.value)):
            if self._isolated(record.idempotency_key, lambda r=record: self._apply(r)):
                report.rechecked.append(record.idempotency_key)
        for record in self._records(log_store.verifications_pending()):
            due = parse_iso((record.verification or {}).get("checkAt"))
            if due is None or due <= now:
                state = self._isolated(record.idempotency_key, lambda r=record: self.verify(r))
                report.verified[record.idempotency_key] = state or "unreadable"
        for provider in providers:
            found = self._isolated(f"alerts of {provider.id}",
                                   lambda p=provider: sweep(self.service.tables, p.id, self.clock))
            report.alerts += len(found or [])
        return report

    @staticmethod
    def _isolated(what: str, work: Any) -> Any:
        try:
            return work()
        except Exception:  # noqa: BLE001 - one record or provider must not stop the others
            log.exception("write-backs timer: %s failed", what)
            return None

    def _apply(self, record: WritebackRecord) -> WritebackRecord:
        """Apply now, in this process: a failure is on the record (and retried on a later run
        when it is transient and the record is still due)."""
        from .applier import ApplyFailed, ClaimHeld, WaitingForEarlier

        try:
            return self.service.apply(record, delivery=1, max_deliveries=1)
        except (ApplyFailed, ClaimHeld, WaitingForEarlier):
            return self.service.find_record(record.provider_id, record.idempotency_key) or record

    def verify(self, record: WritebackRecord) -> str:
        """Re-read the subscription and record whether the chosen end of term held."""
        verification = dict(record.verification or {})
        provider = self.service.providers.find_provider(record.provider_id)
        try:
            client = self.service.client_factory(provider, record)
            current = client.get_json(subscription_path(record), customer_id=record.customer_id)
        except PartnerCenterError as exc:  # read again on the next run
            log.warning("write-back %s/%s: end of term not re-checked: %s", record.provider_id,
                        record.idempotency_key, exc, extra={"provider_id": record.provider_id})
            return "unreadable"
        reason = drift(str(verification.get("action")), current)
        verification.update(state="drifted" if reason else "held", checkedAt=to_iso(self.clock()),
                            evidence={k: v for k, v in snapshot(current).items() if k != "etag"}, drift=reason)
        record.verification = verification
        if reason:
            record.warnings.append(f"drift after the settling time: {reason}")
            Alerts(self.service.tables, self.clock).raise_alert(
                record.provider_id, AlertKind.END_OF_TERM_DRIFT, record.customer_id, record.subscription_id or "",
                reason)
        record.updated_at = self.clock()
        self.service.log_store.replace(record.to_entity(), etag=record.etag)
        return verification["state"]


__all__ = ["TimerReport", "WritebackTimer"]
