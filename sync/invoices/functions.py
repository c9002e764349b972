"""Blueprint of invoice import: the invoices timer and the import-invoice queue it fans out to,
the unbilled timer, an import's acceptance and its CSV reports over HTTP."""
from __future__ import annotations

import azure.functions as func

from shared.edges import NO_STORE, consume, error_answer, json_call
from shared.http import read_json_body
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


@bp.function_name("invoices_accept")
@bp.route(route="invoices/{provider}/{invoice}/accept", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def invoices_accept(req: func.HttpRequest) -> func.HttpResponse:
    """Accept a usage-mismatched import with an override tolerance and a reason (body
    ``{"tolerance": "1.50" | "0.5%", "reason": "...", "acceptedBy"?: "..."}``)."""
    from bootstrap import get_services

    # App Service authentication names the caller; behind a function key alone, the body may
    who = req.headers.get("X-MS-CLIENT-PRINCIPAL-NAME") or "http (function key)"
    provider, invoice = req.route_params.get("provider", ""), req.route_params.get("invoice", "")
    return json_call(lambda: get_services().invoice_actions.accept(provider, invoice, read_json_body(req), who=who),
                     what="invoice acceptance", invalid="the acceptance is not valid", headers=NO_STORE)


@bp.function_name("invoices_report")
@bp.route(route="invoices/{provider}/{invoice}/{report}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def invoices_report(req: func.HttpRequest) -> func.HttpResponse:
    """``mismatches.csv``, ``errors.csv`` or ``warnings.csv`` of the invoice's last import."""
    from bootstrap import get_services

    report = req.route_params.get("report", "")
    provider, invoice = req.route_params.get("provider", ""), req.route_params.get("invoice", "")
    try:
        data = get_services().invoice_actions.report(provider, invoice, report.removesuffix(".csv"))
    except Exception as exc:  # noqa: BLE001 - the error table answers
        return error_answer(exc, what="invoice report")
    return func.HttpResponse(data, status_code=200, mimetype="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{invoice}-{report}"', **NO_STORE})


@bp.function_name("sync_unbilled_timer")
@bp.timer_trigger(arg_name="timer", schedule="%PCSYNC_SCHEDULE_UNBILLED%", run_on_startup=False, use_monitor=True)
def sync_unbilled_timer(timer: func.TimerRequest) -> None:
    """Unbilled reconciliation and usage of the current and previous period, then budgets."""
    from bootstrap import get_services

    for outcome in get_services().unbilled.sync_all_providers():
        log.info("unbilled sync for %s: %s", outcome.provider_id, outcome.outcome,
                 extra={"provider_id": outcome.provider_id})


@bp.function_name("budgets_list")
@bp.route(route="budgets/{provider}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def budgets_list(req: func.HttpRequest) -> func.HttpResponse:
    """A provider's budgets and the alerts recorded when consumption crossed one."""
    from bootstrap import get_services

    provider = req.route_params.get("provider", "")
    return json_call(lambda: get_services().budgets.overview(provider), what="budget list", headers=NO_STORE)


@bp.function_name("budgets_put")
@bp.route(route="budgets/{provider}/{scope}/{target}", methods=["PUT", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
def budgets_put(req: func.HttpRequest) -> func.HttpResponse:
    """PUT ``{"amount": "1000", "thresholdPercent"?: 80}`` for a customer or subscription; DELETE removes it."""
    from bootstrap import get_services

    provider, scope, target = (req.route_params.get(k, "") for k in ("provider", "scope", "target"))
    budgets = get_services().budgets
    if req.method == "DELETE":
        return json_call(lambda: budgets.delete(provider, scope, target) or {"deleted": True}, what="budget delete")
    return json_call(lambda: budgets.put(provider, scope, target, read_json_body(req)), what="budget",
                     invalid="the budget is not valid")
