"""The delta's pure parts: activity records to targeted work, the cursor's overlap, the targeted
message, the customer summary shape and drift causes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sync.activity import ALL_RESOURCES, AuditRecord, DeltaPlan, Resource, resources_for
from sync.cursor import OVERLAP, DeltaCursor
from sync.drift import drift_cause
from sync.engine import InvalidMessage
from sync.runs import SyncMode
from sync.targeted import TargetedMessage, customer_summary, parse_targeted_message

C1 = "0000000c-0000-4000-8000-000000000001"
C2 = "0000000c-0000-4000-8000-000000000002"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def record(customer, resource_type, at=T0, rid="r1") -> AuditRecord:
    return AuditRecord.parse({"id": rid, "customerId": customer, "resourceType": resource_type,
                              "operationDate": at.isoformat()})


def test_resource_types_decide_what_is_re_read():
    assert resources_for("subscription") == {Resource.SUBSCRIPTIONS} == resources_for("Order")
    assert resources_for("customer") == {Resource.CUSTOMER}
    assert resources_for("customer_agreement") == {Resource.AGREEMENTS}
    assert resources_for("license") == frozenset()
    assert resources_for("somethingNew") == ALL_RESOURCES  # unknown: the safe side


def test_a_customer_is_in_the_plan_once_with_everything_its_records_touched():
    plan = DeltaPlan()
    for item in (record(C1.upper(), "subscription"), record(C1, "subscription"), record(C1, "customer"),
                 record(C2, "agreement"), record(None, "subscription"), record(C2, "license")):
        plan.add_record(item)
    assert plan.customers == [C1, C2]
    assert plan.work == {C1: {Resource.SUBSCRIPTIONS, Resource.CUSTOMER}, C2: {Resource.AGREEMENTS}}
    assert (plan.records, plan.passed_over) == (6, 2)


def test_the_cursor_reads_the_overlap_again_and_skips_what_it_handled():
    cursor = DeltaCursor("p1")
    cursor.advance("a", T0)
    assert cursor.read_from() == T0 - OVERLAP
    assert not cursor.is_new("a", T0)  # handled, inside the overlap
    assert cursor.is_new("late", T0 - timedelta(minutes=5))  # showed up late, inside the overlap
    assert not cursor.is_new("old", T0 - OVERLAP - timedelta(seconds=1))
    cursor.advance("b", T0 + OVERLAP * 2)
    assert set(cursor.kept_seen()) == {"b"}  # "a" left the overlap


def test_targeted_messages_round_trip_and_refuse_junk():
    message = TargetedMessage("p1", C1, "c", frozenset({Resource.CUSTOMER}), SyncMode.DELTA, source="audit")
    assert parse_targeted_message(message.to_json()) == message
    old_style = parse_targeted_message({"provider": "p1", "customer": C1.upper()})
    assert (old_style.customer_id, old_style.resources, old_style.mode) == (C1, {Resource.SUBSCRIPTIONS,
                                                                                 Resource.AGREEMENTS}, SyncMode.FULL)
    for bad in ({"resources": ["invoices"]}, {"resources": []}, {"mode": "sometimes"}, {"source": "x"},
                {"sweep": 5}, {"resources": "customer"}):
        with pytest.raises(InvalidMessage):
            parse_targeted_message({"provider": "p1", "customer": C1, **bad})


def test_the_customer_row_is_kept_in_the_list_shape():
    full = {"id": C1, "commerceId": "x", "billingProfile": {"email": "a@b"}, "relationshipToPartner": "reseller",
            "companyProfile": {"tenantId": C1, "domain": "d", "companyName": "n", "links": {"self": {}},
                               "attributes": {"objectType": "CustomerCompanyProfile"}},
            "links": {"self": {"uri": "/customers/x"}}, "attributes": {"objectType": "Customer"}}
    assert customer_summary(full) == {
        "id": C1, "relationshipToPartner": "reseller", "links": {"self": {"uri": "/customers/x"}},
        "companyProfile": {"tenantId": C1, "domain": "d", "companyName": "n",
                           "attributes": {"objectType": "CustomerCompanyProfile"}},
        "attributes": {"objectType": "Customer"}}


def test_drift_causes():
    old = {"offerName": "Microsoft 365 E3", "commitmentEndDate": "2026-05-01T00:00:00Z"}
    assert drift_cause("subscriptions", old, {**old, "offerName": "Microsoft 365 E3 (Extended Service Term)",
                                              "commitmentEndDate": "2026-05-31T00:00:00Z"}) == "est_conversion"
    assert drift_cause("subscriptions", old, {**old, "commitmentEndDate": "2027-05-01T00:00:00Z"}) == "renewal"
    assert drift_cause("subscriptions", old, {**old, "quantity": 3}) == "changed"
    assert drift_cause("customers", None, {"id": C1}) == "added"
    assert drift_cause("customers", {"removed": True}, {"id": C1}) == "added"
