"""Partner Center /v1: profiles, customers, subscriptions (incl. PATCH), agreements."""
from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote

from simulator.audit import audit
from simulator.clock import iso, parse_iso
from simulator.data import MCA_LINK, MCA_TEMPLATE_ID, Agreement, Customer, Subscription
from simulator import attestation, lifecycle
from simulator.faults import FaultInjector
from simulator.pc_common import (SALES_ROLES, SERVICE, PartnerCenterAuth, collection, decode_token,
                                 encode_token, fail, link, lower_keys, parse_size, read_json,
                                 stable_etag)
from simulator.state import SimulatorState
from simulator.web import Request, Response, Router, json_response, route

CUSTOMER_PAGE_DEFAULT, CUSTOMER_PAGE_MAX = 200, 500
MAX_QUANTITY = 10_000
AGREEMENT_TEMPLATES = [
    {"templateId": MCA_TEMPLATE_ID, "agreementType": "MicrosoftCustomerAgreement", "agreementLink": MCA_LINK,
     "versionRank": 0},
    {"templateId": "998b88de-aa99-4388-a42c-1b3517d49490", "agreementType": "MicrosoftCloudAgreement",
     "agreementLink": "https://aka.ms/microsoftcloudagreement", "versionRank": 0},
]


# ---- rendering (also used by the control API's truth endpoints) -------------------------

def render_customer_summary(customer: Customer) -> dict:
    return {
        "id": customer.id,
        "companyProfile": {"tenantId": customer.id, "domain": customer.domain, "companyName": customer.company_name,
                           "attributes": {"objectType": "CustomerCompanyProfile"}},
        "relationshipToPartner": "reseller",
        "links": {"self": link(f"/customers/{customer.id}")},
        "attributes": {"objectType": "Customer"},
    }


def render_customer(customer: Customer) -> dict:
    address = {"country": customer.country, "city": customer.city, "state": customer.state,
               "addressLine1": "1 Main Street", "postalCode": customer.postal_code,
               "firstName": customer.contact_first, "lastName": customer.contact_last, "phoneNumber": "4255550100"}
    return {
        "id": customer.id,
        "commerceId": customer.commerce_id,
        "companyProfile": {"tenantId": customer.id, "domain": customer.domain, "companyName": customer.company_name,
                           "links": {"self": link(f"/customers/{customer.id}/profiles/company")},
                           "attributes": {"objectType": "CustomerCompanyProfile"}},
        "billingProfile": {"id": customer.billing_profile_id, "firstName": customer.contact_first,
                           "lastName": customer.contact_last,
                           "email": f"{customer.contact_first.lower()}@{customer.domain}", "culture": "en-US",
                           "language": "en", "companyName": customer.company_name, "defaultAddress": address,
                           "links": {"self": link(f"/customers/{customer.id}/profiles/billing")},
                           "attributes": {"etag": f"-{stable_etag(customer.billing_profile_id)}",
                                          "objectType": "CustomerBillingProfile"}},
        "relationshipToPartner": "reseller",
        "allowDelegatedAccess": True,
        "links": {"self": link(f"/customers/{customer.id}")},
        "attributes": {"objectType": "Customer"},
    }


