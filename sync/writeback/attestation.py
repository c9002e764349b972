"""``agreement.confirm`` under the 2026 rules: the enhanced MCA attestation as a state machine
(a mixin of WritebackApplier; the legacy confirmation path was retired on 2026-01-05).

    required -> link_sent -> accepted -> agreement_created
                          \\-> expired      (the customer did not accept in time)
    (any)    -> failed                      (Partner Center refused)

1. create the attestation (``POST /attestations/enhanced``, app-only in Partner Center) with the
   customer's country, language and company and the signatory; record its id and the customer's
   acceptance link (``link_sent``; the record waits, state ``waiting``);
2. the write-backs timer re-checks it (``GET /attestations/enhanced/{id}``) until accepted or
   expired;
3. create the agreement with the attestation id; ``600061`` (an agreement with these details
   already exists) is success (``agreement_created``).

Each transition is kept on the record (``attestation.history``) with its time and evidence.
"""
from __future__ import annotations

import enum
from typing import Any, Mapping
from urllib.parse import quote

from shared.clock import parse_iso, to_iso
from shared.jsonutil import get_path
from shared.partner_center_errors import BadRequestError

from .record import WritebackRecord, WritebackState
from .request import WritebackRequest
from .rules import MCA_TYPE, agreement_summary, agreement_template, same_agreement
from .wire import refused

ATTESTATIONS_PATH = "/attestations/enhanced"
ACCEPTANCE_LINK = "https://cdn.partner.microsoft.com/mca/?attestationid={id}"
# Customers whose agreement predates this must accept the Microsoft Customer Agreement again.
REATTEST_BEFORE = "2023-04-01"


class AttestationState(enum.StrEnum):
    REQUIRED = "required"
    LINK_SENT = "link_sent"
    ACCEPTED = "accepted"
    AGREEMENT_CREATED = "agreement_created"
    EXPIRED = "expired"
    FAILED = "failed"


def attestation_state(record: WritebackRecord) -> AttestationState | None:
    state = get_path(record.attestation or {}, "state")
    return AttestationState(state) if state in {s.value for s in AttestationState} else None


def _move(record: WritebackRecord, state: AttestationState, at: Any, evidence: Mapping[str, Any]) -> None:
    attestation = dict(record.attestation or {})
    history = list(attestation.get("history") or [])
    history.append({"state": state.value, "at": to_iso(at), "evidence": dict(evidence)})
    attestation.update(state=state.value, at=to_iso(at), history=history[-20:])
    record.attestation = attestation


def _customer_path(record: WritebackRecord) -> str:
    return f"/customers/{quote(record.customer_id, safe='')}"


def _attestation_body(customer: Mapping[str, Any], contact: Mapping[str, str], customer_id: str) -> dict[str, Any]:
    """What the enhanced attestation asks for, from the customer's profile and the signatory."""
    billing = get_path(customer, "billingProfile") or {}
    body = {"customerTenantId": customer_id,
            "country": get_path(billing, "defaultAddress", "country") or get_path(customer, "country"),
            "language": get_path(billing, "language") or "en",
            "companyName": get_path(customer, "companyProfile", "companyName") or get_path(billing, "companyName"),
            "signatoryFirstName": contact.get("firstName"), "signatoryLastName": contact.get("lastName"),
            "signatoryEmail": contact.get("email")}
    if contact.get("phoneNumber"):
        body["signatoryPhoneNumber"] = contact["phoneNumber"]
    return body


