"""The activity log (`GET /v1/auditrecords`) and the records the simulated Partner Center writes
when customers, subscriptions or agreements change.

Documented shape (partner-center-api.md §7.3): `startDate`/`endDate` are dates (yyyy-mm-dd, the
end date inclusive), at most 90 days back (an older start is a 400), the start defaults to 30
days ago; `size` per page with seek paging (`MS-ContinuationToken` + `seekOperation=Next`, §2.5);
`filter` is `{"Field": "CustomerId"|"ResourceType"|"CompanyName", "Value": ..., "Operator":
"equals"|"substring"}`. Records come in operation order (oldest first); the log itself is
:mod:`simulator.audit_log`.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from simulator.pc_common import (SALES_ROLES, SERVICE, PartnerCenterAuth, collection, decode_token, encode_token,
                                 fail, link, lower_keys, parse_size)
from simulator.web import Request, Response, Router, json_response, route

if TYPE_CHECKING:  # state.py holds the log: no import at run time
    from simulator.state import SimulatorState

WINDOW_DAYS = 90
DEFAULT_DAYS = 30
PAGE_DEFAULT, PAGE_MAX = 50, 500
FILTER_FIELDS = {"customerid": "customerId", "resourcetype": "resourceType", "companyname": "customerName"}


def audit(state: "SimulatorState", customer_id: str, resource_type: str, operation_type: str,
          new_value: dict | None = None, **customized: str) -> dict:
    """Write one activity-log record (the state lock is taken here; it is re-entrant)."""
    with state.lock:
        return state.audit.add(state, customer_id=customer_id.lower(), resource_type=resource_type,
                               operation_type=operation_type, new_value=new_value, customized=customized)


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _parse_day(raw: str | None, name: str) -> dt.date | None:
    if raw in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(raw)[:10])
    except ValueError:
        raise fail(400, 2000, f"{name} must be a date (yyyy-mm-dd).", [name])


def _filter(raw: str | None):
    if not raw:
        return None
    try:
        spec = lower_keys(json.loads(raw))
        field_name = FILTER_FIELDS[str(spec["field"]).lower()]
        value, operator = str(spec["value"]).lower(), str(spec.get("operator", "equals")).lower()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise fail(400, 2000, "The filter must be JSON like {\"Field\":\"CustomerId\",\"Value\":\"...\","
                              "\"Operator\":\"equals\"} (fields CustomerId, ResourceType, CompanyName).")
    if operator not in ("equals", "substring"):
        raise fail(400, 2000, "Audit record filters allow the equals and substring operators.", [operator])

    def matches(record: dict) -> bool:
        text = str(record.get(field_name) or "").lower()
        return text == value if operator == "equals" else value in text
    return matches


class AuditRecords:
    def __init__(self, state: "SimulatorState", auth: PartnerCenterAuth):
        self.state, self.auth = state, auth

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

    def _window(self, start_raw, end_raw) -> tuple[dt.datetime, dt.datetime]:
        today = self.state.clock.now().date()
        start = _parse_day(start_raw, "startDate") or today - dt.timedelta(days=DEFAULT_DAYS)
        end = _parse_day(end_raw, "endDate") or today
        if start < today - dt.timedelta(days=WINDOW_DAYS):
            raise fail(400, 2000, f"startDate cannot be more than {WINDOW_DAYS} days in the past.", ["startDate"])
        if end < start:
            raise fail(400, 2000, "endDate must not be before startDate.", ["endDate"])
        midnight = dt.time(tzinfo=dt.timezone.utc)
        return dt.datetime.combine(start, midnight), dt.datetime.combine(end + dt.timedelta(days=1), midnight)

    @route("GET", "/v1/auditrecords")
    def list_audit_records(self, req: Request) -> Response:
        self.auth.require(req, roles=SALES_ROLES)
        if str(req.query.get("seekOperation", "")).lower() == "next":
            token = decode_token(req.headers.get("MS-ContinuationToken"), ("after", "size", "start", "end"))
            start_raw, end_raw, raw_filter = token["start"], token["end"], token.get("filter")
            after, size = int(token["after"]), int(token["size"])
        else:
            start_raw, end_raw, raw_filter = req.query.get("startDate"), req.query.get("endDate"), req.query.get("filter")
            after, size = -1, parse_size(req, PAGE_DEFAULT, PAGE_MAX)
        start, end = self._window(start_raw, end_raw)
        matches = _filter(raw_filter)
        with self.state.lock:
            # positions in the append-only log (operation order): pages never skip or repeat a record
            found = [(i, r) for i, r in enumerate(self.state.audit.records)
                     if i > after and start <= r["_at"] < end and (matches is None or matches(r))]
        page, more = found[:size], len(found) > size
        self_uri = f"/auditrecords?startDate={start.date()}&endDate={(end - dt.timedelta(days=1)).date()}&size={size}"
        token = next_link = None
        if more:
            token = encode_token({"after": page[-1][0], "size": size, "start": str(start.date()),
                                  "end": str((end - dt.timedelta(days=1)).date()), "filter": raw_filter})
            next_link = link(f"/auditrecords?size={size}&seekOperation=Next", "GET",
                             [{"key": "MS-ContinuationToken", "value": token}])
        return json_response(200, collection([_public(r) for _, r in page], self_uri, next_link, token))


def all_records(state: "SimulatorState") -> list[dict]:
    with state.lock:
        return [_public(r) for r in state.audit.records]
