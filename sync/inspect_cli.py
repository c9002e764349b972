"""`pcsync customers|subscriptions|invoices|runs list|show`: the synced tables without a table browser.

    pcsync customers list --provider P [--include-removed]
    pcsync customers show ID --provider P
    pcsync subscriptions list --provider P [--customer C] [--status active] [--nce | --legacy]
                              [--term-end-before 2025-07-01]
    pcsync subscriptions show ID --provider P [--customer C]
    pcsync subscriptions est|renewals ... (sync/writeback/horizon_cli.py)
    pcsync invoices list|show ID --provider P
    pcsync runs list [--provider P] [--stream S] [--outcome O] [--since 24h]
    pcsync runs show RUN_ID --provider P

Lists print a table (``--json``: a list of objects) of at most ``--limit`` rows; when there are
more, ``more ...: --page-token T`` on stderr gives the next page. A ``show`` of a missing row
ends with one ``error:`` line and exit code 2.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from . import queries
from .invoices.model import IMPORT_STREAM
from .runs import RunOutcome
from .streams import CUSTOMERS, INVOICES, STREAMS, Stream
from .views import View, add_output_options, field, parsed_json, print_item, print_items
from .writeback.horizon_cli import register_subscription_actions

SYNCED = (field("removed", convert=bool), field("removedAt", "removed_at"), field("updatedAt", "updated_at"))
RAW = (field("raw", convert=parsed_json),)

CUSTOMER_VIEW = View("customer", (
    field("id", header="id"), field("companyName", header="company"), field("domain", header="domain"),
    field("tenantId"), field("commerceId"), field("relationshipToPartner", header="relationship"),
    field("associatedPartnerId"), *SYNCED[:2], field("updatedAt", "updated_at", header="updated"),
), detail=RAW)

SUBSCRIPTION_VIEW = View("subscription", (
    field("id", header="id"), field("customer", "customer_id", header="customer"), field("offerId"),
    field("offerName", header="offer"), field("friendlyName"), field("quantity", header="qty"),
    field("unitType"), field("status", header="status"), field("isNce", header="nce"),
    field("autoRenewEnabled", header="auto-renew"), field("billingCycle"), field("termDuration"),
    field("commitmentEndDate", header="term end"), field("cancellationAllowedUntilDate"), *SYNCED,
), detail=RAW)

INVOICE_VIEW = View("invoice", (
    field("id", header="id"), field("invoiceDate", header="date"), field("kind", header="kind"),
    field("documentType"), field("billingPeriodStart"), field("billingPeriodEnd"),
    field("totalCharges", header="total"), field("paidAmount"), field("currencyCode", header="currency"),
    field("reconStatus", "recon_status", header="reconciliation"), field("reconSource", "recon_source"),
    field("importState", "import_state", header="state"), field("importReason", "import_reason", header="reason"),
    field("reconLinesTotal", "recon_lines_total", header="lines total"),
    field("checksum", "checksum_status", header="checksum"),
    field("checksumDifference", "checksum_difference", header="usage diff"),
    field("checksumExplained", "checksum_explained", header="explained"), field("reconAt", "recon_at"), *SYNCED,
), detail=(field("reconError", "recon_error"), field("reconRunId", "recon_run_id"),
           field("importMessage", "import_message"), field("checksumExplainedBy", "checksum_explained_by"),
           field("checksumReconTotal", "checksum_recon_total"), field("checksumUsageTotal", "checksum_usage_total"),
           field("importErrors", "import_errors"), field("importWarnings", "import_warnings"),
           field("acceptedAt", "accepted_at"), field("acceptedBy", "accepted_by"),
           field("acceptedReason", "accepted_reason"), field("acceptedTolerance", "accepted_tolerance"), *RAW))

RUN_VIEW = View("run", (
    field("startedAt", "started_at", header="started"), field("provider", "provider_id", header="provider"),
    field("stream", header="stream"), field("customer", "customer_id", header="customer"),
    field("outcome", header="outcome"), field("rowsRead", "rows_read", header="read"),
    field("rowsWritten", "rows_written", header="written"), field("rowsRemoved", "rows_removed", header="removed"),
    field("rowsSkipped", "rows_skipped"), field("calls", header="calls"), field("throttled429", "throttled_429"),
    field("retries", "retries"), field("durationS", "duration_s", header="seconds"),
    field("finishedAt", "finished_at"), field("runId", "run_id", header="run id"),
    field("correlationId", "correlation_id"), field("error", header="error"),
), detail=(field("childrenRemoved", "children_removed"), field("duplicates"),
           field("skipped", convert=parsed_json)))


Handler = Callable[[argparse.Namespace, Any], int]


def _paged(args: argparse.Namespace) -> dict[str, Any]:
    return {"limit": args.limit, "token": args.page_token}


def _synced(args: argparse.Namespace) -> dict[str, Any]:
    return {**_paged(args), "include_removed": args.include_removed}


def provider_table_commands(view: View, stream: Stream) -> tuple[Handler, Handler]:
    """``list`` and ``show`` of a provider-level stream (customers, invoices)."""
    def list_rows(args: argparse.Namespace, services: Any) -> int:
        page = queries.provider_rows_page(services.tables, stream, args.provider, select=view.select(), **_synced(args))
        return _print_page(args, view, page, f"{stream.name} of {args.provider}")

    def show_row(args: argparse.Namespace, services: Any) -> int:
        row = queries.get_provider_row(services.tables, stream, args.provider, args.id,
                                       include_removed=args.include_removed)
        return print_item(view.item(row, detailed=True), as_json=args.json, title=f"{view.noun} {args.id}")

    return list_rows, show_row


def _subscription_filter(args: argparse.Namespace) -> queries.SubscriptionFilter:
    return queries.SubscriptionFilter(customer_id=args.customer, status=args.status, nce=args.nce,
                                      term_end_before=args.term_end_before)


def subscriptions_list(args: argparse.Namespace, services: Any) -> int:
    page = queries.subscriptions_page(services.tables, args.provider, _subscription_filter(args),
                                      select=SUBSCRIPTION_VIEW.select(), **_synced(args))
    return _print_page(args, SUBSCRIPTION_VIEW, page, f"subscriptions of {args.provider}")


def subscriptions_show(args: argparse.Namespace, services: Any) -> int:
    row = queries.get_subscription(services.tables, args.provider, args.id, customer_id=args.customer,
                                   include_removed=args.include_removed)
    return print_item(SUBSCRIPTION_VIEW.item(row, detailed=True), as_json=args.json, title=f"subscription {args.id}")


def runs_list(args: argparse.Namespace, services: Any) -> int:
    since = queries.parse_since(args.since) if args.since else None
    where = queries.RunFilter(provider_id=args.provider, stream=args.stream, outcome=args.outcome, since=since)
    page = queries.runs_page(services.tables, where, select=RUN_VIEW.select(), **_paged(args))
    return _print_page(args, RUN_VIEW, page, f"runs of {args.provider or 'every provider'}")


def runs_show(args: argparse.Namespace, services: Any) -> int:
    row = queries.get_run(services.tables, args.provider, args.id)
    return print_item(RUN_VIEW.item(row, detailed=True), as_json=args.json, title=f"run {args.id}")


def _print_page(args: argparse.Namespace, view: View, page: queries.Page, title: str) -> int:
    items = [view.item(row) for row in page.rows]
    extra = [("removed", "removed")] if getattr(args, "include_removed", False) else []
    return print_items(view, items, as_json=args.json, title=title, next_token=page.next_token, extra_headers=extra)



def _group(subparsers: Any, noun: str, help_text: str) -> Any:
    return subparsers.add_parser(noun, help=help_text).add_subparsers(dest="action", required=True)


def _action(actions: Any, name: str, handler: Handler, help_text: str, *, item: str | None = None,
            provider_required: bool = True, synced: bool = True) -> Any:
    """One list or show command: its provider, output and (list) paging options."""
    cmd = actions.add_parser(name, help=help_text)
    if item:
        cmd.add_argument("id", help=item)
    cmd.add_argument("--provider", required=provider_required,
                     help="provider id" if provider_required else "provider id (default: every provider)")
    add_output_options(cmd, paged=item is None)
    if synced:
        cmd.add_argument("--include-removed", action="store_true", help="include rows removed upstream (tombstones)")
    cmd.set_defaults(handler=handler)
    return cmd


def _register_subscriptions(subparsers: Any) -> None:
    actions = _group(subparsers, "subscriptions", "synced subscriptions")
    listing = _action(actions, "list", subscriptions_list, "list a provider's subscriptions")
    listing.add_argument("--customer", help="only this customer's")
    listing.add_argument("--status", help="only this status (e.g. active, suspended, deleted)")
    kind = listing.add_mutually_exclusive_group()
    kind.add_argument("--nce", dest="nce", action="store_const", const=True, help="new-commerce subscriptions only")
    kind.add_argument("--legacy", dest="nce", action="store_const", const=False, help="legacy subscriptions only")
    listing.add_argument("--term-end-before", metavar="DATE", help="commitment end before this date (YYYY-MM-DD)")
    show = _action(actions, "show", subscriptions_show, "show one subscription", item="subscription id")
    show.add_argument("--customer", help="its customer (a direct read; without it the provider's customers are searched)")
    register_subscription_actions(actions)  # est, renewals (the write-back's end-of-term views)


def _register_runs(subparsers: Any) -> None:
    actions = _group(subparsers, "runs", "sync runs (table syncruns)")
    listing = _action(actions, "list", runs_list, "list runs, newest first per provider", provider_required=False,
                      synced=False)
    listing.add_argument("--stream", choices=sorted({*STREAMS, IMPORT_STREAM}), help="only this stream")
    listing.add_argument("--outcome", choices=[o.value for o in RunOutcome], help="only runs that ended so")
    listing.add_argument("--since", help="started at or after: an ISO date or time, or an age (90m, 24h, 7d)")
    _action(actions, "show", runs_show, "show one run", item="run id", synced=False)


def register(subparsers: Any) -> None:
    customers_list, customers_show = provider_table_commands(CUSTOMER_VIEW, CUSTOMERS)
    customers = _group(subparsers, "customers", "synced customers")
    _action(customers, "list", customers_list, "list a provider's customers")
    _action(customers, "show", customers_show, "show one customer", item="customer tenant id")
    _register_subscriptions(subparsers)
    invoices_list, invoices_show = provider_table_commands(INVOICE_VIEW, INVOICES)
    invoices = _group(subparsers, "invoices", "synced invoices and their reconciliation")
    _action(invoices, "list", invoices_list, "list a provider's invoices")
    _action(invoices, "show", invoices_show, "show one invoice", item="invoice id")
    from .invoices.cli import register_invoice_actions

    register_invoice_actions(invoices)
    _register_runs(subparsers)


__all__ = ["CUSTOMER_VIEW", "INVOICE_VIEW", "RUN_VIEW", "SUBSCRIPTION_VIEW", "register"]
