"""The blueprints' side of the error table (shared/errors.py: EDGE_RULES): one way for every HTTP
trigger to answer an error, and one way for every queue trigger to drop or redeliver."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import azure.functions as func

from .errors import QueueAction, ValidationFailed, edge_rule, edge_status
from .http import error_response, json_response
from .logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

NO_STORE = {"Cache-Control": "no-store"}


def error_answer(exc: BaseException, *, what: str, invalid: str | None = None) -> func.HttpResponse:
    """The HTTP answer for an error raised while serving ``what``. ``invalid`` is the headline
    of a 400 whose per-field ``problems`` follow (e.g. "the provider connection is not valid")."""
    rule = edge_rule(exc)
    if rule is None:  # a bug: the caller gets JSON without details, the log gets the trace
        log.error("%s failed", what, exc_info=exc)
        return error_response(500, "internal error")
    status = edge_status(exc, rule)
    if status >= 500:
        log.error("%s failed: %s: %s", what, type(exc).__name__, exc)
    message = rule.public_message or str(exc)
    if isinstance(exc, ValidationFailed) and invalid:
        message = invalid
    return error_response(status, message, getattr(exc, "problems", None))


def json_call(action: Callable[[], Any], *, what: str, invalid: str | None = None, status: int = 200,
              headers: dict[str, str] | None = None) -> func.HttpResponse:
    """Run ``action`` and answer its JSON, or the error table's answer."""
    try:
        body = action()
    except Exception as exc:  # noqa: BLE001 - every error gets the table's answer
        return error_answer(exc, what=what, invalid=invalid)
    return json_response(body, status, headers=headers)


def consume(msg: func.QueueMessage, action: Callable[[bytes], T], *, what: str) -> T | None:
    """Run a queue trigger's work on the message body. Errors the table marks DROP are logged
    with the message id and the message completes; everything else is raised again, so the host
    redelivers it and after maxDequeueCount moves it to the poison queue."""
    try:
        return action(msg.get_body())
    except Exception as exc:
        rule = edge_rule(exc)
        if rule is None or rule.queue is QueueAction.RETRY:
            raise
        log.error("%s message %s rejected: %s", what, msg.id, exc, extra={"message_id": msg.id})
        return None
