"""The queue names the sync features bind and send to. They live apart from the services so that
the blueprints can name their queue triggers without loading the Azure SDKs at cold start."""
from __future__ import annotations

SYNC_CUSTOMER_QUEUE = "sync-customer"  # one customer's subscriptions and agreements
IMPORT_INVOICE_QUEUE = "import-invoice"  # one invoice's line items
WRITEBACK_QUEUE = "writebacks"  # one write-back to apply
