"""The composition root: the one place that builds clients and services.

``Services`` creates every adapter and service once from the typed ``Settings`` (storage,
secrets, the token source, the per-tenant Partner Center / Graph client registry, each feature
service) and hands each its dependencies through its constructor; no service looks another up.
It is the only process-wide singleton (``get_services``), built on first use inside an
invocation, never at import. Only entry points import this module: the function blueprints at
invocation time, the CLI, the demo and dev tools. Tests build their own ``Services`` (with fakes
or over Azurite and the simulator) and install it with ``install_services``.

Feature packages are imported inside the properties that build them, so importing the function
app (a cold start) loads no Azure SDK until a function needs one.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from shared.settings import DEFAULT_AUTHORITY_HOST, Settings

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from admin.alerts import AlertService
    from admin.providers import ProviderAdmin
    from auth.consent import ConsentService
    from auth.tokens import TokenProviders
    from auth.verify import VerifyService
    from azure.core.credentials import TokenCredential
    from shared.blobs import BlobStore
    from shared.clients import ClientRegistry
    from shared.providers import ProviderRepository
    from shared.queues import QueuePublisher
    from shared.secrets import SecretStore
    from shared.tables import TableStore
    from sync.engine import SyncService
    from sync.invoices.accept import InvoiceActions
    from sync.invoices.budgets import BudgetService
    from sync.invoices.service import InvoiceService
    from sync.invoices.unbilled import UnbilledService
    from sync.webhooks.registration import WebhookRegistrations
    from sync.webhooks.service import WebhookService
    from sync.writeback.service import WritebackService

T = TypeVar("T")


class _Once:
    """A lazily built attribute, built at most once per instance even with several threads
    (functools.cached_property no longer locks)."""

    def __init__(self, build: Callable[[Any], Any]):
        self._build = build
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        if self._name not in instance.__dict__:
            with instance._lock:
                if self._name not in instance.__dict__:
                    instance.__dict__[self._name] = self._build(instance)
        return instance.__dict__[self._name]


class _Deferred:
    """Stands for an attribute of the Services that is built on first use of one of its methods,
    so a service that may need Key Vault does not build (or require) it before it does."""

    def __init__(self, resolve: Callable[[], Any]):
        self._resolve = resolve

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)


def app_credential(settings: Settings, **transport_options: Any) -> "TokenCredential":
    """The app's own identity for storage and Key Vault, from the typed settings (never from the
    process environment, so a --settings file is enough): the service principal when
    AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET are set (locally), else
    DefaultAzureCredential (managed identity in Azure, or a developer sign-in).
    ``transport_options`` (e.g. a small ``retry_total``) go to the service principal's pipeline."""
    from shared.logging import register_secret

    identity = settings.azure_credential
    authority = settings.credential_authority_host
    options: dict[str, Any] = {}
    if authority != DEFAULT_AUTHORITY_HOST:
        options["authority"] = authority
        options["disable_instance_discovery"] = True
    if settings.ca_bundle:
        options["connection_verify"] = settings.ca_bundle
    if identity.uses_client_secret:
        from azure.identity import ClientSecretCredential

        register_secret(identity.client_secret)
        return ClientSecretCredential(identity.tenant_id, identity.client_id, identity.client_secret,
                                      **options, **transport_options)
    from azure.identity import DefaultAzureCredential

    if identity.client_id:  # a user-assigned managed identity
        options["managed_identity_client_id"] = identity.client_id
    return DefaultAzureCredential(exclude_interactive_browser_credential=True, **options)


_telemetry_lock = threading.Lock()
_telemetry_configured = False
# Azure Monitor's HTTP instrumentations are off: every Partner Center and Graph attempt already is a
# CLIENT span (shared/transport.py) with the request ids, so they would only record each call twice.
_DUPLICATE_INSTRUMENTATIONS = {"requests": {"enabled": False}, "urllib": {"enabled": False},
                               "urllib3": {"enabled": False}}