def render_subscription(sub: Subscription, now) -> dict:
    self_uri = f"/customers/{sub.customer_id}/subscriptions/{sub.id}"
    body = {
        "id": sub.id, "offerId": sub.offer_id, "offerName": lifecycle.offer_name(sub), "friendlyName": sub.friendly_name,
        "quantity": sub.quantity, "unitType": sub.unit_type, "creationDate": iso(sub.creation_date),
        "effectiveStartDate": iso(sub.effective_start), "commitmentEndDate": iso(sub.commitment_end),
        "status": sub.status, "autoRenewEnabled": sub.auto_renew, "isTrial": False, "billingType": sub.billing_type,
        "billingCycle": sub.billing_cycle, "hasPurchasableAddons": False, "isMicrosoftProduct": True,
        "contractType": "subscription", "orderId": sub.order_id, "attentionNeeded": False, "actionTaken": False,
        "publisherName": "Microsoft Corporation",
    }
    if sub.suspension_reasons:
        body["suspensionReasons"] = list(sub.suspension_reasons)
    if sub.nce:
        product_id, sku_id, availability_id = sub.offer_id.split(":")
        within_window = sub.cancellation_allowed_until is not None and now <= sub.cancellation_allowed_until
        body.update({
            "productType": dict(sub.product_type or {}),
            "termDuration": sub.term_duration, "renewalTermDuration": sub.term_duration,
            "commitmentEndDateTime": iso(sub.commitment_end),
            "billingCycleEndDate": iso(_billing_cycle_end(sub, now)),
            "cancellationAllowedUntilDate": iso(sub.cancellation_allowed_until),
            "refundOptions": [{"type": "Full", "expiresAt": iso(sub.cancellation_allowed_until)}] if within_window else [],
            "refundableQuantity": {"totalQuantity": sub.quantity if within_window else 0,
                                   "details": [{"quantity": sub.quantity,
                                                "allowedUntilDateTime": iso(sub.cancellation_allowed_until)}]
                                   if within_window else []},
            "links": {"product": link(f"/products/{product_id}?country=US"),
                      "sku": link(f"/products/{product_id}/skus/{sku_id}?country=US"),
                      "availability": link(f"/products/{product_id}/skus/{sku_id}/availabilities/{availability_id}?country=US"),
                      "self": link(self_uri)},
        })
        if sub.scheduled_next_term:
            body["scheduledNextTermInstructions"] = sub.scheduled_next_term
        body.update(lifecycle.render_lifecycle(sub))
    else:
        body["entitlementId"] = sub.entitlement_id
        links = {"offer": link(f"/offers/{sub.offer_id}?country=US")}
        if sub.parent_id:
            body["parentSubscriptionId"] = sub.parent_id
            links["parentSubscription"] = link(f"/customers/{sub.customer_id}/subscriptions/{sub.parent_id}")
        links["self"] = link(self_uri)
        body["links"] = links
    body["attributes"] = {"etag": sub.etag, "objectType": "Subscription"}
    return body


def _billing_cycle_end(sub: Subscription, now) -> object:
    """Monthly cycles end on the next monthly anniversary of the start; others at term end."""
    if sub.billing_cycle != "monthly":
        return sub.commitment_end
    end = sub.effective_start
    while end <= now and end < sub.commitment_end:
        end += dt.timedelta(days=30)
    return min(end, sub.commitment_end)


def render_agreement(agreement: Agreement, with_user: bool = False) -> dict:
    body = {}
    if with_user:
        body["userId"] = agreement.user_id
    body.update({
        "primaryContact": {"firstName": agreement.first_name, "lastName": agreement.last_name,
                           "email": agreement.email, "phoneNumber": agreement.phone},
        "templateId": agreement.template_id, "dateAgreed": agreement.date_agreed, "type": agreement.type,
        "agreementLink": MCA_LINK if agreement.type == "MicrosoftCustomerAgreement"
        else "https://aka.ms/microsoftcloudagreement",
    })
    if agreement.attestation_id:
        body["attestationId"] = agreement.attestation_id
    return body


