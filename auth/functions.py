"""HTTP blueprint for consent and Verify Connectivity. Handlers only decode, call a service and
map its outcome; errors become 400/404/409 JSON (or a small page for the browser callback)."""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qsl

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.errors import Conflict, NotFound, PcsyncError, ValidationFailed
from shared.http import MAX_BODY_BYTES, error_response, html_response, json_response
from shared.logging import get_logger
from shared.runtime import get_runtime
from shared.settings import SettingsError

from .consent import ConsentService, ProviderIncomplete
from .entra import IdentityProviderUnavailable, TokenRequestFailed
from .verify import VerifyService

log = get_logger(__name__)

bp = func.Blueprint()

NO_STORE = {"Cache-Control": "no-store"}
MAX_LOGIN_HINT = 256


def _json_call(action: Callable[[], Any]) -> func.HttpResponse:
    try:
        return json_response(action(), headers=NO_STORE)
    except ValidationFailed as exc:
        return error_response(400, "invalid request", exc.problems)
    except NotFound as exc:
        return error_response(404, str(exc))
    except ProviderIncomplete as exc:
        return error_response(409, str(exc), exc.problems)
    except Conflict as exc:
        return error_response(409, str(exc))
    except SettingsError as exc:
        log.error("auth endpoint needs configuration: %s", exc)
        return error_response(500, f"pcsync is not fully configured: {exc}")
    except IdentityProviderUnavailable as exc:
        return error_response(503, str(exc))
    except TokenRequestFailed as exc:
        return error_response(502, str(exc))


@bp.function_name("consent_link")
@bp.route(route="providers/{id}/consent-link", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def consent_link(req: func.HttpRequest) -> func.HttpResponse:
    provider_id = req.route_params.get("id", "")
    login_hint = (req.params.get("loginHint") or "").strip() or None
    if login_hint and (len(login_hint) > MAX_LOGIN_HINT or "@" not in login_hint):
        return error_response(400, "invalid request", {"loginHint": "must be the integration user's UPN"})
    return _json_call(
        lambda: ConsentService.for_runtime(get_runtime()).create_link(provider_id, login_hint=login_hint).to_json()
    )


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
    try:
        auth_response = _auth_response(req)
    except ValueError:
        return html_response("Consent not completed", "The sign-in response could not be read.", 400)
    try:
        outcome = ConsentService.for_runtime(get_runtime()).complete(auth_response, callback_url=req.url)
    except (PcsyncError, SettingsError, AzureError) as exc:  # e.g. Key Vault or storage unavailable
        log.error("consent callback failed: %s: %s", type(exc).__name__, exc)
        return html_response("Consent not completed", "pcsync could not finish the consent; nothing was "
                             "stored. Ask the pcsync administrator to check the logs and send a new link.", 500)
    return html_response(outcome.title, outcome.message, outcome.status)


@bp.function_name("verify_connectivity")
@bp.route(route="providers/{id}/verify", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def verify_connectivity(req: func.HttpRequest) -> func.HttpResponse:
    provider_id = req.route_params.get("id", "")
    return _json_call(lambda: VerifyService.for_runtime(get_runtime()).verify(provider_id).to_json())
