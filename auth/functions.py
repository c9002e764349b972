"""HTTP blueprint for consent and Verify Connectivity. Handlers only decode, call a service and
map its outcome; errors become 400/404/409 JSON (or a small page for the browser callback)."""
from __future__ import annotations

from urllib.parse import parse_qsl

import azure.functions as func

from shared.edges import NO_STORE, json_call
from shared.errors import edge_rule
from shared.http import MAX_BODY_BYTES, error_response, html_response
from shared.logging import get_logger

log = get_logger(__name__)

bp = func.Blueprint()

MAX_LOGIN_HINT = 256


@bp.function_name("consent_link")
@bp.route(route="providers/{id}/consent-link", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def consent_link(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    provider_id = req.route_params.get("id", "")
    login_hint = (req.params.get("loginHint") or "").strip() or None
    if login_hint and (len(login_hint) > MAX_LOGIN_HINT or "@" not in login_hint):
        return error_response(400, "invalid request", {"loginHint": "must be the integration user's UPN"})
    return json_call(lambda: get_services().consent.create_link(provider_id, login_hint=login_hint).to_json(),
                     what="consent link", invalid="invalid request", headers=NO_STORE)


def _auth_response(req: func.HttpRequest) -> dict[str, str]:
    """Entra's answer: the query string, or the form body when response_mode=form_post."""
    params = dict(req.params)
    if req.method.upper() == "POST":
        body = req.get_body() or b""
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("form body too large")
        params.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return params


@bp.function_name("consent_callback")
@bp.route(route="consent/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def consent_callback(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    try:
        auth_response = _auth_response(req)
    except ValueError:
        return html_response("Consent not completed", "The sign-in response could not be read.", 400)
    try:
        outcome = get_services().consent.complete(auth_response, callback_url=req.url)
    except Exception as exc:  # noqa: BLE001 - the browser gets a page, the log the cause
        # e.g. Key Vault or storage unavailable; an error outside the table is a bug: keep its trace
        log.error("consent callback failed: %s: %s", type(exc).__name__, exc,
                  exc_info=exc if edge_rule(exc) is None else None)
        return html_response("Consent not completed", "pcsync could not finish the consent; nothing was "
                             "stored. Ask the pcsync administrator to check the logs and send a new link.", 500)
    return html_response(outcome.title, outcome.message, outcome.status)


@bp.function_name("verify_connectivity")
@bp.route(route="providers/{id}/verify", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def verify_connectivity(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    provider_id = req.route_params.get("id", "")
    return json_call(lambda: get_services().verify.verify(provider_id).to_json(), what="verify",
                     invalid="invalid request", headers=NO_STORE)