def configure_telemetry(settings: Settings, *, providers: Callable[[], Any] | None = None) -> bool:
    """Turn traces and metrics on, once per process: Azure Monitor when
    APPLICATIONINSIGHTS_CONNECTION_STRING is set, the console exporters when OTEL_TRACES_EXPORTER /
    OTEL_METRICS_EXPORTER say ``console``; ``providers`` (a provider listing) feeds the refresh token
    expiry gauge. False when nothing is configured (or it already was): then nothing is imported."""
    global _telemetry_configured
    config = settings.telemetry
    with _telemetry_lock:
        if _telemetry_configured or not config.enabled:
            return False
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        from shared import telemetry

        processors = [telemetry.redacting_processor()]  # first: the exporting processors see redacted spans
        if config.traces_exporter == "console":
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        readers = [PeriodicExportingMetricReader(ConsoleMetricExporter())] if config.metrics_exporter == "console" else []
        resource = Resource.create({"service.name": config.service_name})
        if config.connection_string:
            from azure.monitor.opentelemetry import configure_azure_monitor

            # the worker's log records already reach Application Insights through the Functions host
            configure_azure_monitor(connection_string=config.connection_string, resource=resource,
                                    span_processors=processors, metric_readers=readers, disable_logging=True,
                                    instrumentation_options=_DUPLICATE_INSTRUMENTATIONS)
        else:
            tracer_provider = TracerProvider(resource=resource)
            for processor in processors:
                tracer_provider.add_span_processor(processor)
            trace.set_tracer_provider(tracer_provider)
            metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        telemetry.install()
        # host.json's "azure": "Warning" filters only the host's own logs: the Python worker forwards
        # every record under the function's category, so the SDKs' per-request INFO lines are cut here
        logging.getLogger("azure").setLevel(logging.WARNING)
        if providers is not None:
            telemetry.watch_refresh_tokens(providers)
        _telemetry_configured = True
        return True


