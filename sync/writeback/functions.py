"""Write-back blueprint: submit and read write-backs over HTTP (function key), apply them from
queue ``writebacks``. Handlers decode, call the service and map the outcome."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import azure.functions as func

from shared.edges import NO_STORE, error_answer, json_call
from shared.http import error_response, json_response, read_json_body
from shared.logging import get_logger
from shared.provider_ids import PROVIDER_ID_PATTERN
from shared.settings import STORAGE_SETTING

from ..names import WRITEBACK_QUEUE
from .request import CUSTOMER_PATTERN, KEY_PATTERN

log = get_logger(__name__)

bp = func.Blueprint()

INVALID_WRITEBACK = "the write-back request is not valid"


def _location(key: str) -> str:
    return f"/api/writebacks/{quote(key, safe='')}"


@bp.function_name("writebacks_submit")
@bp.route(route="writebacks", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_submit(req: func.HttpRequest) -> func.HttpResponse:
    """202 + Location when queued (or newly scheduled); 200 with the existing record for a
    repeated request. ``?preview=true``: 200 with the preview, nothing logged or sent."""
    from bootstrap import get_services

    preview = (req.params.get("preview") or "").lower()
    if preview not in ("", "true", "false"):
        return error_response(400, "preview must be true or false")
    try:
        if preview == "true":
            return json_response(get_services().writeback.preview(read_json_body(req)), 200, headers=NO_STORE)
        outcome = get_services().writeback.submit(read_json_body(req), source="http")
    except Exception as exc:  # noqa: BLE001 - the error table answers
        return error_answer(exc, what="write-back submission", invalid=INVALID_WRITEBACK)
    record = outcome.record
    headers = {"Location": _location(record.idempotency_key), **NO_STORE}
    return json_response(record.to_json(), 202 if outcome.queued or outcome.created else 200, headers=headers)


def _list_filter(req: func.HttpRequest) -> tuple[str | None, Any] | str:
    """(provider, WritebackFilter) from the query string, or the message of a 400."""
    from .queries import WritebackFilter
    from .record import WritebackState

    provider, state = req.params.get("provider") or None, req.params.get("state") or None
    customer, subscription = req.params.get("customer") or None, req.params.get("subscription") or None
    if provider is not None and not PROVIDER_ID_PATTERN.match(provider):
        return "provider must be a provider id"
    for name, value in (("customer", customer), ("subscription", subscription)):
        if value is not None and not CUSTOMER_PATTERN.match(value):
            return f"{name} must be a Partner Center id"
    if state is not None and state not in {s.value for s in WritebackState}:
        return f"state must be one of {', '.join(s.value for s in WritebackState)}"
    return provider, WritebackFilter(customer_id=customer, subscription_id=subscription, state=state)


@bp.function_name("writebacks_list")
@bp.route(route="writebacks", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_list(req: func.HttpRequest) -> func.HttpResponse:
    """``{"items": [...], "next": token or null}``; ``?next=`` the token for the next page,
    ``?limit=`` 1..1000 (default 50)."""
    from bootstrap import get_services

    parsed = _list_filter(req)
    if isinstance(parsed, str):
        return error_response(400, parsed)
    provider, where = parsed
    limit = req.params.get("limit") or "50"
    if not limit.isdigit():
        return error_response(400, "limit must be a whole number 1..1000")
    return json_call(lambda: get_services().writeback.list_records(provider, where, limit=int(limit),
                                                                   token=req.params.get("next") or None),
                     what="write-back list", headers=NO_STORE)


def _keyed(req: func.HttpRequest, what: str, call: Any) -> func.HttpResponse:
    """A route on one write-back: its key (route) and optional provider checked, then
    ``call(key, provider)`` answered as the record's JSON (404 unknown, 409 a state refusal)."""
    key = req.route_params.get("key", "")
    provider = req.params.get("provider") or None
    if not KEY_PATTERN.match(key):
        return error_response(400, "not a write-back idempotency key")
    if provider is not None and not PROVIDER_ID_PATTERN.match(provider):
        return error_response(400, "provider must be a provider id")
    return json_call(lambda: call(key, provider).to_json(), what=what, headers=NO_STORE)


def _operator_action(req: func.HttpRequest, action: str) -> func.HttpResponse:
    from bootstrap import get_services

    service = get_services().writeback
    return _keyed(req, f"write-back {action}", service.retry if action == "retry" else service.dismiss)


@bp.function_name("writebacks_retry")
@bp.route(route="writebacks/{key}/retry", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_retry(req: func.HttpRequest) -> func.HttpResponse:
    """The updated record; 404 unknown key, 409 when its state cannot be retried."""
    return _operator_action(req, "retry")


@bp.function_name("writebacks_dismiss")
@bp.route(route="writebacks/{key}/dismiss", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_dismiss(req: func.HttpRequest) -> func.HttpResponse:
    """The updated record; 404 unknown key, 409 when its state cannot be dismissed."""
    return _operator_action(req, "dismiss")


@bp.function_name("writebacks_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_WRITEBACKS%", run_on_startup=False, use_monitor=True)
def writebacks_timer(timer: func.TimerRequest) -> None:
    """Scheduled write-backs that are due, waiting attestations, end-of-term re-checks, alerts."""
    from bootstrap import get_services

    report = get_services().writeback.run_timer()
    log.info("write-backs timer: %s", report.to_json())


@bp.function_name("writebacks_get")
@bp.route(route="writebacks/{key}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_get(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    return _keyed(req, "write-back lookup", get_services().writeback.get_record)


@bp.function_name("writebacks_queue")
@bp.queue_trigger(arg_name="msg", queue_name=WRITEBACK_QUEUE, connection=STORAGE_SETTING)
def writebacks_queue(msg: func.QueueMessage) -> None:
    """Bad messages are recorded as rejected and dropped; transient Partner Center failures
    raise (after recording ``failed``) so the host redelivers, then moves it to writebacks-poison."""
    from bootstrap import get_services

    record = get_services().writeback.handle_message(msg.get_body(), message_id=msg.id or "",
                                                      dequeue_count=msg.dequeue_count or 1)
    log.info("write-back message %s: %s %s", msg.id, record.idempotency_key, record.state,
             extra={"message_id": msg.id, "state": record.state.value})