class PartnerCenter:
    def __init__(self, state: SimulatorState, auth: PartnerCenterAuth, faults: FaultInjector):
        self.state, self.auth, self.faults = state, auth, faults
        self.attestations = attestation.Attestations(state, auth, faults)

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)
        self.attestations.register(router)

    # ---- profiles -----------------------------------------------------------------------
    @route("GET", "/v1/profiles/organization")
    def organization_profile(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True)
        p = self.state.partner
        return json_response(200, {
            "id": p.org_profile_id, "companyName": p.company_name,
            "defaultAddress": {"country": "US", "city": "Redmond", "state": "WA", "addressLine1": "1 Partner Way",
                               "addressLine2": "", "postalCode": "98052", "firstName": "Integration",
                               "lastName": "Account", "phoneNumber": "4255550100"},
            "tenantId": p.tenant_id, "domain": p.domain, "email": f"billing@{p.domain}", "language": "en",
            "culture": "en-US", "profileType": "OrganizationProfile",
            "links": {"self": link("/profiles/organization")},
            "attributes": {"etag": stable_etag(p.org_profile_id), "objectType": "OrganizationProfile"},
        })

    @route("GET", "/v1/profiles/legalbusiness")
    def legal_business_profile(self, req: Request) -> Response:
        self.auth.require(req)
        p = self.state.partner
        address = {"country": "US", "city": "Redmond", "state": "WA", "addressLine1": "1 Partner Way",
                   "addressLine2": "", "postalCode": "98052"}
        return json_response(200, {
            "companyName": p.company_name,
            "address": {**address, "firstName": "Integration", "lastName": "Account", "phoneNumber": "4255550100"},
            "primaryContact": {"firstName": "Integration", "lastName": "Account", "email": f"billing@{p.domain}",
                               "phoneNumber": "4255550100"},
            "companyApproverAddress": address, "companyApproverEmail": f"billing@{p.domain}",
            "vettingStatus": "authorized", "vettingSubStatus": "none", "profileType": "LegalBusinessProfile",
            "links": {"self": link("/profiles/legalbusiness")}, "attributes": {"objectType": "LegalBusinessProfile"},
        })

    @route("GET", "/v1/customers/relationshiprequests")
    def relationship_request(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True, roles=SALES_ROLES)
        dap = str(req.query.get("dualRoleIndirectRelationship", "")).lower() == "true"
        return json_response(200, {
            "url": (f"https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship&partnerId="
                    f"{self.state.partner.tenant_id}&msppId=0&DAP={'true' if dap else 'false'}"
                    f"#/BillingAccounts/partner-invitation"),
            "attributes": {"objectType": "RelationshipRequest"},
        })

    # ---- customers ----------------------------------------------------------------------
    def _customer_or_404(self, customer_id: str) -> Customer:
        customer = self.state.customer(customer_id)
        if customer is None:
            raise fail(404, 60003, "Tenant not found", [customer_id])
        return customer

    def _customer_filter(self, raw: str | None):
        if not raw:
            return None
        try:
            spec = lower_keys(json.loads(raw))
            field, value = str(spec["field"]).lower(), str(spec["value"]).lower()
            operator = str(spec.get("operator", "starts_with")).lower()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise fail(400, 2000, "The filter must be JSON like {\"Field\":\"CompanyName\",\"Value\":\"con\","
                                  "\"Operator\":\"starts_with\"}.")
        if field not in ("companyname", "domain") or operator not in ("starts_with", "equals"):
            raise fail(400, 2000, "Customer search only allows starts with and equals operation.", [field, operator])

        def matches(customer: Customer) -> bool:
            text = (customer.company_name if field == "companyname" else customer.domain).lower()
            return text.startswith(value) if operator == "starts_with" else text == value
        return matches

    @route("GET", "/v1/customers")
    def list_customers(self, req: Request) -> Response:
        self.auth.require(req, roles=SALES_ROLES)
        if str(req.query.get("seekOperation", "")).lower() == "next":
            token = decode_token(req.headers.get("MS-ContinuationToken"), ("after", "size"))
            after, size, raw_filter = str(token["after"]), int(token["size"]), token.get("filter")
        else:
            after, size, raw_filter = "", parse_size(req, CUSTOMER_PAGE_DEFAULT, CUSTOMER_PAGE_MAX), \
                req.query.get("filter")
        matches = self._customer_filter(raw_filter)
        with self.state.lock:
            # Seek by id, not by position, so additions/removals between pages skip or repeat nothing.
            ordered = sorted((c for c in self.state.customers.values()
                              if c.id > after and (matches is None or matches(c))), key=lambda c: c.id)
        page, more = ordered[:size], len(ordered) > size
        self_uri = f"/customers?size={size}" + (f"&filter={quote(raw_filter)}" if raw_filter else "")
        token = next_link = None
        if more:
            token = encode_token({"after": page[-1].id, "size": size, "filter": raw_filter})
            next_link = link(f"/customers?size={size}&seekOperation=Next", "GET",
                             [{"key": "MS-ContinuationToken", "value": token}])
        return json_response(200, collection([render_customer_summary(c) for c in page], self_uri, next_link, token))

    @route("GET", "/v1/customers/{customer_id}")
    def get_customer(self, req: Request) -> Response:
        self.auth.require(req, roles=SALES_ROLES)
        return json_response(200, render_customer(self._customer_or_404(req.params["customer_id"])))

    # ---- subscriptions ------------------------------------------------------------------
    @route("GET", "/v1/customers/{customer_id}/subscriptions")
    def list_subscriptions(self, req: Request) -> Response:
        self.auth.require(req, roles=SALES_ROLES)
        customer = self._customer_or_404(req.params["customer_id"])
        now = self.state.clock.now()
        with self.state.lock:
            subs = list(self.state.subscriptions.get(customer.id.lower(), {}).values())
            self.state.advance_lifecycle(subs)
            order_id = req.query.get("order_id")
            items = [render_subscription(s, now) for s in subs if not order_id or s.order_id.lower() == order_id.lower()]
        return json_response(200, collection(items, f"/customers/{customer.id}/subscriptions"))

    def _subscription_or_404(self, req: Request) -> Subscription:
        customer = self._customer_or_404(req.params["customer_id"])
        sub = self.state.subscription(customer.id, req.params["subscription_id"])
        if sub is None:
            sid = req.params["subscription_id"]
            raise fail(404, 20003, f"Subscription with id {sid} not found.", [sid])
        return sub

    @route("GET", "/v1/customers/{customer_id}/subscriptions/{subscription_id}")
    def get_subscription(self, req: Request) -> Response:
        self.auth.require(req, roles=SALES_ROLES)
        sub = self._subscription_or_404(req)
        with self.state.lock:
            now = self.state.clock.now()
            self.state.advance_lifecycle([sub])
            return json_response(200, render_subscription(sub, now))

    @route("PATCH", "/v1/customers/{customer_id}/subscriptions/{subscription_id}")
    def patch_subscription(self, req: Request) -> Response:
        self.auth.require(req, roles=SALES_ROLES)
        sub = self._subscription_or_404(req)
        body = read_json(req)
        if not isinstance(body, dict):
            raise fail(400, 3000, "A full Subscription resource is required in the request body.")
        if_match = (req.headers.get("If-Match") or "").strip()
        if self.faults.refuse_write_try_again_later():
            raise fail(409, 900278, lifecycle.TRY_AGAIN_TEXT)
        with self.state.lock:
            now = self.state.clock.now()
            self.state.advance_lifecycle([sub])
            version = sub.version
            apply_subscription_patch(sub, body, if_match, now, self.state.config)
            if sub.version != version:  # the activity log has what changed, not the no-op PATCHes
                audit(self.state, sub.customer_id, "subscription", "update_subscription", None, SubscriptionId=sub.id)
            location = f"/customers/{sub.customer_id}/subscriptions/{sub.id}"
            rendered = render_subscription(sub, now)
        if self.faults.answer_write_with_202():
            # "When the patch operation takes longer than expected": 202 + Location, poll with GET.
            return Response(202, b"", [("Location", location)])
        return json_response(200, rendered)

    # ---- agreements ---------------------------------------------------------------------
    @route("GET", "/v1/agreements")
    def agreement_metadata(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True, roles=SALES_ROLES)
        wanted = (req.query.get("agreementType") or "*").lower()
        items = [t for t in AGREEMENT_TEMPLATES if wanted in ("*", t["agreementType"].lower())]
        return json_response(200, collection([dict(t) for t in items]))

    @route("GET", "/v1/customers/{customer_id}/agreements")
    def list_customer_agreements(self, req: Request) -> Response:
        self.auth.require(req, app_user_only=True, roles=SALES_ROLES)
        customer = self._customer_or_404(req.params["customer_id"])
        # Documented default when agreementType is omitted: MicrosoftCloudAgreement.
        wanted = (req.query.get("agreementType") or "MicrosoftCloudAgreement").lower()
        with self.state.lock:
            found = [a for a in self.state.agreements.get(customer.id.lower(), [])
                     if wanted == "*" or a.type.lower() == wanted]
            items = [render_agreement(a) for a in found]
        return json_response(200, collection(items))

    @route("POST", "/v1/customers/{customer_id}/agreements")
    def create_customer_agreement(self, req: Request) -> Response:
        body = read_json(req)
        if attestation.names_attestation(body):
            return self.attestations.create_agreement(req, body, req.params["customer_id"], render_agreement)
        principal = self.auth.require(req, app_user_only=True, roles=SALES_ROLES)
        customer = self._customer_or_404(req.params["customer_id"])
        if not self.state.config.legacy_agreement_confirmation:
            raise attestation.legacy_retired()
        agreement = validate_agreement(body, customer.id, principal.oid)
        with self.state.lock:
            existing = self.state.agreements.setdefault(customer.id.lower(), [])
            for other in existing:
                if (other.type, other.template_id, other.first_name, other.last_name, other.email, other.phone) == \
                        (agreement.type, agreement.template_id, agreement.first_name, agreement.last_name,
                         agreement.email, agreement.phone):
                    raise fail(400, 600061, "An agreement with the same details already exists for this customer.")
            existing.append(agreement)
            audit(self.state, customer.id, "agreement", "create_customer_agreement", render_agreement(agreement))
        response = render_agreement(agreement, with_user=True)
        response.pop("agreementLink", None)
        return json_response(201, response)


