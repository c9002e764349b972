"""HTTP blueprint for Partner Center webhook callbacks.

``POST /api/webhooks/partner-center/{provider}`` uses FUNCTION auth: Partner Center cannot send
an ``x-functions-key`` header, but it calls the registered URL as given, so the URL registered
with ``pcsync webhook register`` carries the key as ``?code=<function key>``. The key keeps
anonymous traffic (and certificate downloads it could trigger) away; the signature check is what
proves the event came from Microsoft.

The handler only decodes, calls the service and maps the outcome: 200 after the work is queued
(or for a repeat or a too old event, which queue nothing), 400 malformed or not a provider id,
401 bad signature, 404 unknown or disabled provider or a customer that is not the provider's,
413 too large, 503 when the work could not be queued (Partner Center delivers again). Every
answer is JSON; no stack trace.
"""
from __future__ import annotations

import azure.functions as func

from shared.edges import json_call

bp = func.Blueprint()


@bp.function_name("partner_center_webhook")
@bp.route(route="webhooks/partner-center/{provider}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def partner_center_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    provider_id = req.route_params.get("provider", "")
    body = req.get_body() or b""
    return json_call(lambda: get_services().webhooks.receive(provider_id, headers=dict(req.headers), body=body).to_json(),
                     what=f"partner center webhook for {provider_id!r}")
