"""The admin page's way to the JSON API behind App Service Authentication.

With ``PCSYNC_ADMIN_AUTH=app_service`` the signed-in admin has no function key, and the Functions
host asks one for every ``AuthLevel.FUNCTION`` route. So the page calls
``/api/admin/api/<route>`` (anonymous at the host, the principal and its role checked in
admin/security.py), and the gateway runs the very handler registered for ``/api/<route>``: the
same JSON API, answers and errors. Only the routes in :data:`PAGE_ROUTES` are reachable this way.

The routes are read from the FunctionApp's registered functions (``bind(app)`` in
function_app.py), so a route added by another blueprint is found by its template.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

# The requests the admin page makes (method, path under /api/); nothing else goes through the
# gateway. Paths, not route templates: a route another branch registers is allowed by what it serves.
_SEGMENT = r"[^/]+"
PAGE_ROUTES = tuple((method, re.compile(path)) for method, path in (
    ("GET", "providers"), ("GET", f"providers/{_SEGMENT}"), ("PUT", f"providers/{_SEGMENT}"),
    ("GET", f"providers/{_SEGMENT}/consent-link"), ("POST", f"providers/{_SEGMENT}/verify"),
    ("GET", f"providers/{_SEGMENT}/health"), ("GET", "invoices"), ("GET", "alerts"),
    ("GET", f"invoices/{_SEGMENT}/{_SEGMENT}/(mismatches|errors|warnings)\\.csv"),
    ("GET", "writebacks"), ("POST", f"writebacks/{_SEGMENT}/(retry|dismiss)"),
))
_PARAM = re.compile(r"\{\*?([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Route:
    template: str
    methods: frozenset[str]
    handler: Callable[[Any], Any]
    pattern: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


def compile_template(template: str) -> re.Pattern[str]:
    """``providers/{id}/verify`` -> a pattern with named groups; ``{*rest}`` takes the rest."""
    pattern, last = [], 0
    for found in _PARAM.finditer(template):
        pattern.append(re.escape(template[last:found.start()]))
        catch_all = found.group(0).startswith("{*")
        pattern.append(f"(?P<{found.group(1)}>{'.+' if catch_all else '[^/]+'})")
        last = found.end()
    pattern.append(re.escape(template[last:]))
    return re.compile("".join(pattern), re.IGNORECASE)


def http_routes(app: Any) -> list[Route]:
    """The HTTP routes registered on a FunctionApp (azure-functions keeps its builders in
    ``_function_builders``; ``get_functions`` may be called once only, by the host)."""
    routes = []
    for builder in getattr(app, "_function_builders", []):
        function = builder._function
        trigger = function.get_trigger()
        template = getattr(trigger, "route", None)
        if template is None:
            continue
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in (trigger.methods or ()))
        routes.append(Route(template, methods, function.get_user_function(), compile_template(template)))
    return routes


class Gateway:
    def __init__(self) -> None:
        self._routes: list[Route] | None = None
        self._source: Callable[[], Iterable[Route]] | None = None

    def bind(self, app: Any) -> None:
        self._source = lambda: http_routes(app)
        self._routes = None

    def bind_routes(self, routes: Iterable[Route]) -> None:
        fixed = list(routes)
        self._source = lambda: fixed
        self._routes = None

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The page route serving ``method path``, with its route parameters; None when the
        page does not use it (or no blueprint registered it yet)."""
        if self._routes is None:
            self._routes = list(self._source()) if self._source else []
        method = method.upper()
        if not any(method == allowed and pattern.fullmatch(path) for allowed, pattern in PAGE_ROUTES):
            return None
        for route in self._routes:
            if method not in route.methods:
                continue
            params = route.match(path)
            if params is not None:
                return route, params
        return None


gateway = Gateway()

__all__ = ["Gateway", "PAGE_ROUTES", "Route", "compile_template", "gateway", "http_routes"]