class AttestationSteps:
    """The agreement half of WritebackApplier (uses its _save/_finish/_succeed/_reject)."""

    def _apply_agreement(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        state = attestation_state(record)
        if state in (None, AttestationState.REQUIRED, AttestationState.EXPIRED, AttestationState.FAILED):
            return self._start_attestation(record, request, client)
        if state is AttestationState.LINK_SENT:
            return self._check_acceptance(record, request, client)
        if state is AttestationState.ACCEPTED:
            return self._create_agreement(record, request, client)
        return self._succeed(record, "the agreement was created", after=record.after)

    def _start_attestation(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        template_id = agreement_template(client.get_json("/agreements", params={"agreementType": MCA_TYPE}))
        if template_id is None:
            return self._reject(record, "Partner Center lists no Microsoft Customer Agreement template "
                                "(agreement confirmation is only available in the public cloud)")
        contact = dict(request.contact or {})
        record.before = {"templateId": template_id}
        existing = self._find_agreement(record, client, template_id, contact)
        if existing is not None and str(get_path(existing, "dateAgreed") or "") >= REATTEST_BEFORE:
            _move(record, AttestationState.AGREEMENT_CREATED, self.clock(), {"existing": agreement_summary(existing)})
            return self._succeed(record, "an identical agreement already exists in Partner Center",
                                 after=agreement_summary(existing))
        _move(record, AttestationState.REQUIRED, self.clock(),
              {"reason": "no agreement since " + REATTEST_BEFORE if existing is None
               else f"the agreement of {get_path(existing, 'dateAgreed')} predates {REATTEST_BEFORE}"})
        customer = client.get_json(_customer_path(record), customer_id=record.customer_id)
        tries = sum(1 for h in (record.attestation or {}).get("history", []) if h.get("state") == "link_sent")
        record.request_id = self._request_id(record, f"ATTEST|{tries}")
        self._save(record)
        try:
            # sent app-only (the only token this API takes): the client's token choice
            # (shared.token_choice) sends app-only tokens wherever Partner Center takes them
            created = client.send_json("POST", ATTESTATIONS_PATH,
                                       _attestation_body(customer, contact, record.customer_id),
                                       replay_safe=True, request_id=record.request_id).body or {}
        except BadRequestError as exc:
            _move(record, AttestationState.FAILED, self.clock(), {"code": exc.code, "refusal": exc.description})
            return self._reject(record, refused("the attestation", exc), code=exc.code)
        attestation_id = str(get_path(created, "id") or get_path(created, "attestationId") or "")
        if not attestation_id:
            _move(record, AttestationState.FAILED, self.clock(), {"answer": "no attestation id"})
            return self._reject(record, "Partner Center created an attestation without an id")
        link = str(get_path(created, "link") or get_path(created, "acceptanceLink")
                   or ACCEPTANCE_LINK.format(id=quote(attestation_id, safe="")))
        record.attestation = {**(record.attestation or {}), "attestationId": attestation_id, "link": link,
                              "templateId": template_id}
        _move(record, AttestationState.LINK_SENT, self.clock(), {"attestationId": attestation_id, "link": link,
                                                                 "requestId": record.request_id})
        return self._wait(record, link)

    def _wait(self, record: WritebackRecord, link: str) -> WritebackRecord:
        return self._finish(record, WritebackState.WAITING, f"waiting for the customer to accept the Microsoft "
                            f"Customer Agreement at {link} (re-checked by the write-backs timer)")

    def _check_acceptance(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        attestation = record.attestation or {}
        found = client.get_json(f"{ATTESTATIONS_PATH}/{quote(str(attestation.get('attestationId')), safe='')}")
        status = str(get_path(found, "status") or "").lower()
        expires = parse_iso(get_path(found, "expirationDateTime") or get_path(found, "expiresDateTime"))
        if status == "accepted":
            _move(record, AttestationState.ACCEPTED, self.clock(),
                  {"acceptedAt": get_path(found, "acceptedDateTime") or get_path(found, "acceptedAt")})
            return self._create_agreement(record, request, client)
        if status == "expired" or (expires is not None and expires < self.clock()):
            _move(record, AttestationState.EXPIRED, self.clock(), {"expiresAt": to_iso(expires), "status": status})
            return self._reject(record, f"the customer did not accept the attestation link before it expired "
                                f"({to_iso(expires) or status}); retry for a new link", code="expired")
        return self._wait(record, str(attestation.get("link")))

    def _create_agreement(self, record: WritebackRecord, request: WritebackRequest, client: Any) -> WritebackRecord:
        attestation = record.attestation or {}
        contact = dict(request.contact or {})
        template_id = str(attestation.get("templateId") or (record.before or {}).get("templateId"))
        # the agreement from the accepted attestation (its contact is the signatory; the legacy
        # primaryContact/templateId/dateAgreed body is retired)
        body = {"attestationId": attestation.get("attestationId")}
        record.request_id = self._request_id(record, "POST")
        self._save(record)
        try:
            created = client.send_json("POST", f"{_customer_path(record)}/agreements", body,
                                       customer_id=record.customer_id, replay_safe=True,
                                       request_id=record.request_id).body
            evidence = {"created": True}
        except BadRequestError as exc:
            if exc.code != "600061":  # "an agreement with the same details already exists": success
                _move(record, AttestationState.FAILED, self.clock(), {"code": exc.code, "refusal": exc.description})
                return self._reject(record, refused("the agreement", exc), code=exc.code)
            created = {"primaryContact": contact, "templateId": template_id, "type": MCA_TYPE, **body}
            evidence = {"code": "600061", "meaning": "the agreement already exists"}
        listed = self._find_agreement(record, client, template_id, contact)
        _move(record, AttestationState.AGREEMENT_CREATED, self.clock(), {**evidence, "requestId": record.request_id})
        return self._succeed(record, after=agreement_summary(listed or created))

    def _find_agreement(self, record: WritebackRecord, client: Any, template_id: str,
                        contact: Mapping[str, str]) -> dict[str, Any] | None:
        """The customer's agreement that matches the confirmation, stored locally as the sync
        stores it; None when Partner Center lists none."""
        customer = record.customer_id
        page = client.get_json(f"{_customer_path(record)}/agreements", params={"agreementType": MCA_TYPE},
                               customer_id=customer)
        items = get_path(page, "items")
        found = next((dict(item) for item in (items if isinstance(items, list) else [])
                      if isinstance(item, Mapping) and same_agreement(item, template_id, contact)), None)
        if found is not None:
            self._store_locally(record, lambda: self.mirror.agreement(record.provider_id, customer, found))
        return found


__all__ = ["ACCEPTANCE_LINK", "ATTESTATIONS_PATH", "AttestationState", "REATTEST_BEFORE", "attestation_state"]
