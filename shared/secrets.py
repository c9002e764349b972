"""SecretStore over azure-keyvault-secrets."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from .errors import NotFound
from .logging import register_secret

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
        secret = self._client.set_secret(name, value, content_type=content_type)
        return secret.properties.version or ""
