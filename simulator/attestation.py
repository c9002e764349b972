"""Enhanced MCA attestation (the 2026 flow, issue 11; partner-center-2026.md §1.4).

1. ``POST /v1/attestations/enhanced`` (app-only token only) -> an attestation id and the
   customer's acceptance link;
2. the customer accepts through the link (here: ``POST /_sim/attestations/{id}/accept``), or the
   link expires (``attestation_link_days``, or ``POST /_sim/attestations/{id}/expire``);
3. ``POST /v1/customers/{id}/agreements`` with ``attestationId`` creates the agreement; a
   duplicate answers 400 / 600061 PartnerConfirmedAgreementAlreadyExists.

The legacy confirmation (the same POST without ``attestationId``) was retired on 2026-01-05
and is refused unless ``legacy_agreement_confirmation`` is on.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from simulator.clock import iso, parse_iso
from simulator.data import MCA_REATTEST_BEFORE, MCA_TEMPLATE_ID, Agreement
from simulator.pc_common import SALES_ROLES, SERVICE, api_fault, fail, lower_keys, read_json
from simulator.web import HttpError, Request, Response, Router, json_response, route

PENDING, ACCEPTED, EXPIRED = "pending", "accepted", "expired"
LINK = "https://cdn.partner.microsoft.com/mca/?attestationid={}"
REQUIRED = ("customerTenantId", "country", "language", "companyName", "signatoryFirstName",
            "signatoryLastName", "signatoryEmail")
LEGACY_RETIRED = ("The legacy confirmation of customer acceptance of the Microsoft Customer Agreement was retired "
                  "on 2026-01-05. Create an enhanced attestation (POST /v1/attestations/enhanced, app-only), have "
                  "the customer accept it through its link, then create the agreement with its attestationId.")


@dataclass
class Attestation:
    id: str
    customer_id: str
    fields: dict  # the request's fields under their documented names
    created: dt.datetime
    expires: dt.datetime
    status: str = PENDING
    accepted: dt.datetime | None = None
    agreement_created: bool = False

    def status_at(self, now: dt.datetime) -> str:
        if self.status == PENDING and now > self.expires:
            self.status = EXPIRED
        return self.status


def render_attestation(att: Attestation, now: dt.datetime) -> dict:
    body = {"attestationId": att.id, "customerTenantId": att.customer_id, "status": att.status_at(now),
            "acceptanceLink": LINK.format(att.id), "createdDateTime": iso(att.created),
            "expirationDateTime": iso(att.expires), **att.fields,
            "attributes": {"objectType": "EnhancedAttestation"}}
    if att.accepted:
        body["acceptedDateTime"] = iso(att.accepted)
    return body


def legacy_retired() -> HttpError:
    return fail(400, 2000, LEGACY_RETIRED)


def _already_exists(description: str) -> HttpError:
    return HttpError(json_response(400, {"code": 600061, "description": f"PartnerConfirmedAgreementAlreadyExists: "
                                         f"{description}", "data": [], "source": "PartnerFD", "isRetryable": False}))


def names_attestation(body) -> bool:
    return isinstance(body, dict) and any(str(k).lower() == "attestationid" for k in body)


def needs_new_attestation(agreements: list[Agreement]) -> bool:
    """True when no MCA acceptance dated on or after 2023-04-01 is recorded for the customer."""
    for agreement in agreements:
        if agreement.type != "MicrosoftCustomerAgreement":
            continue
        try:
            if parse_iso(agreement.date_agreed) >= MCA_REATTEST_BEFORE:
                return False
        except ValueError:
            continue
    return True


class Attestations:
    def __init__(self, state, auth, faults):
        self.state, self.auth, self.faults = state, auth, faults

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

    @route("POST", "/v1/attestations/enhanced")
    def create(self, req: Request) -> Response:
        principal = self.auth.require(req)
        if not principal.app_only:
            raise fail(403, 2032, "Access denied: the enhanced attestation API supports application-only (AppOnly) "
                                  "authentication only; an App+User token is not accepted.")
        fields = self._fields(read_json(req))
        customer = self.state.customer(fields.pop("customerTenantId"))
        if customer is None:
            raise fail(404, 60003, "Tenant not found")
        now = self.state.clock.now()
        att = Attestation(id=str(uuid.uuid4()), customer_id=customer.id, fields=fields, created=now,
                          expires=now + dt.timedelta(days=self.state.config.attestation_link_days))
        with self.state.lock:
            self.state.attestations[att.id] = att
            return json_response(201, render_attestation(att, now))

    @staticmethod
    def _fields(body) -> dict:
        if not isinstance(body, dict):
            raise fail(400, 2000, "The attestation must be a JSON object.")
        lowered = lower_keys(body)
        fields = {name: lowered.get(name.lower()) for name in REQUIRED}
        missing = [name for name, value in fields.items() if not isinstance(value, str) or not value.strip()]
        if missing:
            raise fail(400, 2000, f"Required fields are missing or empty: {', '.join(missing)}.", missing)
        if len(fields["country"]) != 2 or not fields["country"].isalpha():
            raise fail(400, 2000, "country must be an ISO 3166-1 alpha-2 code.", ["country"])
        if "@" not in fields["signatoryEmail"]:
            raise fail(400, 2000, "signatoryEmail is not a valid email address.", ["signatoryEmail"])
        phone = lowered.get("signatoryphonenumber")
        if isinstance(phone, str):
            fields["signatoryPhoneNumber"] = phone
        return fields

    @route("GET", "/v1/attestations/enhanced/{attestation_id}")
    def get(self, req: Request) -> Response:
        self.auth.require(req)
        with self.state.lock:
            att = self.state.attestations.get(req.params["attestation_id"].lower())
            if att is None:
                raise fail(404, 1000, "Not found", [req.params["attestation_id"]])
            return json_response(200, render_attestation(att, self.state.clock.now()))

    def create_agreement(self, req: Request, body: dict, customer_id: str, render) -> Response:
        """POST /v1/customers/{id}/agreements with an attestationId (app-only or App+User)."""
        principal = self.auth.require(req, roles=SALES_ROLES)
        customer = self.state.customer(customer_id)
        if customer is None:
            raise fail(404, 60003, "Tenant not found", [customer_id])
        customer_id = customer.id
        fields = lower_keys(body)
        attestation_id = str(fields.get("attestationid") or "").lower()
        now = self.state.clock.now()
        with self.state.lock:
            att = self.state.attestations.get(attestation_id)
            if att is None:
                raise fail(404, 1000, f"Attestation {attestation_id} not found.", [attestation_id])
            if att.customer_id.lower() != customer_id.lower():
                raise fail(400, 2000, f"Attestation {att.id} was made for another customer.", [att.id])
            status = att.status_at(now)
            if status == EXPIRED:
                raise HttpError(api_fault(410, 2000, f"AttestationExpired: the acceptance link of attestation "
                                                     f"{att.id} expired; create a new attestation."))
            if status == PENDING:
                raise HttpError(api_fault(409, 2000, f"AttestationNotAccepted: the customer has not accepted "
                                                     f"attestation {att.id} yet."))
            existing = self.state.agreements.setdefault(att.customer_id.lower(), [])
            if att.agreement_created:
                raise _already_exists(f"an agreement was already created from attestation {att.id}.")
            agreement = Agreement(att.customer_id, "MicrosoftCustomerAgreement", MCA_TEMPLATE_ID,
                                  iso(att.accepted or now), att.fields["signatoryFirstName"],
                                  att.fields["signatoryLastName"], att.fields["signatoryEmail"],
                                  att.fields.get("signatoryPhoneNumber", ""), principal.oid or self.state.app.client_id,
                                  attestation_id=att.id)
            if any(_same_contact(other, agreement) and not needs_new_attestation([other]) for other in existing):
                raise _already_exists("an agreement with the same contact details already exists for this customer.")
            existing.append(agreement)
            att.agreement_created = True
        response = render(agreement, with_user=True)
        response.pop("agreementLink", None)
        return json_response(201, response)


def _same_contact(a: Agreement, b: Agreement) -> bool:
    return (a.type, a.first_name.lower(), a.last_name.lower(), a.email.lower()) == \
        (b.type, b.first_name.lower(), b.last_name.lower(), b.email.lower())


def accept(state, attestation_id: str) -> dict:
    """The customer accepts through the link; an expired link cannot be accepted (LookupError /
    ValueError for the control API)."""
    with state.lock:
        att = state.attestations.get(attestation_id.lower())
        if att is None:
            raise LookupError(f"unknown attestation {attestation_id}")
        now = state.clock.now()
        if att.status_at(now) == EXPIRED:
            raise ValueError(f"attestation {attestation_id} expired; its link cannot be accepted")
        if att.status == PENDING:
            att.status, att.accepted = ACCEPTED, now
        return render_attestation(att, now)


def expire(state, attestation_id: str) -> dict:
    with state.lock:
        att = state.attestations.get(attestation_id.lower())
        if att is None:
            raise LookupError(f"unknown attestation {attestation_id}")
        if att.status == PENDING:
            att.status = EXPIRED
        return render_attestation(att, state.clock.now())
