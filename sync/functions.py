"""Blueprint of the inbound sync: the customers timer (the nightly full sweep), the delta timer
(the activity log since the cursor) and the sync-customer queue both fan out to, and the admin
page's reads of runs and invoices. Schedules come from app settings (PCSYNC_SCHEDULE_<STREAM>)."""
from __future__ import annotations

import azure.functions as func

from shared.edges import NO_STORE, consume, json_call
from shared.logging import get_logger
from shared.provider_ids import validate_provider_id
from shared.settings import STORAGE_SETTING

from .names import SYNC_CUSTOMER_QUEUE

log = get_logger(__name__)

bp = func.Blueprint()


@bp.function_name("sync_customers_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_CUSTOMERS%", run_on_startup=False, use_monitor=True)
def sync_customers_timer(timer: func.TimerRequest) -> None:
    """The full sweep of every enabled provider with a consent (active, or lost: then degraded, see
    ``sync.engine.syncs_app_only``): the delta catches up, the customers are read, then one
    sync-customer message each (their rows still changed are the drift report)."""
    from bootstrap import get_services

    if timer.past_due:
        log.warning("customers timer is running late (past_due)")
    for outcome in get_services().delta.sweep_all_providers():
        log.info("full sweep for %s: %s, %d customer message(s) queued", outcome.provider_id,
                 outcome.outcome, outcome.enqueued, extra={"provider_id": outcome.provider_id})


@bp.function_name("sync_delta_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_DELTA%", run_on_startup=False, use_monitor=True)
def sync_delta_timer(timer: func.TimerRequest) -> None:
    """The activity log of every enabled provider with a consent (active or lost) since its cursor; one targeted
    sync-customer message per customer it names (a full sweep when there is no usable cursor)."""
    from bootstrap import get_services

    for outcome in get_services().delta.delta_all_providers():
        log.info("%s sync for %s: %s, %d record(s), %d customer message(s) queued, cursor %s", outcome.mode,
                 outcome.provider_id, outcome.outcome, outcome.records, outcome.enqueued, outcome.cursor,
                 extra={"provider_id": outcome.provider_id})


@bp.function_name("sync_customer_queue")
@bp.queue_trigger(arg_name="msg", queue_name=SYNC_CUSTOMER_QUEUE, connection=STORAGE_SETTING)
def sync_customer_queue(msg: func.QueueMessage) -> None:
    """One customer's targeted work (the sweep's: subscriptions and agreements). A malformed message
    is logged and dropped (retrying cannot fix it); transient Partner Center failures raise so the
    runtime redelivers."""
    from bootstrap import get_services

    from .targeted import parse_targeted_message

    consume(msg, lambda body: get_services().delta.handle_message(parse_targeted_message(body)),
            what="sync-customer")


# -- reads for the admin page's health section (function key, like every JSON route) ------------

@bp.function_name("provider_health")
@bp.route(route="providers/{id}/health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def provider_health(req: func.HttpRequest) -> func.HttpResponse:
    """``?days=30``: the provider's sync runs per day and the last run of each stream."""
    from bootstrap import get_services

    from .health import parse_days, provider_health as health

    provider_id = req.route_params.get("id", "")

    def read() -> dict:
        validate_provider_id(provider_id)
        services = get_services()
        services.providers.get_provider(provider_id)  # 404 for an unknown provider
        return health(services.tables, provider_id, days=parse_days(req.params.get("days")))

    return json_call(read, what=f"health of provider {provider_id!r}", headers=NO_STORE)


@bp.function_name("invoices_list")
@bp.route(route="invoices", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def invoices_list(req: func.HttpRequest) -> func.HttpResponse:
    """``?provider=P[&pageToken=T]``: the provider's invoices as ``pcsync invoices list --json``."""
    from bootstrap import get_services

    from .health import invoice_list

    provider_id = req.params.get("provider") or ""

    def read() -> dict:
        validate_provider_id(provider_id)
        return invoice_list(get_services().tables, provider_id, token=req.params.get("pageToken") or None)

    return json_call(read, what="invoice list", headers=NO_STORE)
