"""What the Functions host would index: the registered functions of ``function_app.app`` (their
trigger bindings, as ``get_functions()`` describes them) and the options in host.json.

Binding expressions (``%SETTING%``) resolve from the environment, as the host resolves them
from the app settings.
"""
from __future__ import annotations

import asyncio
import enum
import inspect
import json
import pathlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

from shared.errors import NotConfigured

ROUTE_PREFIX = "api"
_SETTING_EXPRESSION = re.compile(r"%([^%]+)%")
# {name}, {name:constraint}, {name?}, {*name} (catch-all, the rest of the path)
_ROUTE_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(\??)\}")


class HostingError(NotConfigured):
    """The function app cannot be hosted as it stands (an unsupported binding, a bad host.json)."""


class AuthLevel(str, enum.Enum):
    ANONYMOUS = "anonymous"
    FUNCTION = "function"
    ADMIN = "admin"


def _text(value: Any) -> str:
    """An enum from azure.functions (HttpMethod, AuthLevel) or a plain string, as text."""
    return str(getattr(value, "value", value))


def resolve_setting_expressions(text: str, environ: Mapping[str, str]) -> str:
    """``%NAME%`` replaced by the app setting NAME; KeyError naming it when it is not set."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if not environ.get(name, "").strip():
            raise KeyError(name)
        return environ[name].strip()

    return _SETTING_EXPRESSION.sub(value, text)


def invoke(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Call a user function the way the worker does: async functions run to completion (on a
    thread of their own when this thread already runs an event loop)."""
    result = function(**arguments)
    if not inspect.isawaitable(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(result)
    with ThreadPoolExecutor(1, thread_name_prefix="async-function") as pool:
        return pool.submit(asyncio.run, result).result()


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    methods: frozenset[str]   # empty: every method
    auth_level: AuthLevel
    argument: str
    function: Callable[..., Any]

    @property
    def pattern(self) -> re.Pattern:
        return route_pattern(self.route)

    @property
    def specificity(self) -> tuple[bool, int]:
        """Catch-all routes last; more literal text first (as ASP.NET routing orders them)."""
        return ("{*" in self.route, -len(_ROUTE_PARAMETER.sub("", self.route)))


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue_name: str
    connection: str
    argument: str
    function: Callable[..., Any]


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: str          # as declared, e.g. %PCSYNC_SCHEDULE_CUSTOMERS%
    run_on_startup: bool
    argument: str
    function: Callable[..., Any]


@dataclass(frozen=True)
class FunctionIndex:
    http: tuple[HttpFunction, ...]
    queues: tuple[QueueFunction, ...]
    timers: tuple[TimerFunction, ...]


def route_pattern(route: str) -> re.Pattern:
    """A Functions route template as a regex over the path after /api/."""
    parts, end = [], 0
    for match in _ROUTE_PARAMETER.finditer(route):
        literal = route[end:match.start()]
        catch_all, name, optional = match.groups()
        body = f"(?P<{name}>.*)" if catch_all else f"(?P<{name}>[^/]+)"
        if (catch_all or optional) and literal.endswith("/"):
            # "files/{*rest}" and "items/{id?}" also match "files" and "items"
            literal, body = literal[:-1], f"(?:/{body})?"
        elif optional:
            body += "?"
        parts += [re.escape(literal), body]
        end = match.end()
    parts.append(re.escape(route[end:]))
    return re.compile("^" + "".join(parts).strip("/") + "$", re.IGNORECASE)


def _http_function(name: str, trigger: dict, argument: str, function: Callable, default_level: AuthLevel) -> HttpFunction:
    level = trigger.get("authLevel")
    return HttpFunction(name=name, route=str(trigger.get("route") or name).strip("/"),
                        methods=frozenset(_text(m).upper() for m in trigger.get("methods") or ()),
                        auth_level=AuthLevel(_text(level).lower()) if level is not None else default_level,
                        argument=argument, function=function)


def index_functions(app: Any) -> FunctionIndex:
    """The app's functions by trigger. Other input or output bindings are refused: the functions
    of this app take their trigger only, and a silently missing binding would hide a bug."""
    default_level = AuthLevel(_text(getattr(app, "auth_level", "function")).lower())
    # get_functions() keeps what it validated on the app and refuses to run twice; start afresh
    # (a test may have indexed the same app already)
    app.functions_bindings = {}
    http, queues, timers = [], [], []
    for fn in app.get_functions():
        name, trigger = fn.get_function_name(), fn.get_trigger()
        spec, argument, function = trigger.get_dict_repr(), trigger.name, fn.get_user_function()
        others = [b.type for b in fn.get_bindings() if b is not trigger and b.type != "http"]
        if others:
            raise HostingError(f"function {name}: bindings {', '.join(others)} are not supported by pcsync serve")
        if trigger.type == "httpTrigger":
            http.append(_http_function(name, spec, argument, function, default_level))
        elif trigger.type == "queueTrigger":
            queues.append(QueueFunction(name, spec["queueName"], spec.get("connection") or "AzureWebJobsStorage",
                                        argument, function))
        elif trigger.type == "timerTrigger":
            timers.append(TimerFunction(name, spec["schedule"], bool(spec.get("runOnStartup")), argument, function))
        else:
            raise HostingError(f"function {name}: trigger {trigger.type} is not supported by pcsync serve")
    http.sort(key=lambda f: f.specificity)
    return FunctionIndex(tuple(http), tuple(queues), tuple(timers))


# -- host.json --------------------------------------------------------------------------------


def _timespan(value: Any, default: timedelta) -> timedelta:
    """host.json's TimeSpan text, [d.]hh:mm:ss[.fff]."""
    if value in (None, ""):
        return default
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", str(value).strip())
    if not match:
        raise HostingError(f"host.json: {value!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    return timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds))


@dataclass(frozen=True)
class QueueOptions:
    """extensions.queues of host.json, with the host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(minutes=1)
    base64: bool = True


@dataclass(frozen=True)
class HostOptions:
    queues: QueueOptions
    route_prefix: str
    function_timeout: timedelta


HOST_OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


def _apply_overrides(host: dict, environ: Mapping[str, str]) -> dict:
    """App settings named AzureFunctionsJobHost__a__b override host.json's a.b, as in the host
    (e.g. AzureFunctionsJobHost__extensions__queues__maxDequeueCount). Names match in any case."""
    for name, value in environ.items():
        if not name.lower().startswith(HOST_OVERRIDE_PREFIX.lower()):
            continue
        *parents, leaf = name[len(HOST_OVERRIDE_PREFIX):].split("__")
        node = host
        for part in parents:
            key = next((k for k in node if k.lower() == part.lower()), part)
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise HostingError(f"{name}: host.json has no section {part!r} to override")
        node[next((k for k in node if k.lower() == leaf.lower()), leaf)] = value
    return host


def read_host_json(path: pathlib.Path, environ: Mapping[str, str] | None = None) -> HostOptions:
    try:
        host = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError as exc:
        raise HostingError(f"{path}: not valid JSON ({exc})") from None
    host = _apply_overrides(host, environ or {})
    extensions = host.get("extensions") or {}
    q = extensions.get("queues") or {}
    batch = int(q.get("batchSize", 16))
    if not 1 <= batch <= 32:
        raise HostingError("host.json: extensions.queues.batchSize must be between 1 and 32")
    queues = QueueOptions(
        batch_size=batch, new_batch_threshold=int(q.get("newBatchThreshold", batch // 2)),
        max_dequeue_count=int(q.get("maxDequeueCount", 5)),
        visibility_timeout=_timespan(q.get("visibilityTimeout"), timedelta(0)),
        max_polling_interval=_timespan(q.get("maxPollingInterval"), timedelta(minutes=1)),
        base64=str(q.get("messageEncoding", "base64")).lower() == "base64")
    prefix = (extensions.get("http") or {}).get("routePrefix", ROUTE_PREFIX)
    return HostOptions(queues=queues, route_prefix=str(prefix).strip("/"),
                       function_timeout=_timespan(host.get("functionTimeout"), timedelta(minutes=30)))
