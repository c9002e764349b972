"""The composition root's service container.

Built lazily on first use inside a function invocation (never at import time) from the typed
Settings, then reused by every invocation in the worker process. Tests install their own.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from azure.core.credentials import TokenCredential

from .logging import install_redaction
from .providers import ProviderRepository
from .queues import QueuePublisher
from .secrets import SecretStore
from .settings import DEFAULT_AUTHORITY_HOST, Settings
from .tables import TableStore


def default_azure_credential(settings: Settings) -> TokenCredential:
    """Managed identity in Azure; locally the azure-identity environment variables."""
    from azure.identity import DefaultAzureCredential

    options: dict[str, Any] = {"exclude_interactive_browser_credential": True}
    if settings.authority_host != DEFAULT_AUTHORITY_HOST:
        options["authority"] = settings.authority_host
        options["disable_instance_discovery"] = True
    if settings.ca_bundle:
        options["connection_verify"] = settings.ca_bundle
    return DefaultAzureCredential(**options)


@dataclass
class Runtime:
    settings: Settings
    tables: TableStore
    queues: QueuePublisher
    credential: TokenCredential | None = None
    _secrets: SecretStore | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credential: TokenCredential | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> "Runtime":
        install_redaction()
        storage_options = dict(storage_options or {})
        storage = settings.storage
        if not storage.identity_based:
            return cls(
                settings=settings,
                tables=TableStore.from_connection_string(storage.connection_string, **storage_options),
                queues=QueuePublisher.from_connection_string(storage.connection_string, **storage_options),
                credential=credential,
            )
        if storage.managed_identity:
            # PCSYNC_STORAGE__credential=managedidentity: the same identity the queue triggers use
            from azure.identity import ManagedIdentityCredential

            storage_credential: TokenCredential = ManagedIdentityCredential(client_id=storage.client_id or None)
        else:
            credential = credential or default_azure_credential(settings)
            storage_credential = credential
        if settings.ca_bundle:
            storage_options.setdefault("connection_verify", settings.ca_bundle)
        return cls(
            settings=settings,
            tables=TableStore.from_endpoint(storage.table_service_uri, storage_credential, **storage_options),
            queues=QueuePublisher.from_account_url(storage.queue_service_uri, storage_credential, **storage_options),
            credential=credential,
        )

    @property
    def providers(self) -> ProviderRepository:
        return ProviderRepository.from_store(self.tables)

    @property
    def secrets(self) -> SecretStore:
        if self._secrets is None:
            self.settings.require("key_vault_url")
            if self.credential is None:
                self.credential = default_azure_credential(self.settings)
            self._secrets = SecretStore.create(
                self.settings.key_vault_url, self.credential, ca_bundle=self.settings.ca_bundle
            )
        return self._secrets


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime(factory: Callable[[], Runtime] | None = None) -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = (factory or (lambda: Runtime.from_settings(Settings.from_environment(os.environ))))()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install (or clear) the process-wide runtime; used by tests, the CLI and the demo."""
    global _runtime
    with _lock:
        _runtime = runtime
