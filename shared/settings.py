"""Typed application settings, built once from the environment by the composition root.

Every app setting the code reads is named here (and in local.settings.json.sample); no other
module reads ``os.environ``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"

# Streams that have a timer; the schedule setting is PCSYNC_SCHEDULE_<NAME upper-cased>.
SCHEDULED_STREAMS = ("customers", "invoices")
# Customers every 4 hours; invoices daily at 06:00 UTC (Partner Center publishes invoices once a
# month, and the daily run also picks up late adjustments).
DEFAULT_SCHEDULES = {"customers": "0 0 */4 * * *", "invoices": "0 0 6 * * *"}
# Hosts allowed to serve the Partner Center webhook signing certificate (x-ms-certificate-url).
DEFAULT_WEBHOOK_CERTIFICATE_HOSTS = ("3psostorageacct.blob.core.windows.net",)

STORAGE_SETTING = "PCSYNC_STORAGE"

# Read by the Functions host or by azure-identity itself, not by our code; listed in the sample
# because a local run needs them (AZURE_* let DefaultAzureCredential reach the local Key Vault).
HOST_AND_SDK_SETTINGS = (
    "FUNCTIONS_WORKER_RUNTIME",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
)


class SettingsError(ValueError):
    """A required app setting is missing or malformed; the message names the setting."""


def schedule_setting_name(stream: str) -> str:
    return f"PCSYNC_SCHEDULE_{stream.upper()}"


@dataclass(frozen=True)
class Settings:
    storage_connection: str
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
    # Partner Center call budget per partner tenant, and per partner+customer (None = same as
    # the partner budget); kept below the documented 500 requests/minute so a run sees no 429s.
    webhook_certificate_hosts: tuple[str, ...] = DEFAULT_WEBHOOK_CERTIFICATE_HOSTS
    calls_per_minute: int = 450
    customer_calls_per_minute: int | None = None
    schedules: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SCHEDULES))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "Settings":
        def text(name: str, default: str = "") -> str:
            return (environ.get(name) or default).strip()

        storage = text(STORAGE_SETTING) or text("AzureWebJobsStorage")
        if not storage:
            raise SettingsError(f"{STORAGE_SETTING} (or AzureWebJobsStorage) must be set")
        urls = {
            "PCSYNC_PARTNER_CENTER_URL": text("PCSYNC_PARTNER_CENTER_URL", DEFAULT_PARTNER_CENTER_URL),
            "PCSYNC_AUTHORITY_HOST": text("PCSYNC_AUTHORITY_HOST", DEFAULT_AUTHORITY_HOST),
            "PCSYNC_GRAPH_URL": text("PCSYNC_GRAPH_URL", DEFAULT_GRAPH_URL),
        }
        key_vault_url = text("PCSYNC_KEY_VAULT_URL")
        if key_vault_url:
            urls["PCSYNC_KEY_VAULT_URL"] = key_vault_url
        for name, value in urls.items():
            if not value.startswith("https://"):
                raise SettingsError(f"{name} must be an https URL, got {value!r}")
        schedules = {
            stream: text(schedule_setting_name(stream), DEFAULT_SCHEDULES[stream])
            for stream in SCHEDULED_STREAMS
        }
        def positive_int(name: str, default: int | None) -> int | None:
            raw = text(name)
            if not raw:
                return default
            if not raw.isdigit() or int(raw) < 1:
                raise SettingsError(f"{name} must be a whole number of calls per minute, got {raw!r}")
            return int(raw)

        return cls(
            storage_connection=storage,
            calls_per_minute=positive_int("PCSYNC_CALLS_PER_MINUTE", 450),
            webhook_certificate_hosts=tuple(
                h.strip().lower() for h in text("PCSYNC_WEBHOOK_CERTIFICATE_HOSTS").split(",") if h.strip()
            ) or DEFAULT_WEBHOOK_CERTIFICATE_HOSTS,
            customer_calls_per_minute=positive_int("PCSYNC_CUSTOMER_CALLS_PER_MINUTE", None),
            key_vault_url=key_vault_url.rstrip("/"),
            client_id=text("PCSYNC_CLIENT_ID"),
            client_secret_name=text("PCSYNC_CLIENT_SECRET_NAME", "pcsync-client-secret"),
            client_certificate_name=text("PCSYNC_CLIENT_CERTIFICATE_NAME"),
            redirect_uri=text("PCSYNC_REDIRECT_URI"),
            partner_center_url=urls["PCSYNC_PARTNER_CENTER_URL"].rstrip("/"),
            authority_host=urls["PCSYNC_AUTHORITY_HOST"].rstrip("/"),
            graph_url=urls["PCSYNC_GRAPH_URL"].rstrip("/"),
            ca_bundle=text("PCSYNC_CA_BUNDLE") or None,
            schedules=schedules,
        )

    def require(self, *names: str) -> None:
        """Fail with one clear message when features need settings that are empty."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError("missing app settings: " + ", ".join(missing))
