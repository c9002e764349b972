"""Typed application settings, built once from the environment by the composition root.

Every app setting the code reads is named here and in local.settings.json.sample (except the
identity-based PCSYNC_STORAGE__* alternatives to the connection string); no other module reads
``os.environ``.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import NotConfigured

DEFAULT_PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"

# Streams that have a timer ("delta": the activity-log delta sync; "customers": the full sweep);
# the schedule setting is PCSYNC_SCHEDULE_<NAME upper-cased>. The
# Functions host reads these itself (the timer bindings say %PCSYNC_SCHEDULE_CUSTOMERS%), so the
# values live in app settings and local.settings.json.sample, not here.
SCHEDULED_STREAMS = ("customers", "delta", "invoices", "unbilled")
# Hosts allowed to serve the Partner Center webhook signing certificate (x-ms-certificate-url).
DEFAULT_WEBHOOK_CERTIFICATE_HOSTS = ("3psostorageacct.blob.core.windows.net",)

STORAGE_SETTING = "PCSYNC_STORAGE"
HOST_STORAGE_SETTING = "AzureWebJobsStorage"
# The identity-based form of PCSYNC_STORAGE: the names the Functions host reads for a binding with
# connection="PCSYNC_STORAGE" (the queue triggers), used here for our own tables and queues too.
# They replace the connection string, so local.settings.json.sample (which uses the
# connection-string form for Azurite) does not list them.
STORAGE_ACCOUNT_NAME_SETTING = "PCSYNC_STORAGE__accountName"
STORAGE_TABLE_URI_SETTING = "PCSYNC_STORAGE__tableServiceUri"
STORAGE_QUEUE_URI_SETTING = "PCSYNC_STORAGE__queueServiceUri"
STORAGE_CREDENTIAL_SETTING = "PCSYNC_STORAGE__credential"
STORAGE_CLIENT_ID_SETTING = "PCSYNC_STORAGE__clientId"
STORAGE_IDENTITY_SETTINGS = (
    STORAGE_ACCOUNT_NAME_SETTING,
    STORAGE_TABLE_URI_SETTING,
    STORAGE_QUEUE_URI_SETTING,
    STORAGE_CREDENTIAL_SETTING,
    STORAGE_CLIENT_ID_SETTING,
)
_STORAGE_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")

# Telemetry, under the standard names (Application Insights, OpenTelemetry), so that the host, the
# Azure Monitor exporter and a developer's shell agree; read here (TelemetrySettings) so a --settings
# file is enough. The Azure Monitor exporter reads APPLICATIONINSIGHTS_AUTHENTICATION_STRING (Entra
# auth, set only in Azure) from the process environment itself.
TELEMETRY_CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
TELEMETRY_TRACES_EXPORTER_SETTING = "OTEL_TRACES_EXPORTER"
TELEMETRY_METRICS_EXPORTER_SETTING = "OTEL_METRICS_EXPORTER"
TELEMETRY_SERVICE_NAME_SETTING = "OTEL_SERVICE_NAME"
TELEMETRY_SETTINGS = (TELEMETRY_CONNECTION_SETTING, TELEMETRY_TRACES_EXPORTER_SETTING,
                      TELEMETRY_METRICS_EXPORTER_SETTING, TELEMETRY_SERVICE_NAME_SETTING)
# The local exporters this app ships (the OpenTelemetry SDK's console one); "none" or empty: only
# Azure Monitor, when its connection string is set.
LOCAL_EXPORTERS = ("console", "none")

# Read by the Functions host itself, not by our code, or under an SDK's standard name (telemetry);
# listed in the sample because a local run needs (or may set) them.
HOST_AND_SDK_SETTINGS = ("FUNCTIONS_WORKER_RUNTIME",) + TELEMETRY_SETTINGS

# The app's own Azure credential (for storage and Key Vault), under azure-identity's names. Read
# here rather than left to azure-identity, which reads only the process environment: so a
# local.settings.json given to the CLI with --settings is complete.
AZURE_TENANT_ID_SETTING = "AZURE_TENANT_ID"
AZURE_CLIENT_ID_SETTING = "AZURE_CLIENT_ID"
AZURE_CLIENT_SECRET_SETTING = "AZURE_CLIENT_SECRET"
AZURE_AUTHORITY_HOST_SETTING = "AZURE_AUTHORITY_HOST"


# The admin page (admin/security.py): who may use it. ``function_key`` (default): the host checks the
# function key the page sends as x-functions-key; ``app_service``: App Service Authentication (Entra
# ID) is in front and the verified X-MS-CLIENT-PRINCIPAL must carry PCSYNC_ADMIN_ROLE.
ADMIN_AUTH_SETTING = "PCSYNC_ADMIN_AUTH"
ADMIN_ROLE_SETTING = "PCSYNC_ADMIN_ROLE"
DEFAULT_ADMIN_ROLE = "pcsync.Admin"


class AdminAuth(enum.StrEnum):
    FUNCTION_KEY = "function_key"
    APP_SERVICE = "app_service"


class SettingsError(NotConfigured, ValueError):
    """A required app setting is missing or malformed; the message names the setting."""


def schedule_setting_name(stream: str) -> str:
    return f"PCSYNC_SCHEDULE_{stream.upper()}"


# Every timer whose NCRONTAB schedule is an app setting (what `pcsync doctor` checks): the streams'
# timers and the write-backs timer (due scheduled write-backs, re-checks, alerts).
WRITEBACKS_TIMER = "writebacks"
SCHEDULE_SETTINGS = tuple(schedule_setting_name(timer) for timer in (*SCHEDULED_STREAMS, WRITEBACKS_TIMER))


@dataclass(frozen=True)
class StorageSettings:
    """Where our tables and queues live: a connection string, or (identity-based) the table and
    queue service endpoints reached with an Entra token.

    ``managed_identity`` mirrors ``PCSYNC_STORAGE__credential=managedidentity``: the app's managed
    identity (the user-assigned one named by ``client_id``, else the system-assigned one). Without
    it the runtime's DefaultAzureCredential is used (locally: the AZURE_* settings or a developer
    sign-in)."""

    connection_string: str = field(default="", repr=False)  # may hold the account key
    table_service_uri: str = ""
    queue_service_uri: str = ""
    managed_identity: bool = False
    client_id: str = ""

    def __post_init__(self) -> None:
        endpoints = bool(self.table_service_uri or self.queue_service_uri)
        if bool(self.connection_string) == endpoints:
            raise SettingsError("storage needs either a connection string or both service URIs, not both or neither")
        if endpoints and not (self.table_service_uri and self.queue_service_uri):
            raise SettingsError("identity-based storage needs both the table and the queue service URI")
        if self.client_id and not self.managed_identity:
            raise SettingsError(f"{STORAGE_CLIENT_ID_SETTING} is only used with {STORAGE_CREDENTIAL_SETTING}=managedidentity")

    @property
    def identity_based(self) -> bool:
        return not self.connection_string

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "StorageSettings":
        connection = _text(environ, STORAGE_SETTING)
        identity = {name: _text(environ, name) for name in STORAGE_IDENTITY_SETTINGS}
        given = [name for name, value in identity.items() if value]
        if connection and given:
            raise SettingsError(
                f"{STORAGE_SETTING} (a connection string) and {', '.join(given)} (identity-based) are both set; "
                f"use one form: remove {STORAGE_SETTING} or the {STORAGE_SETTING}__* settings"
            )
        if connection:
            return cls(connection_string=connection)
        if not given:
            host = _text(environ, HOST_STORAGE_SETTING)
            if host:
                return cls(connection_string=host)
            raise SettingsError(
                f"storage is not configured: set {STORAGE_SETTING} (a connection string), or for identity-based "
                f"access {STORAGE_ACCOUNT_NAME_SETTING}, or {STORAGE_TABLE_URI_SETTING} and "
                f"{STORAGE_QUEUE_URI_SETTING} ({HOST_STORAGE_SETTING} is used when it is a connection string "
                "and none of these is set)"
            )
        table_uri, queue_uri = _service_uris(identity, given)
        credential = _storage_credential(identity)
        return cls(table_service_uri=table_uri, queue_service_uri=queue_uri,
                   managed_identity=bool(credential), client_id=identity[STORAGE_CLIENT_ID_SETTING])


def _text(environ: Mapping[str, str], name: str, default: str = "") -> str:
    return (environ.get(name) or default).strip()


def _service_uris(identity: Mapping[str, str], given: list[str]) -> tuple[str, str]:
    """The table and queue service URIs of identity-based storage: from the account name (public
    cloud) or given both (sovereign clouds, Azurite)."""
    account = identity[STORAGE_ACCOUNT_NAME_SETTING]
    table_uri = identity[STORAGE_TABLE_URI_SETTING].rstrip("/")
    queue_uri = identity[STORAGE_QUEUE_URI_SETTING].rstrip("/")
    if account:
        explicit = [n for n in (STORAGE_TABLE_URI_SETTING, STORAGE_QUEUE_URI_SETTING) if identity[n]]
        if explicit:
            raise SettingsError(
                f"{STORAGE_ACCOUNT_NAME_SETTING} and {', '.join(explicit)} are both set; use the account name "
                "(public cloud) or both service URIs (sovereign clouds, Azurite), not both"
            )
        if not _STORAGE_ACCOUNT_NAME.match(account):
            raise SettingsError(
                f"{STORAGE_ACCOUNT_NAME_SETTING} must be a storage account name (3-24 lower-case letters "
                f"and digits), got {account!r}"
            )
        return f"https://{account}.table.core.windows.net", f"https://{account}.queue.core.windows.net"
    missing = [n for n in (STORAGE_TABLE_URI_SETTING, STORAGE_QUEUE_URI_SETTING) if not identity[n]]
    if missing:
        raise SettingsError(
            f"identity-based storage needs {' and '.join(missing)} (or {STORAGE_ACCOUNT_NAME_SETTING} "
            f"instead of both service URIs); {', '.join(given)} alone is not enough"
        )
    for name, uri in ((STORAGE_TABLE_URI_SETTING, table_uri), (STORAGE_QUEUE_URI_SETTING, queue_uri)):
        if not re.match(r"^https://[^/?#\s]+", uri):
            raise SettingsError(f"{name} must be an https URL (bearer tokens are never sent over http), got {uri!r}")
    return table_uri, queue_uri


def _storage_credential(identity: Mapping[str, str]) -> str:
    """``managedidentity`` or empty (the runtime's DefaultAzureCredential)."""
    credential = identity[STORAGE_CREDENTIAL_SETTING]
    if credential and credential.lower() != "managedidentity":
        raise SettingsError(f"{STORAGE_CREDENTIAL_SETTING} must be 'managedidentity' or empty, got {credential!r}")
    if identity[STORAGE_CLIENT_ID_SETTING] and not credential:
        raise SettingsError(
            f"{STORAGE_CLIENT_ID_SETTING} needs {STORAGE_CREDENTIAL_SETTING}=managedidentity (it names the "
            "user-assigned identity to use; without the credential setting the Functions host reads it differently)"
        )
    return credential


@dataclass(frozen=True)
class AzureCredentialSettings:
    """The app's credential for storage and Key Vault. With ``client_secret`` (and so the tenant
    and client id) it is that service principal; otherwise DefaultAzureCredential (managed
    identity in Azure, ``client_id`` naming a user-assigned one; locally a developer sign-in).
    ``authority_host`` empty means PCSYNC_AUTHORITY_HOST."""

    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    authority_host: str = ""

    @property
    def uses_client_secret(self) -> bool:
        return bool(self.client_secret)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "AzureCredentialSettings":
        values = cls(
            tenant_id=_text(environ, AZURE_TENANT_ID_SETTING),
            client_id=_text(environ, AZURE_CLIENT_ID_SETTING),
            client_secret=_text(environ, AZURE_CLIENT_SECRET_SETTING),
            authority_host=_text(environ, AZURE_AUTHORITY_HOST_SETTING).rstrip("/"),
        )
        missing = [name for name, value in ((AZURE_TENANT_ID_SETTING, values.tenant_id),
                                            (AZURE_CLIENT_ID_SETTING, values.client_id)) if not value]
        if values.client_secret and missing:
            raise SettingsError(f"{AZURE_CLIENT_SECRET_SETTING} is set but {' and '.join(missing)} not: "
                                "a client secret needs the tenant and client id of its app registration")
        if values.authority_host and not values.authority_host.startswith("https://"):
            raise SettingsError(f"{AZURE_AUTHORITY_HOST_SETTING} must be an https URL, got {values.authority_host!r}")
        return values


@dataclass(frozen=True)
class TelemetrySettings:
    """Where traces and metrics go: Azure Monitor when ``connection_string`` is set, and the console
    exporter for local use when OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER say ``console``."""

    connection_string: str = field(default="", repr=False)  # holds the ingestion key
    traces_exporter: str = "none"
    metrics_exporter: str = "none"
    service_name: str = "pcsync"

    @property
    def enabled(self) -> bool:
        return bool(self.connection_string) or "console" in (self.traces_exporter, self.metrics_exporter)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "TelemetrySettings":
        exporters = {}
        for name in (TELEMETRY_TRACES_EXPORTER_SETTING, TELEMETRY_METRICS_EXPORTER_SETTING):
            value = _text(environ, name, "none").lower()
            if value not in LOCAL_EXPORTERS:
                raise SettingsError(f"{name} must be one of {', '.join(LOCAL_EXPORTERS)} (Azure Monitor is used "
                                    f"when {TELEMETRY_CONNECTION_SETTING} is set), got {value!r}")
            exporters[name] = value
        return cls(connection_string=_text(environ, TELEMETRY_CONNECTION_SETTING),
                   traces_exporter=exporters[TELEMETRY_TRACES_EXPORTER_SETTING],
                   metrics_exporter=exporters[TELEMETRY_METRICS_EXPORTER_SETTING],
                   service_name=_text(environ, TELEMETRY_SERVICE_NAME_SETTING, "pcsync"))


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    # the app's own credential (storage, Key Vault); empty: DefaultAzureCredential
    azure_credential: AzureCredentialSettings = field(default_factory=AzureCredentialSettings)
    key_vault_url: str = ""
    client_id: str = ""
    client_secret_name: str = "pcsync-client-secret"
    # when set, the app authenticates with this Key Vault certificate secret (PEM) instead of the secret
    client_certificate_name: str = ""
    redirect_uri: str = ""
    partner_center_url: str = DEFAULT_PARTNER_CENTER_URL
    authority_host: str = DEFAULT_AUTHORITY_HOST
    graph_url: str = DEFAULT_GRAPH_URL
    ca_bundle: str | None = None
    # hosts allowed to serve the Partner Center webhook signing certificate
    webhook_certificate_hosts: tuple[str, ...] = DEFAULT_WEBHOOK_CERTIFICATE_HOSTS
    # a webhook event whose ResourceChangeUtcDate is older than this is recorded, not acted on
    webhook_max_age_days: int = 7
    # Partner Center call budget per partner tenant, and per partner+customer (None = same as
    # the partner budget); kept below the documented 500 requests/minute so a run sees no 429s.
    calls_per_minute: int = 450
    customer_calls_per_minute: int | None = None
    # Share the partner-tenant budget between worker processes through table `callbudget`
    # (shared/call_budget.py); off = each process keeps its own budget.
    shared_budget: bool = True
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    admin_auth: AdminAuth = AdminAuth.FUNCTION_KEY
    admin_role: str = DEFAULT_ADMIN_ROLE

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "Settings":
        return cls(
            storage=StorageSettings.from_environment(environ),
            azure_credential=AzureCredentialSettings.from_environment(environ),
            **_endpoint_settings(environ),
            **_app_identity_settings(environ),
            **_budget_settings(environ),
            webhook_certificate_hosts=tuple(
                h.strip().lower() for h in _text(environ, "PCSYNC_WEBHOOK_CERTIFICATE_HOSTS").split(",") if h.strip()
            ) or DEFAULT_WEBHOOK_CERTIFICATE_HOSTS,
            webhook_max_age_days=_whole_days(environ, "PCSYNC_WEBHOOK_MAX_AGE_DAYS", 7),
            ca_bundle=_text(environ, "PCSYNC_CA_BUNDLE") or None,
            telemetry=TelemetrySettings.from_environment(environ),
            **_admin_settings(environ),
        )

    @property
    def credential_authority_host(self) -> str:
        """Where the app's credential gets its tokens: AZURE_AUTHORITY_HOST, else PCSYNC_AUTHORITY_HOST."""
        return self.azure_credential.authority_host or self.authority_host

    def require(self, *names: str) -> None:
        """Fail with one clear message when features need settings that are empty."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError("missing app settings: " + ", ".join(missing))


def _endpoint_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The service URLs (Partner Center, Entra ID, Graph, Key Vault): https only."""
    urls = {
        "PCSYNC_PARTNER_CENTER_URL": _text(environ, "PCSYNC_PARTNER_CENTER_URL", DEFAULT_PARTNER_CENTER_URL),
        "PCSYNC_AUTHORITY_HOST": _text(environ, "PCSYNC_AUTHORITY_HOST", DEFAULT_AUTHORITY_HOST),
        "PCSYNC_GRAPH_URL": _text(environ, "PCSYNC_GRAPH_URL", DEFAULT_GRAPH_URL),
    }
    key_vault_url = _text(environ, "PCSYNC_KEY_VAULT_URL")
    if key_vault_url:
        urls["PCSYNC_KEY_VAULT_URL"] = key_vault_url
    for name, value in urls.items():
        if not value.startswith("https://"):
            raise SettingsError(f"{name} must be an https URL, got {value!r}")
    return {
        "key_vault_url": key_vault_url.rstrip("/"),
        "partner_center_url": urls["PCSYNC_PARTNER_CENTER_URL"].rstrip("/"),
        "authority_host": urls["PCSYNC_AUTHORITY_HOST"].rstrip("/"),
        "graph_url": urls["PCSYNC_GRAPH_URL"].rstrip("/"),
    }


def _app_identity_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The app registration: its client id, its credential's Key Vault name, the consent redirect."""
    return {
        "client_id": _text(environ, "PCSYNC_CLIENT_ID"),
        "client_secret_name": _text(environ, "PCSYNC_CLIENT_SECRET_NAME", "pcsync-client-secret"),
        "client_certificate_name": _text(environ, "PCSYNC_CLIENT_CERTIFICATE_NAME"),
        "redirect_uri": _text(environ, "PCSYNC_REDIRECT_URI"),
    }


def _budget_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The Partner Center call budgets and whether worker processes share them."""
    return {
        "shared_budget": _flag(environ, "PCSYNC_SHARED_BUDGET", True),
        "calls_per_minute": _calls_per_minute(environ, "PCSYNC_CALLS_PER_MINUTE", 450),
        "customer_calls_per_minute": _calls_per_minute(environ, "PCSYNC_CUSTOMER_CALLS_PER_MINUTE", None),
    }


def _admin_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    raw = _text(environ, ADMIN_AUTH_SETTING, AdminAuth.FUNCTION_KEY).lower()
    if raw not in tuple(AdminAuth):
        raise SettingsError(f"{ADMIN_AUTH_SETTING} must be one of {', '.join(AdminAuth)}, got {raw!r}")
    return {"admin_auth": AdminAuth(raw), "admin_role": _text(environ, ADMIN_ROLE_SETTING, DEFAULT_ADMIN_ROLE)}


def _calls_per_minute(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = _text(environ, name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name} must be a whole number of calls per minute, got {raw!r}")
    return int(raw)


def _whole_days(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = _text(environ, name) or str(default)
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    raise SettingsError(f"{name} must be a whole number of days (1 or more), got {raw!r}")


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(environ, name).lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw == "true"
