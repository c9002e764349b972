"""Write-back under the 2026 rules, with fakes: end of term, order per subscription, busy
refusals, split steps, scheduled and at-renewal changes, preview."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.partner_center import WriteResponse
from shared.partner_center_errors import BadRequestError, ConflictError
from sync.writeback.end_of_term import current_action, drift, next_step
from sync.writeback.preview import preview
from sync.writeback.request import parse_request
from sync.writeback.schedule import WritebackTimer
from tests.unit.sync.test_writeback_service import NOW, Clock, make_service, subscription


def nce(**extra: Any) -> dict[str, Any]:
    sub = subscription(window_days=-30, quantity=10)
    sub.update(termDuration="P1Y", billingCycle="annual", commitmentEndDate="2025-06-01T00:00:00Z",
               productType={"id": "OnlineServicesNCE"},
               scheduledActions=[{"actionType": "RenewToNewTerm", "scheduleType": "TermEnd"}])
    sub.update(extra)
    return sub


class EotClient:
    """A subscription behind GET/PATCH that keeps Partner Center's one-property rule: the end of
    term (autoRenewEnabled + scheduledActions + instructions) is one property, the others one each;
    ``busy`` refusals first (409 900278)."""

    GROUPS = {"quantity": "quantity", "status": "status", "friendlyName": "friendlyName",
              "autoRenewEnabled": "eot", "scheduledActions": "eot", "scheduledNextTermInstructions": "eot"}

    def __init__(self, sub=None, busy=0):
        self.sub = sub or nce()
        self.busy = busy
        self.patches: list[dict] = []
        self.gets = 0

    def get_json(self, path, *, params=None, customer_id=None):
        self.gets += 1
        return copy.deepcopy(self.sub)

    def send_json(self, method, path, body, *, headers=None, customer_id=None, replay_safe=False, request_id=None):
        changed = {k: body[k] for k in self.GROUPS if k in body and body[k] != self.sub.get(k)}
        self.patches.append(changed)
        if self.busy:
            self.busy -= 1
            raise ConflictError("busy", status=409, code="900278", description="not ready to be updated")
        if len({self.GROUPS[k] for k in changed}) > 1:
            raise BadRequestError("one", status=400, code="2000", description="Only one property per request")
        if body["attributes"]["etag"] != self.sub["attributes"]["etag"]:
            raise BadRequestError("stale", status=400, code="2055", description="Etag is no longer valid")
        if "quantity" in changed:
            self.sub.pop("scheduledNextTermInstructions", None)  # a mid-term change deletes scheduled changes
        self.sub.update(copy.deepcopy(changed))
        version = int(self.sub["attributes"]["etag"].split("-")[1]) + 1
        self.sub["attributes"]["etag"] = f"etag-{version}"
        return WriteResponse(200, copy.deepcopy(self.sub), None, request_id)


def body(operation, key="k1", **params):
    return {"idempotencyKey": key, "provider": "p1", "customer": "c1", "operation": operation, "subscription": "s1",
            **params}


def run(service, operation, key="k1", **params):
    return service.handle_message(json.dumps(body(operation, key, **params)).encode(), message_id=key)


# -- end of term ------------------------------------------------------------------------------


@pytest.mark.parametrize("action, auto_renew, action_type", [
    ("cancel", False, "Cancel"), ("extendedServiceTerm", False, "RenewToExtendedServiceTerm"),
])
def test_end_of_term_sends_the_action_with_auto_renew_never_auto_renew_off_alone(action, auto_renew, action_type):
    service, client = make_service(EotClient())
    record = run(service, "subscription.endOfTerm", action=action)
    assert record.state == "succeeded", record.reason
    assert client.patches == [{"autoRenewEnabled": auto_renew,
                               "scheduledActions": [{"actionType": action_type, "scheduleType": "TermEnd"}]}]
    assert record.after["endOfTerm"] == action and record.verification["state"] == "pending"
    assert record.verification["checkAt"] == "2025-03-11T12:00:00Z"  # the 24-hour settling time
    assert service.choices.chosen("p1", "c1", "s1") == action


def test_renew_with_next_term_changes_is_split_in_two_patches_each_polled():
    service, client = make_service(EotClient(nce(autoRenewEnabled=False, scheduledActions=[])))
    record = run(service, "subscription.endOfTerm", action="renew", nextTerm={"quantity": 7, "billingCycle": "monthly"})
    assert record.state == "succeeded", record.reason
    assert [sorted(p) for p in client.patches] == [["autoRenewEnabled", "scheduledActions"],
                                                    ["scheduledNextTermInstructions"]]
    instructions = client.sub["scheduledNextTermInstructions"]
    assert instructions["quantity"] == 7 and instructions["product"]["billingCycle"] == "monthly"
    assert instructions["product"]["productId"] == "CFQ7TTC0LH18" and record.after["nextTerm"]["quantity"] == 7


def test_auto_renew_off_needs_cancel_or_est_and_an_old_record_without_it_is_refused():
    with pytest.raises(ValidationFailed) as refused:
        parse_request(body("subscription.autoRenew", autoRenewEnabled=False), now=NOW)
    assert "Extended Service Term" in refused.value.problems["action"]
    service, client = make_service(EotClient())
    record = run(service, "subscription.autoRenew", autoRenewEnabled=False, action="cancel")
    assert record.state == "succeeded" and client.sub["scheduledActions"][0]["actionType"] == "Cancel"


def test_in_est_only_cancel_is_allowed():
    service, client = make_service(EotClient(nce(isExtendedServiceTerm=True, autoRenewEnabled=False,
                                                 scheduledActions=[])))
    record = run(service, "subscription.quantity", quantity=12)
    assert (record.state, record.error_code) == ("rejected", "900279") and client.patches == []
    assert run(service, "subscription.cancel", key="k2").state == "blocked"  # behind the refused one
    service.dismiss("k1")
    assert run(service, "subscription.cancel", key="k2").state == "succeeded"  # EST: cancel at any time


def test_drift_and_est_are_read_from_the_resource():
    trapped = nce(autoRenewEnabled=False, scheduledActions=[{"actionType": "RenewToExtendedServiceTerm"}])
    assert current_action(trapped) == "extendedServiceTerm" and drift("cancel", trapped)
    assert drift("cancel", nce(status="expired")) is None
    assert "Extended Service Term" in drift("renew", nce(isExtendedServiceTerm=True))
    assert next_step("renew", None, nce()) is None


def test_the_timer_rechecks_after_the_settling_time_and_records_drift():
    clock = Clock()
    service, client = make_service(EotClient(), clock=clock)
    run(service, "subscription.endOfTerm", action="cancel")
    assert WritebackTimer(service).run([]).verified == {}  # not due yet
    clock.advance(seconds=24 * 3600 + 1)
    client.sub.update(scheduledActions=[{"actionType": "RenewToExtendedServiceTerm", "scheduleType": "TermEnd"}])
    report = WritebackTimer(service).run([])
    record = service.find_record("p1", "k1")
    assert report.verified == {"k1": "drifted"} and record.verification["state"] == "drifted"
    assert "extendedServiceTerm" in record.verification["drift"] and record.warnings
    alerts = service.tables.table("alerts").rows
    assert [row["kind"] for row in alerts.values()] == ["end_of_term_drift"]


# -- order per subscription -------------------------------------------------------------------


def test_a_failed_write_back_blocks_later_ones_until_retried_or_dismissed():
    clock = Clock()
    service, client = make_service(EotClient(), clock=clock)
    first = run(service, "subscription.quantity", key="k1", quantity=5)  # reduction after the window
    assert first.state == "rejected"
    clock.advance(seconds=1)
    second = run(service, "subscription.friendlyName", key="k2", friendlyName="Sales")
    assert (second.state, second.blocked_by) == ("blocked", "k1") and "retry or dismiss 'k1'" in second.reason
    assert second.to_json()["blockedBy"] == "k1" and second.to_json()["error"].startswith("blocked by")
    with pytest.raises(Conflict):
        service.retry("k2")  # blocked: dismiss it or deal with its blocker
    dismissed = service.dismiss("k1")
    assert dismissed.state == "dismissed" and "was rejected" in dismissed.reason
    released = service.find_record("p1", "k2")
    assert released.state == "accepted" and service.queues.sent["writebacks"][-1]["idempotencyKey"] == "k2"
    assert run(service, "subscription.friendlyName", key="k2", friendlyName="Sales").state == "succeeded"
    with pytest.raises(Conflict):
        service.dismiss("k2")  # succeeded: final
    with pytest.raises(NotFound):
        service.retry("nope")


def test_retry_applies_again_and_success_releases_the_blocked():
    clock = Clock()
    service, client = make_service(EotClient(nce(cancellationAllowedUntilDate="2025-03-01T00:00:00Z")), clock=clock)
    assert run(service, "subscription.quantity", key="k1", quantity=5).state == "rejected"
    clock.advance(seconds=1)
    assert run(service, "subscription.friendlyName", key="k2", friendlyName="Sales").state == "blocked"
    client.sub["cancellationAllowedUntilDate"] = "2025-04-01T00:00:00Z"  # e.g. after a renewal
    retried = service.retry("k1")
    assert retried.state == "accepted" and service.queues.sent["writebacks"][-1]["idempotencyKey"] == "k1"
    assert run(service, "subscription.quantity", key="k1", quantity=5).state == "succeeded"
    assert service.find_record("p1", "k2").state == "accepted"  # released, queued again


# -- busy refusals, scheduled and at-renewal changes, preview ---------------------------------------


def test_busy_refusals_are_sent_again_with_backoff_then_failed():
    slept: list[float] = []
    service, client = make_service(EotClient(busy=2))
    service.applier.sleep = slept.append
    record = run(service, "subscription.quantity", quantity=12)
    assert record.state == "succeeded" and slept == [2.0, 5.0] and len(client.patches) == 3
    service, client = make_service(EotClient(busy=99))
    with pytest.raises(Exception):
        run(service, "subscription.quantity", quantity=12)
    assert service.find_record("p1", "k1").state == "failed" and len(client.patches) == 5


def test_a_scheduled_write_back_is_held_until_its_date_then_applied_by_the_timer():
    clock = Clock()
    service, client = make_service(EotClient(), clock=clock)
    submitted = service.submit(body("subscription.quantity", quantity=12, effectiveDate="2025-03-12"))
    assert submitted.record.state == "scheduled" and not submitted.queued and submitted.created
    assert submitted.record.to_json()["scheduledFor"] == "2025-03-12T00:00:00Z"
    assert WritebackTimer(service).run([]).applied == [] and client.patches == []
    clock.advance(seconds=2 * 86400)
    assert WritebackTimer(service).run([]).applied == ["k1"]
    assert service.find_record("p1", "k1").state == "succeeded" and client.sub["quantity"] == 12


def test_a_mid_term_change_warns_that_scheduled_changes_were_deleted():
    sub = nce(cancellationAllowedUntilDate="2025-04-01T00:00:00Z",
              scheduledNextTermInstructions={"quantity": 4, "product": {"termDuration": "P1Y"}})
    service, client = make_service(EotClient(sub))
    answer = preview(parse_request(body("subscription.quantity", quantity=12), now=NOW), sub, NOW)
    assert answer["allowed"] and answer["when"] == "now" and "deletes" in answer["warnings"][0]
    record = run(service, "subscription.quantity", quantity=12)
    assert record.state == "succeeded" and "deleted the scheduled next-term changes" in record.warnings[0]


def test_a_quantity_at_renewal_is_a_next_term_instruction():
    service, client = make_service(EotClient())
    record = run(service, "subscription.quantity", quantity=4, atRenewal=True)
    assert record.state == "succeeded" and client.sub["quantity"] == 10
    assert client.sub["scheduledNextTermInstructions"]["quantity"] == 4


@pytest.mark.parametrize("sub, params, allowed, when, words", [
    (nce(), {"operation": "subscription.quantity", "quantity": 5}, False, "atRenewal", "atRenewal: true"),
    (nce(productType={"id": "Software"}, cancellationAllowedUntilDate="2025-04-01T00:00:00Z"),
     {"operation": "subscription.quantity", "quantity": 5}, False, "never", "software"),
    (nce(), {"operation": "subscription.cancel"}, False, "atRenewal", "endOfTerm"),
    (nce(isExtendedServiceTerm=True), {"operation": "subscription.friendlyName", "friendlyName": "x"}, False,
     "never", "allows only cancel"),
    (nce(status="suspended"), {"operation": "subscription.quantity", "quantity": 12}, False, "never", "suspended"),
    (nce(), {"operation": "subscription.quantity", "quantity": 12}, True, "now", "accepted now"),
    (nce(), {"operation": "subscription.endOfTerm", "action": "cancel"}, True, "atRenewal", "renewal"),
    (nce(), {"operation": "subscription.endOfTerm", "action": "renew"}, True, "unchanged", "already"),
])
def test_preview_says_when_and_why_with_the_dates(sub, params, allowed, when, words):
    request = parse_request(body(params.pop("operation"), **params), now=NOW)
    answer = preview(request, sub, NOW)
    assert (answer["allowed"], answer["when"]) == (allowed, when), answer["reason"]
    assert words in answer["reason"] and answer["dates"]["cancellationAllowedUntilDate"]


def test_the_service_preview_reads_and_writes_nothing():
    service, client = make_service(EotClient())
    answer = service.preview(body("subscription.quantity", quantity=5))
    assert answer["allowed"] is False and answer["when"] == "atRenewal" and client.patches == []
    assert client.gets == 1 and service.log_store.rows == {}


def test_friendly_name_is_one_patch():
    service, client = make_service(EotClient())
    assert run(service, "subscription.friendlyName", friendlyName="Finance").state == "succeeded"
    assert client.patches == [{"friendlyName": "Finance"}]
