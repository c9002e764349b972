"""The simulated activity log's records (served by :mod:`simulator.audit`), kept apart from the
route so that the state can hold the log without importing the Partner Center layer."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simulator.clock import iso

if TYPE_CHECKING:
    from simulator.state import SimulatorState


@dataclass
class AuditLog:
    """Every record in operation order (held by SimulatorState; callers hold the state lock)."""

    records: list[dict] = field(default_factory=list)

    def add(self, state: "SimulatorState", *, customer_id: str, resource_type: str, operation_type: str,
            new_value: dict | None = None, customized: dict | None = None) -> dict:
        customer = state.customers.get(customer_id.lower())
        now = state.clock.now()
        ticks = int(now.timestamp() * 10_000_000)
        record = {
            "id": f"{state.partner.tenant_id}_{customer_id}_{operation_type.replace('_', '')}_{ticks}_{len(self.records)}",
            "partnerId": state.partner.tenant_id, "participants": [state.partner.tenant_id],
            "customerId": customer_id, "customerName": customer.company_name if customer else None,
            "userPrincipalName": state.user.upn, "applicationId": state.app.client_id,
            "resourceType": resource_type, "operationType": operation_type,
            "resourceNewValue": json.dumps(new_value, separators=(",", ":")) if new_value is not None else None,
            "originalCorrelationId": str(uuid.uuid4()), "operationDate": iso(now), "operationStatus": "succeeded",
            "customizedData": [{"key": k, "value": v} for k, v in (customized or {}).items()],
            "attributes": {"objectType": "AuditRecord"},
            "_at": now,
        }
        self.records.append(record)
        return record
