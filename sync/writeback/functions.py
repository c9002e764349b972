"""Write-back blueprint: submit and read write-backs over HTTP (function key), apply them from
queue ``writebacks``. Handlers decode, call the service and map the outcome."""
from __future__ import annotations

from urllib.parse import quote

import azure.functions as func

from shared.edges import NO_STORE, error_answer, json_call
from shared.http import error_response, json_response, read_json_body
from shared.logging import get_logger
from shared.provider_ids import PROVIDER_ID_PATTERN
from shared.settings import STORAGE_SETTING

from ..names import WRITEBACK_QUEUE
from .request import KEY_PATTERN

log = get_logger(__name__)

bp = func.Blueprint()

INVALID_WRITEBACK = "the write-back request is not valid"


def _location(key: str) -> str:
    return f"/api/writebacks/{quote(key, safe='')}"


@bp.function_name("writebacks_submit")
@bp.route(route="writebacks", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_submit(req: func.HttpRequest) -> func.HttpResponse:
    """202 + Location when queued; 200 with the existing record for a repeated request."""
    from bootstrap import get_services

    try:
        outcome = get_services().writeback.submit(read_json_body(req), source="http")
    except Exception as exc:  # noqa: BLE001 - the error table answers
        return error_answer(exc, what="write-back submission", invalid=INVALID_WRITEBACK)
    record = outcome.record
    headers = {"Location": _location(record.idempotency_key), **NO_STORE}
    return json_response(record.to_json(), 202 if outcome.queued else 200, headers=headers)


@bp.function_name("writebacks_get")
@bp.route(route="writebacks/{key}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_get(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    key = req.route_params.get("key", "")
    provider = req.params.get("provider") or None
    if not KEY_PATTERN.match(key):
        return error_response(400, "not a write-back idempotency key")
    if provider is not None and not PROVIDER_ID_PATTERN.match(provider):
        return error_response(400, "provider must be a provider id")
    return json_call(lambda: get_services().writeback.get_record(key, provider).to_json(), what="write-back lookup",
                     headers=NO_STORE)


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