def validate_agreement(body, customer_id: str, user_id: str) -> Agreement:
    if not isinstance(body, dict):
        raise fail(400, 2000, "The agreement must be a JSON object.")
    data = lower_keys(body)
    contact = data.get("primarycontact") if isinstance(data.get("primarycontact"), dict) else {}
    missing = [name for name, value in (("primaryContact.firstName", contact.get("firstname")),
                                        ("primaryContact.lastName", contact.get("lastname")),
                                        ("primaryContact.email", contact.get("email")),
                                        ("templateId", data.get("templateid")),
                                        ("dateAgreed", data.get("dateagreed")),
                                        ("type", data.get("type")))
               if not isinstance(value, str) or not value.strip()]
    if missing:
        raise fail(400, 2000, f"Required fields are missing or empty: {', '.join(missing)}.", missing)
    if "@" not in contact["email"]:
        raise fail(400, 2000, "primaryContact.email is not a valid email address.", ["primaryContact.email"])
    template = next((t for t in AGREEMENT_TEMPLATES if t["agreementType"].lower() == data["type"].lower()), None)
    if template is None:
        raise fail(400, 2000, f"Unknown agreement type '{data['type']}'.", ["type"])
    if data["templateid"].lower() != template["templateId"]:
        raise fail(400, 2000, f"templateId {data['templateid']} is not a known template for {template['agreementType']}.",
                   ["templateId"])
    try:
        parse_iso(data["dateagreed"])
    except ValueError:
        raise fail(400, 2000, "dateAgreed must be an ISO-8601 date.", ["dateAgreed"])
    phone = contact.get("phonenumber")
    return Agreement(customer_id=customer_id, type=template["agreementType"], template_id=template["templateId"],
                     date_agreed=data["dateagreed"], first_name=contact["firstname"], last_name=contact["lastname"],
                     email=contact["email"], phone=phone if isinstance(phone, str) else "", user_id=user_id)


