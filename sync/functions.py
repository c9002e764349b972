"""Timer triggers for sync streams. Schedules come from app settings (PCSYNC_SCHEDULE_<STREAM>)."""
from __future__ import annotations

import azure.functions as func

from shared.logging import get_logger
from shared.runtime import get_runtime

from . import engine
from .invoices import service as invoices

log = get_logger(__name__)

bp = func.Blueprint()


@bp.function_name("sync_customers_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_CUSTOMERS%", run_on_startup=False, use_monitor=True)
def sync_customers_timer(timer: func.TimerRequest) -> None:
    """Customers of every enabled, consented provider; then one sync-customer message each."""
    if timer.past_due:
        log.warning("customers timer is running late (past_due)")
    outcomes = engine.run_customers_timer(get_runtime())
    for outcome in outcomes:
        log.info("customers sync for %s: %s, %d customer message(s) queued", outcome.provider_id,
                 outcome.outcome, outcome.customers_enqueued, extra={"provider_id": outcome.provider_id})


@bp.function_name("sync_invoices_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_INVOICES%", run_on_startup=False, use_monitor=True)
def sync_invoices_timer(timer: func.TimerRequest) -> None:
    """Invoices of every enabled, consented provider; then one import-invoice message per new
    or changed invoice."""
    if timer.past_due:
        log.warning("invoices timer is running late (past_due)")
    for outcome in invoices.run_invoices_timer(get_runtime()):
        log.info("invoices sync for %s: %s, %d import message(s) queued", outcome.provider_id, outcome.outcome,
                 outcome.invoices_enqueued, extra={"provider_id": outcome.provider_id})
