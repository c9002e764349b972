"""pcsync: the operator's command line; the same services the functions use.

    pcsync provider set ID --name ... --country-code US --currency-code USD --tenant-id GUID
    pcsync provider show ID | list | disable ID [--purge]

Settings come from the environment, or from a local.settings.json given with --settings
(the environment wins where both name a setting). An expected failure (a setting, an
unreachable service, a refused request) ends the command with one ``error: ...`` line and exit
code 2; ``--debug`` adds the traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from shared.errors import PcsyncError, ValidationFailed
from shared.settings import STORAGE_SETTING, Settings, SettingsError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
# The SDKs' defaults retry a dead endpoint for about a minute and a half (storage queues back off
# 15 s and more, Key Vault and azure-identity retry 10 times); an operator at a terminal wants to
# hear within seconds that Azurite or the vault is not there. A couple of quick retries still ride
# out a blip during a long sync.
CLI_STORAGE_OPTIONS: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.5, "initial_backoff": 1,
                                       "increment_base": 1, "connection_timeout": 3}
CLI_SECRET_OPTIONS: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.5, "connection_timeout": 3}
CLI_CREDENTIAL_OPTIONS: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.5, "connection_timeout": 3}
DEVELOPMENT_STORAGE_TABLES = "http://127.0.0.1:10002"


def load_environment(settings_file: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if settings_file:
        try:
            with open(settings_file, encoding="utf-8") as fh:
                values = json.load(fh).get("Values", {})
        except (OSError, ValueError, AttributeError) as exc:
            raise SettingsError(f"--settings {settings_file}: not a readable local.settings.json ({exc})") from None
        if not isinstance(values, dict):
            raise SettingsError(f"--settings {settings_file}: \"Values\" must be an object of app settings")
        env.update({k: str(v) for k, v in values.items() if k not in os.environ})
    return env


def load_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_environment(load_environment(args.settings))


def build_services(args: argparse.Namespace, settings: Settings | None = None):
    from bootstrap import Services, install_services

    services = Services(settings or load_settings(args), storage_options=CLI_STORAGE_OPTIONS,
                        secret_options=CLI_SECRET_OPTIONS, credential_options=CLI_CREDENTIAL_OPTIONS)
    install_services(services)
    return services


def _command_groups() -> list[Callable[[Any], None]]:
    """Each feature package's command group: its cli module's register(subparsers)."""
    from functools import partial

    from admin import cli as admin_cli
    from admin import doctor_cli
    from auth import cli as auth_cli
    from sync import cli as sync_cli
    from sync import inspect_cli
    from sync.webhooks import cli as webhooks_cli
    from sync.writeback import cli as writeback_cli
    from sync.writeback import inspect_cli as writeback_inspect_cli

    def app_checks(*given: Any) -> Any:  # auth's doctor checks, loaded (with msal) only when doctor runs
        from auth.doctor_checks import app_checks as checks

        return checks(*given)

    return [admin_cli.register, auth_cli.register, sync_cli.register, writeback_cli.register, webhooks_cli.register,
            inspect_cli.register, writeback_inspect_cli.register, _serve_command,
            partial(doctor_cli.register, environment=load_environment, build_services=build_services,
                    app_checks=app_checks)]


def _serve_command(subparsers: Any) -> None:
    """`pcsync serve`, the local host: a development tool that is not deployed, so a CLI without it
    simply has no serve command. Only its options load here; the host loads when it runs."""
    try:
        from devhost import cli as devhost_cli
    except ImportError:
        return
    devhost_cli.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsync", description="Partner Center sync: operator commands")
    parser.add_argument("--settings", help="read app settings from this local.settings.json")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in _command_groups():
        register(subparsers)
    return parser


# -- failures: one line each ---------------------------------------------------------------------


def _first_line(text: str, limit: int = 240) -> str:
    from shared.logging import redact

    line = redact(str(text).strip().splitlines()[0] if str(text).strip() else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _connection_origin(exc: BaseException) -> str:
    """scheme://host:port of the connection an SDK error failed on, when the error tells."""
    for error in (exc, getattr(exc, "inner_exception", None), exc.__cause__, exc.__context__):
        conn = getattr(error, "conn", None) or getattr(getattr(error, "pool", None), "conn", None)
        host, port = getattr(conn, "host", None), getattr(conn, "port", None)
        if host:
            scheme = "https" if "HTTPS" in type(conn).__name__ else "http"
            return f"{scheme}://{host}" + (f":{port}" if port else "")
        url = getattr(getattr(getattr(error, "response", None), "request", None), "url", None)
        if isinstance(url, str) and _origin(url):
            return _origin(url)
    return ""


