"""HTTP API for provider connections (function-key auth)."""
from __future__ import annotations

import azure.functions as func

from admin import providers as providers_service
from shared.errors import NotFound, ValidationFailed
from shared.http import BadRequest, error_response, json_response, read_json_body
from shared.providers import validate_provider_id
from shared.runtime import get_runtime
from shared.secrets import SecretStoreError

bp = func.Blueprint()


@bp.function_name("providers_list")
@bp.route(route="providers", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def providers_list(req: func.HttpRequest) -> func.HttpResponse:
    providers = get_runtime().providers.list_providers()
    return json_response({"providers": [p.to_json() for p in providers]})


@bp.function_name("provider_item")
@bp.route(route="providers/{id}", methods=["GET", "PUT", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
def provider_item(req: func.HttpRequest) -> func.HttpResponse:
    provider_id = req.route_params.get("id", "")
    try:
        validate_provider_id(provider_id)
        runtime = get_runtime()
        if req.method == "GET":
            return json_response(runtime.providers.get_provider(provider_id).to_json())
        if req.method == "PUT":
            provider, created = providers_service.put_provider(runtime.providers, provider_id, read_json_body(req))
            return json_response(provider.to_json(), 201 if created else 200)
        purge = (req.params.get("purge") or "").lower() == "true"
        secrets = providers_service.refresh_token_store(runtime) if purge else None
        return json_response(providers_service.remove_provider(runtime.tables, provider_id, purge=purge,
                                                               secrets=secrets))
    except BadRequest as exc:
        return error_response(exc.status, str(exc))
    except ValidationFailed as exc:
        return error_response(400, "the provider connection is not valid", exc.problems)
    except NotFound as exc:
        return error_response(404, str(exc))
    except SecretStoreError as exc:  # Key Vault refused or unreachable: nothing was deleted
        return error_response(exc.status, str(exc))
