"""Queue triggers for sync work fanned out by the timers."""
from __future__ import annotations

import azure.functions as func

from shared.logging import get_logger
from shared.runtime import get_runtime
from shared.settings import STORAGE_SETTING

from . import engine
from .invoices import service as invoices

log = get_logger(__name__)

bp = func.Blueprint()


@bp.function_name("sync_customer_queue")
@bp.queue_trigger(arg_name="msg", queue_name=engine.SYNC_CUSTOMER_QUEUE, connection=STORAGE_SETTING)
def sync_customer_queue(msg: func.QueueMessage) -> None:
    """Subscriptions and agreements of one customer. A malformed message is logged and dropped
    (retrying cannot fix it); transient Partner Center failures raise so the runtime redelivers."""
    try:
        engine.run_customer_message(get_runtime(), msg.get_body())
    except engine.InvalidMessage as exc:
        log.error("sync-customer message %s rejected: %s", msg.id, exc, extra={"message_id": msg.id})


@bp.function_name("import_invoice_queue")
@bp.queue_trigger(arg_name="msg", queue_name=invoices.IMPORT_INVOICE_QUEUE, connection=STORAGE_SETTING)
def import_invoice_queue(msg: func.QueueMessage) -> None:
    """Line items of one invoice, reconciled against its total. A malformed message is logged and
    dropped; transient Partner Center or Graph failures raise so the runtime redelivers."""
    try:
        invoices.run_import_message(get_runtime(), msg.get_body())
    except engine.InvalidMessage as exc:
        log.error("import-invoice message %s rejected: %s", msg.id, exc, extra={"message_id": msg.id})
