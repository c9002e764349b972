"""Partner Center /v1 invoices and reconciliation line items (lazy, any volume)."""
from __future__ import annotations

from urllib.parse import urlencode

from simulator.clock import iso
from simulator.data import Invoice
from simulator.line_items import (AZURE_BILLING, AZURE_USAGE, DAILY_RATED_USAGE, OFFICE_BILLING, ONETIME_BILLING,
                                  V1_STREAMS, LineItemStream, invoice_stream_counts)
from simulator.pc_common import (BILLING_ROLES, SERVICE, PartnerCenterAuth, collection, decode_token, encode_token,
                                 fail, link, parse_offset, parse_size)
from simulator.state import SimulatorState
from simulator.jsontext import dumps
from simulator.web import Request, Response, Router, json_response, route

INVOICE_PAGE_DEFAULT, INVOICE_PAGE_MAX = 200, 1000
LEGACY_PAGE_DEFAULT, LEGACY_PAGE_MAX = 200, 2000
SEEK_PAGE_MAX = 2000                 # "default and max size 2000" for onetime line items
_DETAIL_PATH = {OFFICE_BILLING: ("Office", "BillingLineItems"), AZURE_BILLING: ("Azure", "BillingLineItems"),
                AZURE_USAGE: ("Azure", "UsageLineItems"), ONETIME_BILLING: ("OneTime", "BillingLineItems"),
                DAILY_RATED_USAGE: ("OneTime", "UsageLineItems")}
_DETAIL_ENUMS = {OFFICE_BILLING: ("billing_line_items", "office"), AZURE_BILLING: ("billing_line_items", "azure"),
                 AZURE_USAGE: ("usage_line_items", "azure"), ONETIME_BILLING: ("billing_line_items", "one_time"),
                 DAILY_RATED_USAGE: ("usage_line_items", "one_time")}


_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "AUD": "$", "SEK": "kr", "DKK": "kr"}


def render_invoice(state: SimulatorState, invoice: Invoice) -> dict:
    kind_prefix = "OneTime" if invoice.is_new_commerce else "Recurring"
    details = []
    for kind in invoice_stream_counts(invoice, state.billing_plan(invoice.id)):
        item_type, provider = _DETAIL_ENUMS[kind]
        path_provider, path_type = _DETAIL_PATH[kind]
        details.append({"invoiceLineItemType": item_type, "billingProvider": provider,
                        "links": {"self": link(f"/invoices/{kind_prefix}-{invoice.id}/lineitems/{path_provider}/{path_type}")},
                        "attributes": {"objectType": "InvoiceDetail"}})
    total_cents = state.invoice_total_cents(invoice)
    return {
        "id": invoice.id, "invoiceDate": iso(invoice.invoice_date),
        "billingPeriodStartDate": iso(invoice.period_start), "billingPeriodEndDate": iso(invoice.period_end),
        "totalCharges": round(total_cents / 100, 2), "paidAmount": invoice.paid_amount,
        "currencyCode": invoice.currency, "currencySymbol": _SYMBOLS.get(invoice.currency, invoice.currency),
        "pdfDownloadLink": f"/invoices/{invoice.id}/documents/statement",
        "taxReceipts": [], "invoiceDetails": details, "documentType": "invoice",
        "invoiceType": "OneTime" if invoice.is_new_commerce else "Recurring",
        "links": {"self": link(f"/invoices/{kind_prefix}-{invoice.id}")},
        "attributes": {"objectType": "Invoice"},
    }


def exact_json_response(payload) -> Response:
    """Line-item pages carry Decimal amounts: their digits go into the JSON text unchanged."""
    return Response(200, dumps(payload).encode("utf-8"), [("Content-Type", "application/json; charset=utf-8")])


