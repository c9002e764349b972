"""Blueprint of the inbound sync: the customers timer (the full sweep) and the sync-customer queue
it fans out to. Schedules come from app settings (PCSYNC_SCHEDULE_<STREAM>)."""
from __future__ import annotations

import azure.functions as func

from shared.edges import consume
from shared.logging import get_logger
from shared.settings import STORAGE_SETTING

from .names import SYNC_CUSTOMER_QUEUE

log = get_logger(__name__)

bp = func.Blueprint()


@bp.function_name("sync_customers_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_CUSTOMERS%", run_on_startup=False, use_monitor=True)
def sync_customers_timer(timer: func.TimerRequest) -> None:
    """Customers of every enabled, consented provider; then one sync-customer message each."""
    from bootstrap import get_services

    if timer.past_due:
        log.warning("customers timer is running late (past_due)")
    for outcome in get_services().sync.sync_all_providers():
        log.info("customers sync for %s: %s, %d customer message(s) queued", outcome.provider_id,
                 outcome.outcome, outcome.customers_enqueued, extra={"provider_id": outcome.provider_id})


@bp.function_name("sync_customer_queue")
@bp.queue_trigger(arg_name="msg", queue_name=SYNC_CUSTOMER_QUEUE, connection=STORAGE_SETTING)
def sync_customer_queue(msg: func.QueueMessage) -> None:
    """Subscriptions and agreements of one customer. A malformed message is logged and dropped
    (retrying cannot fix it); transient Partner Center failures raise so the runtime redelivers."""
    from bootstrap import get_services

    from .engine import parse_customer_message

    consume(msg, lambda body: get_services().sync.handle_customer_message(parse_customer_message(body)),
            what="sync-customer")