class Services:
    """Every client and service of the app, each built once, on first use.

    Options for tests and tools (keyword-only): ``credential`` (the app's Azure credential, for
    storage and Key Vault; default :func:`app_credential`), ``storage_options`` / ``secret_options`` /
    ``credential_options`` (passed to the storage SDK clients, the Key Vault client and the app
    credential: the CLI bounds their retries and timeouts),
    ``client_options`` / ``graph_options`` (passed to the Partner Center / Graph clients, e.g. a
    faster ``RetryPolicy``), ``token_sources`` (provider -> token source, in place of auth's
    refresh-token provider), ``clock`` (consent and token times) and ready-made ``tables`` / ``queues``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        credential: "TokenCredential | None" = None,
        storage_options: dict[str, Any] | None = None,
        secret_options: dict[str, Any] | None = None,
        credential_options: dict[str, Any] | None = None,
        client_options: dict[str, Any] | None = None,
        graph_options: dict[str, Any] | None = None,
        token_sources: Callable[[Any], Any] | None = None,
        tables: "TableStore | None" = None,
        queues: "QueuePublisher | None" = None,
        clock: Callable[[], Any] | None = None,
    ):
        from shared.logging import install_redaction

        install_redaction()
        self.settings = settings
        self._credential = credential
        self._storage_options = dict(storage_options or {})
        self._secret_options = dict(secret_options or {})
        self._credential_options = dict(credential_options or {})
        self._client_options = dict(client_options or {})
        self._graph_options = dict(graph_options or {})
        self._token_sources = token_sources
        self._clock = clock
        self._lock = threading.RLock()
        if tables is not None:
            self.__dict__["tables"] = tables
        if queues is not None:
            self.__dict__["queues"] = queues
        configure_telemetry(settings, providers=lambda: self.providers.list_providers())

    def derive(self, *, settings: Settings | None = None, **setting_changes: Any) -> "Services":
        """New services over the same storage, credential and Key Vault, with changed settings
        (e.g. ``calls_per_minute``) or options: what a second worker process would build."""
        options = {
            "credential": self._credential, "storage_options": self._storage_options,
            "secret_options": self._secret_options, "credential_options": self._credential_options,
            "client_options": self._client_options, "graph_options": self._graph_options,
            "token_sources": self._token_sources, "tables": self.tables, "queues": self.queues,
            "clock": self._clock,
        }
        for name in list(setting_changes):
            if name in options:
                options[name] = setting_changes.pop(name)
        derived = Services(replace(settings or self.settings, **setting_changes), **options)
        if "secrets" in self.__dict__:
            derived.__dict__["secrets"] = self.secrets
        return derived

    # -- platform adapters ------------------------------------------------------------------

    @property
    def credential(self) -> "TokenCredential":
        with self._lock:
            if self._credential is None:
                self._credential = app_credential(self.settings, **self._credential_options)
            return self._credential

    def _storage_credential(self) -> "TokenCredential":
        storage = self.settings.storage
        if storage.managed_identity:
            # PCSYNC_STORAGE__credential=managedidentity: the same identity the queue triggers use
            from azure.identity import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=storage.client_id or None)
        return self.credential

    def _storage_client(self, kind: Any, service_uri: str) -> Any:
        """A storage adapter from the connection string, or identity-based from its service URI."""
        storage = self.settings.storage
        if not storage.identity_based:
            return kind.from_connection_string(storage.connection_string, **self._storage_options)
        options = dict(self._storage_options)
        if self.settings.ca_bundle:
            options.setdefault("connection_verify", self.settings.ca_bundle)
        return kind.from_service_url(service_uri, self._storage_credential(), **options)

    @_Once
    def tables(self) -> "TableStore":
        from shared.tables import TableStore

        return self._storage_client(TableStore, self.settings.storage.table_service_uri)

    @_Once
    def blobs(self) -> "BlobStore":
        """The CSV reports' blobs, in the same account as the tables (identity-based: the blob
        endpoint beside the table endpoint, ``.table.`` -> ``.blob.``)."""
        from shared.blobs import BlobStore

        table_uri = self.settings.storage.table_service_uri
        return self._storage_client(BlobStore, table_uri.replace(".table.", ".blob.", 1))

    @_Once
    def queues(self) -> "QueuePublisher":
        from shared.queues import QueuePublisher

        return self._storage_client(QueuePublisher, self.settings.storage.queue_service_uri)

    @_Once
    def secrets(self) -> "SecretStore":
        """Key Vault (refresh tokens, the app's client secret); needs PCSYNC_KEY_VAULT_URL."""
        from shared.secrets import SecretStore

        self.settings.require("key_vault_url")
        return SecretStore.create(self.settings.key_vault_url, self.credential, ca_bundle=self.settings.ca_bundle,
                                  **self._secret_options)

    def refresh_token_store(self) -> "SecretStore | None":
        """Key Vault, or None when PCSYNC_KEY_VAULT_URL is not set."""
        return self.secrets if self.settings.key_vault_url else None

    @_Once
    def providers(self) -> "ProviderRepository":
        from shared.providers import ProviderRepository

        return ProviderRepository.from_store(self.tables)

    # -- tokens and clients -------------------------------------------------------------------

    def _msal_client(self, tenant_id: str) -> Any:
        from auth.entra import build_client

        return build_client(self.settings, self.secrets, tenant_id)

    @_Once
    def tokens(self) -> "TokenProviders":
        from auth.tokens import TokenProviders

        return TokenProviders(settings=self.settings, providers=self.providers,
                              secrets=_Deferred(lambda: self.secrets), client_for_tenant=self._msal_client,
                              **self._clock_option())

    def token_source_for(self, provider: Any) -> Any:
        if self._token_sources is not None:
            return self._token_sources(provider)
        return self.tokens.for_provider(provider)

    @_Once
    def clients(self) -> "ClientRegistry":
        from shared.clients import ClientRegistry

        settings = self.settings
        return ClientRegistry(
            self.token_source_for, partner_center_url=settings.partner_center_url, graph_url=settings.graph_url,
            tables=self.tables, ca_bundle=settings.ca_bundle, calls_per_minute=settings.calls_per_minute,
            customer_calls_per_minute=settings.customer_calls_per_minute, shared_budget=settings.shared_budget,
            client_options=self._client_options, graph_options=self._graph_options,
        )

    def forget_provider_state(self, provider_id: str) -> None:
        """After a new consent or a purge: no cached token or client of the provider survives."""
        if "tokens" in self.__dict__:
            self.tokens.forget(provider_id)
        if "clients" in self.__dict__:
            self.clients.forget(provider_id)

    def _clock_option(self) -> dict[str, Any]:
        return {"clock": self._clock} if self._clock is not None else {}

    # -- feature services ---------------------------------------------------------------------

    @_Once
    def provider_admin(self) -> "ProviderAdmin":
        from admin.providers import ProviderAdmin

        return ProviderAdmin(tables=self.tables, providers=self.providers, refresh_tokens=self.refresh_token_store,
                             on_purged=self.forget_provider_state)

    @_Once
    def alerts(self) -> "AlertService":
        """The admin page's alerts; a feature adds its own by adding a source here."""
        from admin.alerts import AlertService, consent_alerts

        return AlertService(self.providers, [consent_alerts(**self._clock_option())])

    @_Once
    def consent(self) -> "ConsentService":
        from auth.consent import CONSENT_FLOWS_TABLE, ConsentFlowStore, ConsentService

        return ConsentService(settings=self.settings, providers=self.providers, secrets=_Deferred(lambda: self.secrets),
                              flows=ConsentFlowStore(self.tables.table(CONSENT_FLOWS_TABLE)),
                              client_for_tenant=self._msal_client, on_consented=self.forget_provider_state,
                              **self._clock_option())

    @_Once
    def verify(self) -> "VerifyService":
        from auth.verify import VerifyService

        return VerifyService(settings=self.settings, providers=self.providers, token_sources=self.token_source_for)

    @_Once
    def sync(self) -> "SyncService":
        from sync.engine import SyncService

        return SyncService(tables=self.tables, providers=self.providers, queues=self.queues, clients=self.clients)

    @_Once
    def invoices(self) -> "InvoiceService":
        from sync.invoices.service import InvoiceService

        return InvoiceService(self.sync, blobs=self.blobs)

    @_Once
    def invoice_actions(self) -> "InvoiceActions":
        from sync.invoices.accept import InvoiceActions

        return InvoiceActions(self.tables, self.blobs)

    @_Once
    def unbilled(self) -> "UnbilledService":
        from sync.invoices.unbilled import UnbilledService

        return UnbilledService(self.sync, budgets=self.budgets)

    @_Once
    def budgets(self) -> "BudgetService":
        from sync.invoices.budgets import BudgetService

        return BudgetService(self.tables)

    @_Once
    def writeback(self) -> "WritebackService":
        from sync.writeback.log import TableWritebackLog
        from sync.writeback.service import WritebackService

        clients = self.clients

        def client_for(provider: Any, record: Any) -> Any:
            # the sync's clients: write-backs share each tenant's call budget and connection pool
            return clients.partner_center(provider).bind(correlation_id=record.correlation_id)

        return WritebackService(log_store=TableWritebackLog.from_store(self.tables), tables=self.tables,
                                providers=self.providers, queues=self.queues, client_factory=client_for)

    @_Once
    def webhooks(self) -> "WebhookService":
        from datetime import timedelta

        from sync.webhooks.replay import ProviderCustomers
        from sync.webhooks.service import WebhookService
        from sync.webhooks.verify import SignatureVerifier

        return WebhookService(self.providers, self.tables, self.queues, SignatureVerifier.from_settings(self.settings),
                              customers=ProviderCustomers(self.tables, self.clients),
                              max_age=timedelta(days=self.settings.webhook_max_age_days))

    @_Once
    def webhook_registrations(self) -> "WebhookRegistrations":
        from sync.webhooks.registration import WebhookRegistrations

        return WebhookRegistrations(providers=self.providers, clients=self.clients,
                                    partner_center_url=self.settings.partner_center_url)


_services: Services | None = None
_services_lock = threading.Lock()


def get_services() -> Services:
    """The process's Services, built from the environment on first use."""
    global _services
    if _services is None:
        with _services_lock:
            if _services is None:
                _services = Services(Settings.from_environment(os.environ))
    return _services


def install_services(services: Services | None) -> None:
    """Install (or clear) the process's Services: the CLI, the demo and tests."""
    global _services
    with _services_lock:
        _services = services
