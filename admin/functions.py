"""HTTP API for provider connections and alerts (function-key auth), and the admin page with its
assets, consent start page and gateway. Handlers decode, call a service and answer through the
one error table (shared/edges.py)."""
from __future__ import annotations

from typing import Any

import azure.functions as func

from shared.edges import NO_STORE, error_answer, json_call
from shared.http import error_response, json_response, read_json_body
from shared.logging import get_logger
from shared.provider_ids import validate_provider_id
from shared.settings import AdminAuth

from .gateway import gateway
from .security import Denied, Refusal, authenticate, check_same_origin, with_security_headers

log = get_logger(__name__)

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


# -- the admin page (admin/page.py, admin/security.py) ------------------------------------------
# Anonymous at the host: a browser navigation cannot send the function key (and the key never goes
# in a URL), and behind App Service Authentication the admin has none. Each handler checks who
# is calling itself (admin/security.py); the page's data only ever comes from the JSON API. With
# the function key the page is the key prompt (401) and its markup a function-key route.


def _html(body: str, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8",
                             headers=with_security_headers())


def _refused(denied: Denied, *, as_json: bool) -> func.HttpResponse:
    from .page import render_message_page

    if as_json:
        return json_response({"error": denied.message, "reason": str(denied.reason)}, denied.status,
                             headers=with_security_headers())
    title = {401: "Not signed in", 403: "Access refused"}.get(denied.status, "Admin page unavailable")
    return _html(render_message_page(title, denied.message), denied.status)


UNCONFIGURED = Denied(Refusal.UNCONFIGURED)


def _admit(req: func.HttpRequest, *, as_json: bool) -> tuple[Any, Any] | func.HttpResponse:
    """(settings, principal or None) for a caller the page's mode lets in, else the refusal."""
    from bootstrap import get_services

    try:
        settings = get_services().settings
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed setting: the log names it, the page does not
        log.error("admin page: the app settings cannot be used: %s: %s", type(exc).__name__, exc)
        return _refused(UNCONFIGURED, as_json=as_json)
    try:
        return settings, authenticate(req.headers, settings.admin_auth, settings.admin_role)
    except Denied as denied:
        return _refused(denied, as_json=as_json)


@bp.function_name("admin_page")
@bp.route(route="admin", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def admin_page(req: func.HttpRequest) -> func.HttpResponse:
    """Behind App Service Authentication: the page, for a signed-in admin with the role. With the
    function key: 401 and the key prompt only (a navigation cannot carry the key, and this
    handler cannot check one); the prompt's script fetches the rest from ``admin/shell``."""
    from .page import render_admin_page

    admitted = _admit(req, as_json=False)
    if isinstance(admitted, func.HttpResponse):
        return admitted
    settings, principal = admitted
    page = render_admin_page(settings.admin_auth, user=principal.name if principal else None)
    return _html(page, 200 if principal else 401)


@bp.function_name("admin_shell")
@bp.route(route="admin/shell", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def admin_shell(req: func.HttpRequest) -> func.HttpResponse:
    """The page's markup, for the key prompt's script (the host checked the function key)."""
    from .page import render_admin_shell

    admitted = _admit(req, as_json=False)
    if isinstance(admitted, func.HttpResponse):
        return admitted
    return _html(render_admin_shell())


@bp.function_name("admin_static")
@bp.route(route="admin/static/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def admin_static(req: func.HttpRequest) -> func.HttpResponse:
    """The page's own scripts and styles (public code, no data); behind App Service
    Authentication only for a signed-in admin, like the page."""
    from .page import AssetNotFound, asset

    admitted = _admit(req, as_json=True)
    if isinstance(admitted, func.HttpResponse):
        return admitted
    try:
        found = asset(req.route_params.get("name", ""))
    except AssetNotFound:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain", headers=with_security_headers())
    return func.HttpResponse(found.body, status_code=200, headers=with_security_headers({"Content-Type": found.content_type}))


@bp.function_name("admin_consent_start")
@bp.route(route="admin/consent", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def admin_consent_start(req: func.HttpRequest) -> func.HttpResponse:
    """The page the consent link opens (anonymous: the flow's state is the credential)."""
    from bootstrap import get_services

    from shared.clock import utc_now

    from .consent_start import consent_start
    from .page import render

    try:
        start = consent_start(get_services().tables, req.params.get("state"), now=utc_now())
    except Exception as exc:  # noqa: BLE001 - the browser gets a page, the log the cause
        log.error("consent start page failed: %s: %s", type(exc).__name__, exc)
        return _html(render("message.html", title="Consent link unavailable",
                            message="pcsync could not read the consent link; try again in a minute."), 503)
    return _html(render("consent_start.html", start=start), start.status)


@bp.function_name("admin_api")
@bp.route(route="admin/api/{*path}", methods=["GET", "POST", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def admin_api(req: func.HttpRequest) -> func.HttpResponse:
    """The JSON API for the page behind App Service Authentication (admin/gateway.py)."""
    admitted = _admit(req, as_json=True)
    if isinstance(admitted, func.HttpResponse):
        return admitted
    settings, _ = admitted
    try:
        if settings.admin_auth is not AdminAuth.APP_SERVICE:
            raise Denied(Refusal.GATEWAY_OFF)  # with the function key the page calls /api/... itself
        check_same_origin(req.method, req.headers, req.url)
    except Denied as denied:
        return _refused(denied, as_json=True)
    path = req.route_params.get("path", "")
    found = gateway.resolve(req.method, path)
    if found is None:
        return error_response(404, f"{req.method} /api/{path} is not served to the admin page")
    route, params = found
    inner = func.HttpRequest(method=req.method, url=f"{req.url.split('/admin/api/', 1)[0]}/{path}",
                             headers=dict(req.headers), params=dict(req.params), route_params=params,
                             body=req.get_body() or b"")
    response = route.handler(inner)
    for name, value in with_security_headers().items():
        response.headers.setdefault(name, value)
    return response


@bp.function_name("alerts_list")
@bp.route(route="alerts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def alerts_list(req: func.HttpRequest) -> func.HttpResponse:
    """``?provider=P`` (default every enabled provider): consent and the other features' alerts."""
    from bootstrap import get_services

    provider_id = req.params.get("provider") or None

    def read() -> dict:
        if provider_id is not None:
            validate_provider_id(provider_id)
        return {"items": [a.to_json() for a in get_services().alerts.list_alerts(provider_id)]}

    return json_call(read, what="alerts", headers=NO_STORE)
