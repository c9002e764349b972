"""The admin page: server-rendered HTML (Jinja2 templates in admin/templates, autoescaped) and its
local assets (admin/static). The page itself holds no data and no secret: every value it shows
comes from the JSON API, fetched with the admin's credentials after it loads. With the function
key, ``GET /api/admin`` is only the key prompt (401); the page's markup comes from
``GET /api/admin/shell``, a function-key route, once the admin typed the key.
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass
from typing import Any

from shared.settings import AdminAuth

from .form import provider_form_fields

HERE = pathlib.Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(js|css|svg)$")
CONTENT_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8", "svg": "image/svg+xml"}
PAGE_PATH = "/api/admin"
GATEWAY_PATH = "/api/admin/api/"
DIRECT_API_PATH = "/api/"

# The set-up step to redo when a Verify Connectivity check fails (check name -> step); the
# check's own fix says what to change first.
SETUP_STEPS = (
    (1, "Fill in the provider form and Save"),
    (2, "Generate Consent Link"),
    (3, "Open the link in a private window and press Start Consent Process"),
    (4, "Sign in as the integration user and confirm MFA"),
    (5, "Verify Connectivity"),
)
REDO_STEP = {
    "token_refresh": 2, "mfa_claim": 4, "tenant_matches": 1, "organization_profile": 2,
    "customers_read": 5, "invoices_read": 5, "graph_billing_permission": 5,
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


class AssetNotFound(LookupError):
    pass


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       autoescape=select_autoescape(("html",), default=True), trim_blocks=True, lstrip_blocks=True)


_env: Any = None


def render(template: str, **context: Any) -> str:
    global _env
    if _env is None:
        _env = _environment()
    return _env.get_template(template).render(**context)


def _app_context() -> dict[str, Any]:
    steps = [{"step": n, "title": t} for n, t in SETUP_STEPS]
    return {"fields": provider_form_fields(), "setup": {"steps": steps, "redo": REDO_STEP}}


def render_admin_page(mode: AdminAuth, *, user: str | None = None) -> str:
    """The page; ``mode`` says how it calls the API (the function key header, or the gateway
    behind App Service Authentication). With the function key it is the key prompt alone: its
    script fetches the page's markup (:func:`render_admin_shell`) with the key."""
    api = GATEWAY_PATH if mode is AdminAuth.APP_SERVICE else DIRECT_API_PATH
    app = _app_context() if mode is AdminAuth.APP_SERVICE else {}
    return render("admin.html", mode=str(mode), api_base=api, user=user, **app)


def render_admin_shell() -> str:
    """The page's markup and scripts (GET /api/admin/shell, function key mode)."""
    return render("app.html", **_app_context())


def render_message_page(title: str, message: str) -> str:
    return render("message.html", title=title, message=message)


def asset(name: str) -> Asset:
    """One file of admin/static by its plain name (no paths, no dot files)."""
    if not ASSET_NAME.match(name or ""):
        raise AssetNotFound(name)
    path = STATIC / name
    if not path.is_file():
        raise AssetNotFound(name)
    return Asset(path.read_bytes(), CONTENT_TYPES[name.rsplit(".", 1)[1]])


__all__ = ["Asset", "AssetNotFound", "REDO_STEP", "SETUP_STEPS", "asset", "render", "render_admin_page",
           "render_admin_shell", "render_message_page"]
