"""Write-back blueprint: submit and read write-backs over HTTP (function key), apply them from
queue ``writebacks``. Handlers decode, call service.py and map the outcome."""
from __future__ import annotations

from urllib.parse import quote

import azure.functions as func

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.http import BadRequest, error_response, json_response, read_json_body
from shared.logging import get_logger
from shared.providers import PROVIDER_ID_PATTERN
from shared.runtime import get_runtime
from shared.settings import STORAGE_SETTING

from . import service as writeback

log = get_logger(__name__)

bp = func.Blueprint()

NO_STORE = {"Cache-Control": "no-store"}


def _location(key: str) -> str:
    return f"/api/writebacks/{quote(key, safe='')}"


@bp.function_name("writebacks_submit")
@bp.route(route="writebacks", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_submit(req: func.HttpRequest) -> func.HttpResponse:
    """202 + Location when queued; 200 with the existing record for a repeated request."""
    try:
        outcome = writeback.submit(get_runtime(), read_json_body(req), source="http")
    except BadRequest as exc:
        return error_response(exc.status, str(exc))
    except ValidationFailed as exc:
        return error_response(400, "the write-back request is not valid", exc.problems)
    except NotFound as exc:
        return error_response(404, str(exc))
    except Conflict as exc:
        return error_response(409, str(exc))
    record = outcome.record
    headers = {"Location": _location(record.idempotency_key), **NO_STORE}
    return json_response(record.to_json(), 202 if outcome.queued else 200, headers=headers)


@bp.function_name("writebacks_get")
@bp.route(route="writebacks/{key}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def writebacks_get(req: func.HttpRequest) -> func.HttpResponse:
    key = req.route_params.get("key", "")
    provider = req.params.get("provider") or None
    if not writeback.KEY_PATTERN.match(key):
        return error_response(400, "not a write-back idempotency key")
    if provider is not None and not PROVIDER_ID_PATTERN.match(provider):
        return error_response(400, "provider must be a provider id")
    try:
        record = writeback.get_record(get_runtime(), key, provider)
    except NotFound as exc:
        return error_response(404, str(exc))
    except Conflict as exc:
        return error_response(409, str(exc))
    return json_response(record.to_json(), headers=NO_STORE)


@bp.function_name("writebacks_queue")
@bp.queue_trigger(arg_name="msg", queue_name=writeback.WRITEBACK_QUEUE, connection=STORAGE_SETTING)
def writebacks_queue(msg: func.QueueMessage) -> None:
    """Bad messages are recorded as rejected and dropped; transient Partner Center failures
    raise (after recording ``failed``) so the host redelivers, then moves it to writebacks-poison."""
    record = writeback.run_message(get_runtime(), msg.get_body(), message_id=msg.id or "",
                                   dequeue_count=msg.dequeue_count or 1)
    log.info("write-back message %s: %s %s", msg.id, record.idempotency_key, record.state,
             extra={"message_id": msg.id, "state": record.state})