class Invoices:
    def __init__(self, state: SimulatorState, auth: PartnerCenterAuth):
        self.state, self.auth = state, auth

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

    def _invoice_or_404(self, invoice_id: str) -> Invoice:
        invoice = self.state.invoice(invoice_id)
        if invoice is None:
            raise fail(404, 1000, f"Not found: invoice {invoice_id} does not exist.", [invoice_id])
        return invoice

    @route("GET", "/v1/invoices")
    def list_invoices(self, req: Request) -> Response:
        self.auth.require(req, roles=BILLING_ROLES)
        size, offset = parse_size(req, INVOICE_PAGE_DEFAULT, INVOICE_PAGE_MAX), parse_offset(req)
        with self.state.lock:
            ordered = sorted(self.state.invoices.values(), key=lambda i: (i.invoice_date, i.id), reverse=True)
        page = ordered[offset:offset + size]
        items = [render_invoice(self.state, invoice) for invoice in page]
        next_link = link(f"/invoices?size={size}&offset={offset + size}") if offset + size < len(ordered) else None
        return json_response(200, collection(items, f"/invoices?size={size}&offset={offset}", next_link))

    @route("GET", "/v1/invoices/{invoice_id}")
    def get_invoice(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True, roles=BILLING_ROLES)
        return json_response(200, render_invoice(self.state, self._invoice_or_404(req.params["invoice_id"])))

    @staticmethod
    def _stream_kind(req: Request) -> str:
        provider = str(req.query.get("provider", "")).lower().replace("_", "")
        item_type = str(req.query.get("invoicelineitemtype", "")).lower().replace("_", "")
        if not provider or not item_type:
            raise fail(400, 2000, "The provider and invoicelineitemtype query parameters are required.",
                       ["provider", "invoicelineitemtype"])
        if provider in ("all", "marketplace"):
            provider = "onetime"
        kind = V1_STREAMS.get((provider, item_type))
        if kind is None:
            raise fail(400, 2000, f"Unsupported combination provider={provider}, invoicelineitemtype={item_type}.",
                       ["provider", "invoicelineitemtype"])
        return kind

    @route("GET", "/v1/invoices/{invoice_id}/lineitems")
    def line_items(self, req: Request) -> Response:
        self.auth.require(req, roles=BILLING_ROLES)
        invoice = self._invoice_or_404(req.params["invoice_id"])
        kind = self._stream_kind(req)
        stream = self.state.invoice_stream(invoice, kind)
        base_path = f"/invoices/{invoice.id}/lineitems"
        if kind in (ONETIME_BILLING, DAILY_RATED_USAGE):
            return self._seek_page(req, stream, base_path)
        return self._offset_page(req, stream, base_path)

    @route("GET", "/v1/invoices/{invoice_id}/lineitems/{provider}/{item_type}")
    def line_items_by_path(self, req: Request) -> Response:
        """Older form /invoices/{id}/lineitems/{Provider}/{Type} with size/offset paging."""
        self.auth.require(req, roles=BILLING_ROLES)
        invoice = self._invoice_or_404(req.params["invoice_id"])
        key = (req.params["provider"].lower(), req.params["item_type"].lower())
        kind = V1_STREAMS.get(key)
        if kind is None:
            raise fail(404, 1000, "Not found", [req.params["provider"], req.params["item_type"]])
        stream = self.state.invoice_stream(invoice, kind)
        return self._offset_page(req, stream, f"/invoices/{invoice.id}/lineitems/{req.params['provider']}/"
                                              f"{req.params['item_type']}", keep_params=False)

    @route("GET", "/v1/invoices/unbilled/lineitems")
    def unbilled_line_items(self, req: Request) -> Response:
        self.auth.require(req, roles=BILLING_ROLES)
        kind = self._stream_kind(req)
        if kind not in (ONETIME_BILLING, DAILY_RATED_USAGE):
            raise fail(400, 2000, "Unbilled line items are available for provider=onetime only.", ["provider"])
        currency = req.query.get("currencycode")
        period = str(req.query.get("period", "")).lower()
        if not currency or period not in ("current", "previous"):
            raise fail(400, 2000, "currencycode and period (current|previous) are required for unbilled line items.",
                       ["currencycode", "period"])
        stream = self.state.unbilled_stream(kind, period, currency)
        return self._seek_page(req, stream, "/invoices/unbilled/lineitems")

    def _query(self, req: Request, size: int, extra: dict | None = None) -> str:
        params = {k: req.query[k] for k in ("provider", "invoicelineitemtype", "currencycode", "period",
                                              "hasPartnerEarnedCredit") if req.query.get(k)}
        params["size"] = size
        params.update(extra or {})
        return urlencode(params)

    def _offset_page(self, req: Request, stream: LineItemStream, base_path: str, keep_params: bool = True) -> Response:
        size, offset = parse_size(req, LEGACY_PAGE_DEFAULT, LEGACY_PAGE_MAX), parse_offset(req)
        items = list(stream.items(offset, offset + size))
        query = (lambda off: f"{base_path}?{self._query(req, size, {'offset': off})}") if keep_params else \
            (lambda off: f"{base_path}?size={size}&offset={off}")
        next_link = link(query(offset + size)) if offset + size < stream.count else None
        return exact_json_response(collection(items, query(offset), next_link))

    def _seek_page(self, req: Request, stream: LineItemStream, base_path: str) -> Response:
        if str(req.query.get("seekOperation", "")).lower() == "next":
            token = decode_token(req.headers.get("MS-ContinuationToken"), ("stream", "offset", "size"))
            if token["stream"] != f"{stream.ctx.key}|{stream.kind}":
                raise fail(400, 2000, "The continuation token does not belong to this collection.")
            offset, size = int(token["offset"]), int(token["size"])
        else:
            offset, size = 0, parse_size(req, SEEK_PAGE_MAX, SEEK_PAGE_MAX)
        items = list(stream.items(offset, offset + size))
        token_value = next_link = None
        if offset + size < stream.count:
            token_value = encode_token({"stream": f"{stream.ctx.key}|{stream.kind}", "offset": offset + size,
                                        "size": size})
            next_link = link(f"{base_path}?{self._query(req, size, {'seekOperation': 'Next'})}", "GET",
                             [{"key": "MS-ContinuationToken", "value": token_value}])
        return exact_json_response(collection(items, f"{base_path}?{self._query(req, size)}", next_link, token_value))

    @route("GET", "/v1/invoices/estimates/links")
    def estimate_links(self, req: Request) -> Response:
        self.auth.require(req, roles=BILLING_ROLES)
        currency = req.query.get("currencycode") or "USD"
        items = []
        for kind_type, title, description, item_type, provider in (
                ("daily_rated_usage", "Daily rated usage unbilled",
                 "This invoice line items includes unbilled consumption based data only.", "UsageLineItems", "Marketplace"),
                ("non_consumption", "Unbilled reconciliation line items",
                 "This includes reconciliation line items for unbilled data only.", "billinglineitems", "all")):
            for period in ("Current", "Previous"):
                items.append({"type": kind_type, "title": title, "description": description, "period": period,
                              "link": link(f"/invoices/unbilled/lineitems?provider={provider}&invoicelineitemtype="
                                           f"{item_type}&currencycode={currency}&period={period.lower()}&size=2000")})
        return json_response(200, collection(items, f"/invoices/estimates/links?currencycode={currency}"))
