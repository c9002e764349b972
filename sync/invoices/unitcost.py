"""Cost management "from the provider invoice": subscription ``unitCost`` and ``costCurrency``.

After an invoice import ends ``active``, each subscription its reconciliation lines name gets
the effective unit price of its last line (``EffectiveUnitPrice``, in the pricing currency,
else the billing currency), skipping ``addQuantity`` and customer-credit lines (they do not
show the full cost). Only the newest invoice sets it: ``unitCostInvoiceDate`` on the row says
which invoice did, and an older invoice imported later leaves it. The values are kept in table
``subscriptioncosts`` too: the subscription sync copies them into every subscription row it
writes (``SUBSCRIPTIONS.carried``), so a re-synced row keeps its cost.
"""
from __future__ import annotations

from typing import Any, Mapping

from shared.jsonutil import get_path
from shared.logging import get_logger
from shared.providers import CostManagement, ProviderConnection
from shared.tables import escape_key

from ..streams import SUBSCRIPTION_COSTS

log = get_logger(__name__)

COSTS_TABLE = SUBSCRIPTION_COSTS.table


def update_unit_costs(tables: Any, provider: ProviderConnection, invoice: Mapping[str, Any],
                      costs: Mapping[str, tuple[str, str, str]]) -> int:
    """Merge the costs into the subscription rows; returns how many rows changed."""
    if provider.cost_management is not CostManagement.INVOICE or not costs:
        return 0
    invoice_id = str(get_path(invoice, "id") or "")
    invoice_date = str(get_path(invoice, "invoiceDate") or "")
    subscriptions, stored = tables.table("subscriptions"), tables.table(COSTS_TABLE)
    changed = 0
    for subscription, (customer, cost, currency) in sorted(costs.items()):
        partition = escape_key(f"{provider.id}|{customer}")
        key = escape_key(subscription)
        previous = stored.find_entity(partition, key)
        if previous is not None and str(previous.get("unitCostInvoiceDate") or "") > invoice_date:
            continue  # a newer invoice set it
        values = {"unitCost": cost, "costCurrency": currency, "unitCostInvoice": invoice_id,
                  "unitCostInvoiceDate": invoice_date}
        stored.upsert_entity({"PartitionKey": partition, "RowKey": key, **values})
        if subscriptions.find_entity(partition, key) is not None:
            subscriptions.upsert_entity({"PartitionKey": partition, "RowKey": key, **values})
            changed += 1
    log.info("unit costs from invoice %s: %d subscription(s) updated", invoice_id, changed,
             extra={"provider_id": provider.id, "invoice_id": invoice_id})
    return changed


__all__ = ["COSTS_TABLE", "update_unit_costs"]
