"""Provider connection management shared by the HTTP API and the CLI."""
from __future__ import annotations

from typing import Any

from shared.logging import get_logger
from shared.providers import ProviderConnection, ProviderRepository, validate_provider_id
from shared.secrets import SecretStore, SecretStoreError
from shared.tables import TableStore

log = get_logger(__name__)

# Tables holding synced data per provider. Their partition keys are the provider id, or start
# with "<provider id>|" for per-customer partitions, so a purge can find them by range.
PROVIDER_DATA_TABLES = (
    "customers", "subscriptions", "agreements", "invoices", "invoicelineitems",
    "syncruns", "writebackops", "webhookevents",
)
# Consent flows (auth/consent.py: ConsentFlowStore) are one partition keyed by state, with the
# provider in a column. Named here rather than imported: admin does not depend on auth.
CONSENT_FLOWS_TABLE = "consentflows"
CONSENT_FLOW_PARTITION = "flow"
CONSENT_FLOW_PROVIDER_COLUMN = "provider_id"

KEY_VAULT_NOT_CONFIGURED = ("Key Vault is not configured (PCSYNC_KEY_VAULT_URL is empty), so no refresh token "
                            "was stored or deleted")


def put_provider(repo: ProviderRepository, provider_id: str, body: Any) -> tuple[ProviderConnection, bool]:
    provider, created = repo.put_provider(provider_id, body)
    log.info("provider %s %s", provider_id, "created" if created else "updated")
    return provider, created


def refresh_token_store(runtime: Any) -> SecretStore | None:
    """The runtime's Key Vault, or None when PCSYNC_KEY_VAULT_URL is not set."""
    return runtime.secrets if runtime.settings.key_vault_url else None


def remove_provider(
    store: TableStore, provider_id: str, *, purge: bool, secrets: SecretStore | None = None
) -> dict[str, Any]:
    """Disable a provider, keeping its synced data; with purge, delete the row and its data.

    A purge first disables the provider (no new work starts for it), then deletes its refresh
    token from Key Vault (``secrets``; None when Key Vault is not configured), and only then its
    consent flows, synced rows and the provider row. So when Key Vault fails (SecretStoreError)
    nothing has been deleted and the purge can simply be run again.
    """
    validate_provider_id(provider_id)
    repo = ProviderRepository.from_store(store)
    provider = repo.get_provider(provider_id)  # NotFound for an unknown id
    if not purge:
        repo.disable_provider(provider_id)
        return {"id": provider_id, "enabled": False, "purged": False}

    if provider.enabled:
        repo.disable_provider(provider_id)
    try:
        token = _delete_refresh_token(provider, secrets)  # before any row is deleted
    except SecretStoreError as exc:
        log.warning("purge of provider %s stopped: %s", provider_id, exc)
        raise SecretStoreError(
            f"purge of provider {provider_id} stopped before deleting anything: {exc}. The provider is "
            "disabled; run the purge again once Key Vault works", status=exc.status) from None
    _forget_cached_tokens(provider_id)
    flows = purge_consent_flows(store, provider_id)
    removed = {table: purge_provider_rows(store, table, provider_id) for table in PROVIDER_DATA_TABLES}
    repo.delete_provider(provider_id)
    log.warning("provider %s purged: %s, %s consent flows, refresh token deleted: %s",
                provider_id, removed, flows, token["refreshTokenDeleted"])
    return {"id": provider_id, "purged": True, "rowsDeleted": removed, "consentFlowsDeleted": flows, **token}


def _delete_refresh_token(provider: ProviderConnection, secrets: SecretStore | None) -> dict[str, Any]:
    if secrets is None:
        return {"refreshTokenDeleted": False, "refreshTokenReason": KEY_VAULT_NOT_CONFIGURED}
    name = provider.refresh_token_secret_name
    deleted = secrets.delete_secret(name)
    if deleted is None:
        return {"refreshTokenDeleted": False,
                "refreshTokenReason": f"no refresh token was stored in Key Vault (secret {name} does not exist)"}
    result: dict[str, Any] = {"refreshTokenDeleted": True, "refreshTokenSecret": name}
    if deleted.recoverable_until:
        # soft delete with purge protection: Azure purges it then; pcsync can no longer read it
        result["refreshTokenRecoverableUntil"] = deleted.recoverable_until.isoformat(timespec="seconds")
    return result


def _forget_cached_tokens(provider_id: str) -> None:
    """Drop this process's cached TokenProvider (and access token) for the provider."""
    try:
        from auth.tokens import forget_token_provider
    except ImportError:  # pragma: no cover - auth is part of the app
        return
    forget_token_provider(provider_id)


def purge_consent_flows(store: TableStore, provider_id: str) -> int:
    table = store.table(CONSENT_FLOWS_TABLE)
    rows = table.list_entities(
        query=f"PartitionKey eq @pk and {CONSENT_FLOW_PROVIDER_COLUMN} eq @p",
        parameters={"pk": CONSENT_FLOW_PARTITION, "p": provider_id},
        select=["PartitionKey", "RowKey"],
    )
    count = 0
    for row in rows:
        table.delete_entity(row["PartitionKey"], row["RowKey"])
        count += 1
    return count


def purge_provider_rows(store: TableStore, table_name: str, provider_id: str) -> int:
    table = store.table(table_name)
    rows = table.list_entities(
        query="PartitionKey eq @p or ( PartitionKey ge @lo and PartitionKey lt @hi )",
        parameters={"p": provider_id, "lo": provider_id + "|", "hi": provider_id + "}"},
        select=["PartitionKey", "RowKey"],
    )
    count = 0
    for row in rows:
        table.delete_entity(row["PartitionKey"], row["RowKey"])
        count += 1
    return count
