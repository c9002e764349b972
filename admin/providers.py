"""Provider connection management shared by the HTTP API and the CLI."""
from __future__ import annotations

from typing import Any, Callable

from shared.clock import to_iso
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
    # the invoice side (sync/invoices/)
    "invoiceusage", "invoiceacceptances", "subscriptioncosts", "unbilledlineitems", "unbilledusage",
    "unbilledsnapshots", "budgets", "budgetalerts",
)
# Consent flows (auth/consent.py: ConsentFlowStore) are one partition keyed by state, with the
# provider in a column. Named here rather than imported: admin does not depend on auth.
CONSENT_FLOWS_TABLE = "consentflows"
CONSENT_FLOW_PARTITION = "flow"
CONSENT_FLOW_PROVIDER_COLUMN = "provider_id"

KEY_VAULT_NOT_CONFIGURED = ("Key Vault is not configured (PCSYNC_KEY_VAULT_URL is empty), so no refresh token "
                            "was stored or deleted")


class ProviderAdmin:
    """Create, change, disable and purge provider connections (the HTTP API and the CLI).

    ``refresh_tokens`` gives the Key Vault holding refresh tokens, or None when
    PCSYNC_KEY_VAULT_URL is not set (called only by a purge, so listing and editing providers
    never needs Key Vault); ``on_purged`` drops the process's cached tokens and clients."""

    def __init__(self, *, tables: TableStore, providers: ProviderRepository,
                 refresh_tokens: Callable[[], SecretStore | None],
                 on_purged: Callable[[str], None] = lambda provider_id: None):
        self._tables = tables
        self._providers = providers
        self._refresh_tokens = refresh_tokens
        self._on_purged = on_purged

    def put(self, provider_id: str, body: Any) -> tuple[ProviderConnection, bool]:
        provider, created = self._providers.put_provider(provider_id, body)
        log.info("provider %s %s", provider_id, "created" if created else "updated")
        return provider, created

    def remove(self, provider_id: str, *, purge: bool) -> dict[str, Any]:
        """Disable a provider, keeping its synced data; with purge, delete the row and its data.

        A purge first disables the provider (no new work starts for it), then deletes its refresh
        token from Key Vault, and only then its consent flows, synced rows and the provider row.
        So when Key Vault fails (SecretStoreError) nothing has been deleted and the purge can
        simply be run again.
        """
        validate_provider_id(provider_id)
        repo = self._providers
        provider = repo.get_provider(provider_id)  # NotFound for an unknown id
        if not purge:
            repo.disable_provider(provider_id)
            return {"id": provider_id, "enabled": False, "purged": False}
        if provider.enabled:
            repo.disable_provider(provider_id)
        try:
            token = _delete_refresh_token(provider, self._refresh_tokens())  # before any row is deleted
        except SecretStoreError as exc:
            log.warning("purge of provider %s stopped: %s", provider_id, exc)
            raise SecretStoreError(
                f"purge of provider {provider_id} stopped before deleting anything: {exc}. The provider is "
                "disabled; run the purge again once Key Vault works", status=exc.status) from None
        self._on_purged(provider_id)
        flows = purge_consent_flows(self._tables, provider_id)
        removed = {table: purge_provider_rows(self._tables, table, provider_id) for table in PROVIDER_DATA_TABLES}
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
        result["refreshTokenRecoverableUntil"] = to_iso(deleted.recoverable_until)
    return result


def purge_consent_flows(store: TableStore, provider_id: str) -> int:
    return _delete_matching(store, CONSENT_FLOWS_TABLE, f"PartitionKey eq @pk and {CONSENT_FLOW_PROVIDER_COLUMN} eq @p",
                            {"pk": CONSENT_FLOW_PARTITION, "p": provider_id})


def purge_provider_rows(store: TableStore, table_name: str, provider_id: str) -> int:
    """The provider's own partition and its per-customer ones ("<provider id>|..."): "}" is the
    character after "|", so the range holds exactly the keys that start with "<provider id>|"."""
    return _delete_matching(store, table_name, "PartitionKey eq @p or ( PartitionKey ge @lo and PartitionKey lt @hi )",
                            {"p": provider_id, "lo": provider_id + "|", "hi": provider_id + "}"})


def _delete_matching(store: TableStore, table_name: str, query: str, parameters: dict[str, Any]) -> int:
    """Delete the rows of a table that match an OData filter; returns how many."""
    table = store.table(table_name)
    count = 0
    for row in table.list_entities(query=query, parameters=parameters, select=["PartitionKey", "RowKey"]):
        table.delete_entity(row["PartitionKey"], row["RowKey"])
        count += 1
    return count
