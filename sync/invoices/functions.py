"""Blueprint of invoice import: the invoices timer and the import-invoice queue it fans out to."""
from __future__ import annotations

import azure.functions as func

from shared.edges import consume
from shared.logging import get_logger
from shared.settings import STORAGE_SETTING

from ..names import IMPORT_INVOICE_QUEUE

log = get_logger(__name__)

bp = func.Blueprint()


@bp.function_name("sync_invoices_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_INVOICES%", run_on_startup=False, use_monitor=True)
def sync_invoices_timer(timer: func.TimerRequest) -> None:
    """Invoices of every enabled, consented provider; then one import-invoice message per new
    or changed invoice."""
    from bootstrap import get_services

    if timer.past_due:
        log.warning("invoices timer is running late (past_due)")
    for outcome in get_services().invoices.sync_all_providers():
        log.info("invoices sync for %s: %s, %d import message(s) queued", outcome.provider_id, outcome.outcome,
                 outcome.invoices_enqueued, extra={"provider_id": outcome.provider_id})


@bp.function_name("import_invoice_queue")
@bp.queue_trigger(arg_name="msg", queue_name=IMPORT_INVOICE_QUEUE, connection=STORAGE_SETTING)
def import_invoice_queue(msg: func.QueueMessage) -> None:
    """Line items of one invoice, reconciled against its total. A malformed message is logged and
    dropped; transient Partner Center or Graph failures raise so the runtime redelivers."""
    from bootstrap import get_services

    from .model import parse_import_message

    consume(msg, lambda body: get_services().invoices.handle_import_message(parse_import_message(body)),
            what="import-invoice")