def _normalise_etag(value) -> str:
    text = str(value or "").strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"')


def apply_subscription_patch(sub: Subscription, raw_body: dict, if_match: str, now, config) -> None:
    """Validate a full-resource PATCH (keys in any casing) against Partner Center's rules and
    apply it. Caller holds the state lock. Raises HttpError with the documented ApiFault."""
    body = lower_keys(raw_body)
    if if_match and _normalise_etag(if_match) not in ("*", sub.etag):
        raise fail(400, 2055, "Etag is no longer valid")
    body_etag = (body.get("attributes") or {}).get("etag") if isinstance(body.get("attributes"), dict) else None
    if body_etag and _normalise_etag(body_etag) != sub.etag:
        raise fail(400, 2055, "Etag is no longer valid")
    if sub.status in ("deleted", "expired"):
        raise fail(400, 2011, f"Subscription with id {sub.id} and {sub.status} status cannot be updated.", [sub.id])
    changes = _patch_changes(sub, body, raw_body, now)
    if not changes:
        return
    lifecycle.refuse_if_pending(sub, now)
    lifecycle.check_change(sub, changes, now, one_at_a_time=not config.allow_multi_property_patch)
    _check_patch(sub, changes, now, config.nce_cancellation_days)
    _apply_patch(sub, changes, now, config)


