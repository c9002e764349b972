"""Partner Center's rules about its own resources, in one place (pure; no I/O)."""
from __future__ import annotations

from typing import Any, Mapping

from shared.jsonutil import get_path


def is_nce(subscription: Mapping[str, Any]) -> bool:
    """New-commerce subscriptions carry offer ids of the form ``<product>:<sku>:<availability>``;
    legacy offers are a bare GUID-like id."""
    return ":" in str(get_path(subscription, "offerId") or "")


def invoice_kind(invoice: Mapping[str, Any]) -> str:
    """``D`` for legacy (Recurring, office/azure) invoices, ``G`` for new commerce (OneTime).
    The id prefix decides when it is D or G; otherwise the invoice type does."""
    invoice_id = str(get_path(invoice, "id") or "").upper()
    if invoice_id[:1] in ("D", "G"):
        return invoice_id[:1]
    return "D" if str(get_path(invoice, "invoiceType") or "").lower() == "recurring" else "G"


def is_legacy_invoice(invoice: Mapping[str, Any]) -> bool:
    return invoice_kind(invoice) == "D"
