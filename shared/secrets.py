"""SecretStore over azure-keyvault-secrets.

Deleting: the vault has soft delete with purge protection (infra/modules/keyvault.bicep), so
``delete_secret`` moves the secret to the vault's deleted collection, where it stays recoverable
(by an operator with the recover permission) for the vault's retention period (90 days) and is then
purged by Azure. pcsync never purges and never reads deleted secrets, so a deleted secret can no
longer be used by pcsync. Its name cannot be reused while it is deleted: ``set_secret`` on such a
name is refused (never recovered: that would bring the old value back).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretClient

from .errors import NotFound, Unavailable
from .logging import get_logger, register_secret

log = get_logger(__name__)

# Public and sovereign Key Vault DNS suffixes. For these the SDK's challenge-resource check stays
# on; any other host (a private test vault such as the simulator) cannot satisfy it.
_KEY_VAULT_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
)
_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


def is_valid_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.match(name))


class SecretStoreError(Unavailable):
    """Key Vault refused or could not be reached. ``status`` is the HTTP status to answer: 503
    when trying again later may help (unreachable, throttled, 5xx), 502 when it needs a fix
    (no permission, authentication failed). The message never contains a secret value."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeletedSecretInfo:
    name: str
    deleted_at: datetime | None
    recoverable_until: datetime | None  # Key Vault's scheduled purge date


def _key_vault_failure(action: str, name: str, exc: Exception) -> SecretStoreError:
    """A SecretStoreError that says what failed and what to do, without the SDK's full text
    (azure-identity's can be pages long)."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return SecretStoreError(f"Key Vault could not be reached to {action} secret {name!r} "
                                f"({type(exc).__name__}); try again later", status=503)
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        return SecretStoreError(f"could not authenticate to Key Vault to {action} secret {name!r}: check the "
                                "app's managed identity (or the AZURE_* settings locally)", status=502)
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    detail = f"HTTP {status}" + (f" {code}" if code else "")
    if status == 429 or (status or 0) >= 500:
        return SecretStoreError(f"Key Vault failed to {action} secret {name!r} ({detail}); try again later",
                                status=503)
    hint = (": the app's identity needs the Key Vault Secrets Officer role on the vault"
            if status in (401, 403) else "")
    return SecretStoreError(f"Key Vault refused to {action} secret {name!r} ({detail}){hint}", status=502)


class SecretStore:
    def __init__(self, client: SecretClient):
        self._client = client

    @classmethod
    def create(
        cls, vault_url: str, credential: TokenCredential, *, ca_bundle: str | None = None, **client_options: Any
    ) -> "SecretStore":
        host = (urlparse(vault_url).hostname or "").lower()
        options: dict[str, Any] = {"verify_challenge_resource": host.endswith(_KEY_VAULT_SUFFIXES)}
        if ca_bundle:
            options["connection_verify"] = ca_bundle
        options.update(client_options)
        return cls(SecretClient(vault_url=vault_url, credential=credential, **options))

    def get_secret(self, name: str) -> str:
        try:
            value = self._client.get_secret(name).value
        except ResourceNotFoundError:
            raise NotFound(f"Key Vault secret {name!r} does not exist") from None
        if value is None:
            raise NotFound(f"Key Vault secret {name!r} has no value")
        register_secret(value)
        return value

    def find_secret(self, name: str) -> str | None:
        try:
            return self.get_secret(name)
        except NotFound:
            return None

    def set_secret(self, name: str, value: str, *, content_type: str | None = None) -> str:
        """Store a new version; returns the version id (never the value)."""
        if not is_valid_secret_name(name):
            raise ValueError(f"invalid Key Vault secret name {name!r}: use 1-127 letters, digits and '-'")
        register_secret(value)
        try:
            secret = self._client.set_secret(name, value, content_type=content_type)
        except ResourceExistsError as exc:
            if "deleted" not in str(exc).lower():
                raise
            # Never recover a deleted secret here: it was deleted on purpose (a purged provider),
            # and recovering would bring its old value back. Provider secret names carry the
            # provider's creation time, so a provider added again under the same id never
            # collides; reaching this means a late write for a purged provider.
            raise SecretStoreError(
                f"Key Vault secret {name!r} was deleted and is still recoverable; pcsync does not "
                "recover deleted secrets (recover or purge it in Key Vault if that is intended)",
                status=409,
            ) from None
        return secret.properties.version or ""

    def delete_secret(self, name: str) -> DeletedSecretInfo | None:
        """Delete every version of a secret; ``None`` when there was none (which is success too).

        Returns as soon as Key Vault has accepted the delete: from then on the secret cannot be
        read. It does not wait for the deleted secret to show up in the deleted collection (only
        needed before a purge or recovery, and pcsync does neither here). Raises
        SecretStoreError when Key Vault refuses or cannot be reached.
        """
        try:
            poller = self._client.begin_delete_secret(name)
        except ResourceNotFoundError:
            return None
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise _key_vault_failure("delete", name, exc) from None
        deleted = poller.result()  # the DELETE's answer; result() does not poll
        return DeletedSecretInfo(name=name, deleted_at=deleted.deleted_date,
                                 recoverable_until=deleted.scheduled_purge_date)