def _patch_changes(sub: Subscription, body: dict, raw_body: dict, now) -> dict:
    """The properties this PATCH changes (a full resource is sent; unchanged ones are not changes)."""
    changes = {}
    if "quantity" in body:
        quantity = body["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise fail(400, 3000, "Invalid property: quantity must be an integer.", ["quantity"])
        if quantity != sub.quantity:
            changes["quantity"] = quantity
    if "status" in body:
        status = str(body["status"]).lower()
        if status not in ("active", "suspended", "deleted"):
            raise fail(400, 3000, f"Invalid property: status '{body['status']}' is not supported.", ["status"])
        if status != sub.status:
            changes["status"] = status
    if "autorenewenabled" in body and body["autorenewenabled"] is not None:
        if not isinstance(body["autorenewenabled"], bool):
            raise fail(400, 3000, "Invalid property: autoRenewEnabled must be a boolean.", ["autoRenewEnabled"])
        if body["autorenewenabled"] != sub.auto_renew:
            changes["auto_renew"] = body["autorenewenabled"]
    if "friendlyname" in body and isinstance(body["friendlyname"], str) and body["friendlyname"] != sub.friendly_name:
        changes["friendly_name"] = body["friendlyname"]
    if "billingcycle" in body and body["billingcycle"] and str(body["billingcycle"]).lower() != sub.billing_cycle:
        raise fail(400, 2054, "The billing cycle for an existing subscription cannot be updated using "
                              "update-subscription operation. Please use update-Order operation")
    if sub.nce and "schedulednextterminstructions" in body:
        # Keep the caller's original casing for this nested object (it is echoed back).
        original = next((v for k, v in raw_body.items() if k.lower() == "schedulednextterminstructions"), None)
        if original is not None and not isinstance(original, dict):
            raise fail(400, 3000, "Invalid property: scheduledNextTermInstructions must be an object.")
        if original != sub.scheduled_next_term:
            changes["scheduled_next_term"] = original
    actions = lifecycle.parse_actions(raw_body, sub, now) if sub.nce else None
    if actions is not None and actions != sub.scheduled_actions:
        changes["scheduled_actions"] = actions
    return changes


def _check_patch(sub: Subscription, changes: dict, now, window_days: int) -> None:
    if sub.status == "suspended":
        reactivating = changes.get("status") == "active"
        if not reactivating or set(changes) - {"status"}:
            raise fail(400, 800091, "Cannot update a subscription with suspended status")
    status = changes.get("status")
    within_window = sub.cancellation_allowed_until is not None and now <= sub.cancellation_allowed_until
    if status == "deleted":
        if not sub.nce:
            raise fail(400, 3000, "Legacy license-based subscriptions cannot be deleted; suspend them instead.",
                       ["status"])
        if not within_window:
            raise fail(400, 900117, f"You have passed your {window_days}-day cancellation window. We are unable "
                                    f"to cancel your purchase")
    if "quantity" in changes:
        quantity = changes["quantity"]
        if not 1 <= quantity <= MAX_QUANTITY:
            raise fail(400, 2002, "Subscription quantity is not within minimum and maximum allowed quantity")
        if sub.nce and quantity < sub.quantity and not within_window:
            raise fail(400, 800090, "Subscription quantity cannot be decreased")


def _apply_patch(sub: Subscription, changes: dict, now, config) -> None:
    status = changes.get("status")
    if "quantity" in changes and status != "deleted":
        sub.quantity = changes["quantity"]
    if status:
        sub.status = status
        sub.suspension_reasons = ["CustomerCancellation"] if status == "suspended" else []
    if "friendly_name" in changes:
        sub.friendly_name = changes["friendly_name"]
    if sub.nce and changes.keys() & {"auto_renew", "scheduled_actions", "scheduled_next_term"}:
        lifecycle.apply_end_of_term(sub, changes, now, config.est_conversion_hours)
    elif "auto_renew" in changes:
        sub.auto_renew = changes["auto_renew"]
    if sub.nce:
        lifecycle.after_change(sub, changes, now, config.pending_operation_seconds)
    sub.version += 1
