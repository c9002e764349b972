"""Provider connection management shared by the HTTP API and the CLI."""
from __future__ import annotations

from typing import Any

from shared.logging import get_logger
from shared.providers import ProviderConnection, ProviderRepository, validate_provider_id
from shared.tables import TableStore

log = get_logger(__name__)

# Tables holding synced data per provider. Their partition keys are the provider id, or start
# with "<provider id>|" for per-customer partitions, so a purge can find them by range.
PROVIDER_DATA_TABLES = (
    "customers", "subscriptions", "agreements", "invoices", "invoicelineitems", "usage",
    "syncruns", "writebackops",
)


def put_provider(repo: ProviderRepository, provider_id: str, body: Any) -> tuple[ProviderConnection, bool]:
    provider, created = repo.put_provider(provider_id, body)
    log.info("provider %s %s", provider_id, "created" if created else "updated")
    return provider, created


def remove_provider(store: TableStore, provider_id: str, *, purge: bool) -> dict[str, Any]:
    """Disable a provider, keeping its synced data; with purge, delete the row and its data."""
    validate_provider_id(provider_id)
    repo = ProviderRepository.from_store(store)
    repo.get_provider(provider_id)  # NotFound for an unknown id
    if not purge:
        repo.disable_provider(provider_id)
        return {"id": provider_id, "enabled": False, "purged": False}
    removed = {table: purge_provider_rows(store, table, provider_id) for table in PROVIDER_DATA_TABLES}
    repo.delete_provider(provider_id)
    log.warning("provider %s purged: %s", provider_id, removed)
    return {"id": provider_id, "purged": True, "rowsDeleted": removed}


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
