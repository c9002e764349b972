"""HTTP API for provider connections (function-key auth). Handlers decode, call the provider
admin service and answer through the one error table (shared/edges.py)."""
from __future__ import annotations

import azure.functions as func

from shared.edges import error_answer, json_call
from shared.http import json_response, read_json_body
from shared.provider_ids import validate_provider_id

bp = func.Blueprint()

INVALID_PROVIDER = "the provider connection is not valid"


@bp.function_name("providers_list")
@bp.route(route="providers", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def providers_list(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    return json_call(lambda: {"providers": [p.to_json() for p in get_services().providers.list_providers()]},
                     what="provider list")


@bp.function_name("provider_item")
@bp.route(route="providers/{id}", methods=["GET", "PUT", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
def provider_item(req: func.HttpRequest) -> func.HttpResponse:
    from bootstrap import get_services

    provider_id = req.route_params.get("id", "")
    what = f"{req.method} provider {provider_id!r}"
    try:
        validate_provider_id(provider_id)
        services = get_services()
        if req.method == "GET":
            return json_response(services.providers.get_provider(provider_id).to_json())
        if req.method == "PUT":
            provider, created = services.provider_admin.put(provider_id, read_json_body(req))
            return json_response(provider.to_json(), 201 if created else 200)
        purge = (req.params.get("purge") or "").lower() == "true"
        return json_response(services.provider_admin.remove(provider_id, purge=purge))
    except Exception as exc:  # noqa: BLE001 - the error table answers
        return error_answer(exc, what=what, invalid=INVALID_PROVIDER)