def _storage_origin(settings: Settings) -> str:
    storage = settings.storage
    if storage.identity_based:
        return _origin(storage.table_service_uri)
    parts = dict(p.split("=", 1) for p in storage.connection_string.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return DEVELOPMENT_STORAGE_TABLES
    if parts.get("TableEndpoint"):
        return _origin(parts["TableEndpoint"])
    account, suffix = parts.get("AccountName", "?"), parts.get("EndpointSuffix", "core.windows.net")
    return f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.table.{suffix}"


def _sdk_failure(exc: BaseException, settings: Settings | None) -> str:
    """An Azure SDK error (storage, Key Vault, or the app credential under them) as one line
    that names the setting to check."""
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError

    where = _connection_origin(exc)
    vault = _origin(settings.key_vault_url) if settings and settings.key_vault_url else ""
    if vault and where == vault:
        setting, what = "PCSYNC_KEY_VAULT_URL", "Key Vault"
    else:
        setting, what = STORAGE_SETTING, "storage"
        where = where or (_storage_origin(settings) if settings else "")
    detail = f"{type(exc).__name__}: {_first_line(getattr(exc, 'message', None) or exc)}"
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return f"{setting}: {what} at {where} could not be reached ({detail})"
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        return (f"{setting}: could not get a token for {what} at {where}: check AZURE_TENANT_ID, AZURE_CLIENT_ID "
                f"and AZURE_CLIENT_SECRET, or the managed identity ({detail})")
    return f"{setting}: {what} at {where} refused the request (HTTP {status}, {detail})"


def _key_vault_failure(exc: PcsyncError, settings: Settings | None) -> str:
    vault = settings.key_vault_url if settings else ""
    text = str(exc).replace("Key Vault", f"Key Vault at {vault}", 1) if vault else str(exc)
    return f"PCSYNC_KEY_VAULT_URL: {text}"


def describe_failure(exc: BaseException, settings: Settings | None) -> str:
    """The one line printed for a failed command (without the ``error:`` prefix)."""
    from shared.secrets import SecretStoreError

    if isinstance(exc, SecretStoreError):
        return _key_vault_failure(exc, settings)
    if isinstance(exc, PcsyncError):
        return str(exc)  # our own messages: they say what to do and never carry a secret
    azure_errors = sys.modules.get("azure.core.exceptions")
    if azure_errors is not None and isinstance(exc, azure_errors.AzureError):
        return _sdk_failure(exc, settings)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)} (run with --debug for the traceback)"


class _OneLineFormatter(logging.Formatter):
    """Log records on the terminal without their tracebacks (those are for --debug)."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return ""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip()


def configure_logging(debug: bool) -> None:
    """Warnings on stderr, as Python's last-resort handler would print them, but one line each
    unless --debug. Left alone when the process already has handlers (the Functions host, pytest)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(message)s") if debug else _OneLineFormatter("%(message)s"))
    root.addHandler(handler)


# what a command's ValidationFailed is about, for its first line
VALIDATED = {"provider": "the provider connection", "webhook": "the webhook registration"}


def report_failure(exc: BaseException, settings: Settings | None, *, debug: bool, command: str = "") -> int:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, ValidationFailed):
        print(f"error: {VALIDATED.get(command, 'the request')} is not valid:", file=sys.stderr)
        for field, message in exc.problems.items():
            print(f"  {field}: {message}", file=sys.stderr)
        return EXIT_ERROR
    print(f"error: {describe_failure(exc, settings)}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
    settings: Settings | None = None
    try:
        if getattr(args, "reads_settings", False):  # pcsync doctor: a bad setting is a finding, not an error
            return args.handler(args, None)
        settings = load_settings(args)
        services = build_services(args, settings)
        return args.handler(args, services)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the command line's edge: one line, never a traceback
        return report_failure(exc, settings, debug=args.debug, command=args.command)


if __name__ == "__main__":
    sys.exit(main())
