"""End of term (issue 11): scheduled actions, EST and its 24-hour trap, one change at a time,
pending operations, 900278 refusals and renewal on the simulator clock."""
from __future__ import annotations

import pytest

from conftest import PartnerCenterClient, app_only_token
from simulator.testing import start_simulator


@pytest.fixture
def lsim():
    with start_simulator(customers=2, subscriptions_per_customer=1, invoices=1, line_items_per_invoice=1) as running:
        yield running


def _client(sim) -> PartnerCenterClient:
    return PartnerCenterClient(sim, app_only_token(sim))


def _new(sim, **fields) -> tuple[str, dict]:
    customer = sim.control.customers()[0]["id"]
    fields.setdefault("days_ago", 100)
    fields.setdefault("term_duration", "P1Y")
    sub = sim.control.add_subscription(customer, nce=True, **fields)
    return f"/v1/customers/{customer}/subscriptions/{sub['id']}", sub


def _patch(client, path, **changes):
    body = client.get(path).json()
    body.update(changes)
    return client.patch(path, json=body)


def _view(sim, sub_id) -> dict:
    return next(s for s in sim.control.lifecycle()["subscriptions"] if s["subscriptionId"] == sub_id)


def test_subscription_shows_end_of_term_fields(lsim):
    client = _client(lsim)
    path, _ = _new(lsim, end_of_term="renew", ends_in_days=40)
    body = client.get(path).json()
    assert body["autoRenewEnabled"] is True and body["isExtendedServiceTerm"] is False
    assert [a["actionType"] for a in body["scheduledActions"]] == ["RenewToNewTerm"]
    assert body["scheduledActions"][0]["scheduleType"] == "TermEnd"
    assert body["scheduledActions"][0]["effectiveDate"] == body["commitmentEndDate"]
    for key in ("commitmentEndDate", "cancellationAllowedUntilDate", "productType", "termDuration", "billingCycle"):
        assert key in body


@pytest.mark.parametrize("auto_renew,action,ok", [
    (True, "RenewToNewTerm", True), (False, "Cancel", True), (False, "RenewToExtendedServiceTerm", True),
    (True, "Cancel", False), (False, "RenewToNewTerm", False), (True, "RenewToExtendedServiceTerm", False)])
def test_scheduled_action_must_agree_with_auto_renew(lsim, auto_renew, action, ok):
    client = _client(lsim)
    path, _ = _new(lsim, end_of_term="none")
    response = _patch(client, path, autoRenewEnabled=auto_renew,
                      scheduledActions=[{"actionType": action, "scheduleType": "TermEnd"}])
    if ok:
        assert response.status_code == 200, response.text
        assert [a["actionType"] for a in response.json()["scheduledActions"]] == [action]
    else:
        assert response.status_code == 400 and response.json()["code"] == 3000
        assert "autoRenewEnabled" in response.json()["description"]


def test_auto_renew_off_alone_converts_to_est_within_24_hours(lsim):
    client = _client(lsim)
    path, sub = _new(lsim, end_of_term="renew", ends_in_days=60)
    assert _patch(client, path, autoRenewEnabled=False).status_code == 200
    assert client.get(path).json()["scheduledActions"] == []
    lsim.control.advance_clock(days=1)
    after = client.get(path).json()
    assert [a["actionType"] for a in after["scheduledActions"]] == ["RenewToExtendedServiceTerm"]
    assert any(e["event"].startswith("auto-renew off converted") for e in lsim.control.lifecycle()["events"]
               if e["subscriptionId"] == sub["id"])


def test_cancel_action_sent_with_auto_renew_off_is_kept(lsim):
    client = _client(lsim)
    path, _ = _new(lsim, end_of_term="renew", ends_in_days=60)
    assert _patch(client, path, autoRenewEnabled=False,
                  scheduledActions=[{"actionType": "Cancel", "scheduleType": "TermEnd"}]).status_code == 200
    lsim.control.advance_clock(days=2)
    assert [a["actionType"] for a in client.get(path).json()["scheduledActions"]] == ["Cancel"]


def test_one_property_change_at_a_time(lsim):
    client = _client(lsim)
    path, sub = _new(lsim, end_of_term="renew", cancellation_allowed_until="2999-01-01T00:00:00Z")
    response = _patch(client, path, quantity=sub["quantity"] + 1, friendlyName="two changes")
    assert response.status_code == 400 and response.json()["code"] == 2000
    assert response.json()["data"] == ["friendlyName", "quantity"]
    lsim.control.set_settings(allow_multi_property_patch=True)
    assert _patch(client, path, quantity=sub["quantity"] + 1, friendlyName="two changes").status_code == 200


def test_pending_operation_window_then_accepted(lsim):
    client = _client(lsim)
    lsim.control.set_settings(pending_operation_seconds=300)
    path, sub = _new(lsim, end_of_term="renew")
    assert _patch(client, path, quantity=sub["quantity"] + 1).status_code == 200
    refused = _patch(client, path, friendlyName="next")
    assert refused.status_code == 409 and refused.json()["code"] == 900278
    assert "not ready to be updated" in refused.json()["description"]
    assert _view(lsim, sub["id"])["pendingUntil"]
    lsim.control.advance_clock(seconds=301)
    assert _patch(client, path, friendlyName="next").status_code == 200


def test_try_again_later_refusals_are_injectable(lsim):
    client = _client(lsim)
    path, _ = _new(lsim, end_of_term="renew")
    lsim.control.set_faults(fault_try_again_later=1.0)
    refused = _patch(client, path, friendlyName="x")
    assert refused.status_code == 409 and refused.json()["code"] == 900278
    assert "Try again after 24 hours" in refused.json()["description"]
    lsim.control.set_faults(fault_try_again_later=0.0)
    assert _patch(client, path, friendlyName="x").status_code == 200


def test_mid_term_change_deletes_next_term_instructions(lsim):
    client = _client(lsim)
    path, sub = _new(lsim, end_of_term="renew", cancellation_allowed_until="2999-01-01T00:00:00Z")
    instructions = {"product": {"termDuration": "P1M", "billingCycle": "monthly"}, "quantity": 3}
    set_ = _patch(client, path, scheduledActions=[{"actionType": "RenewToNewTerm", "scheduleType": "TermEnd",
                                                   "instructions": instructions}])
    assert set_.status_code == 200 and set_.json()["scheduledNextTermInstructions"] == instructions
    changed = _patch(client, path, quantity=sub["quantity"] + 1).json()
    assert "scheduledNextTermInstructions" not in changed
    assert changed["scheduledActions"][0]["instructions"] is None


def test_est_allows_only_cancel_and_software_no_reduction(lsim):
    client = _client(lsim)
    path, _ = _new(lsim, extended_service_term=True, end_of_term="none")
    est = client.get(path).json()
    assert est["isExtendedServiceTerm"] is True and est["offerName"].endswith("Extended Service Term")
    refused = _patch(client, path, quantity=est["quantity"] + 1)
    assert refused.status_code == 400 and refused.json()["code"] == 900279
    assert _patch(client, path, status="deleted").status_code == 200
    soft_path, soft = _new(lsim, software=True, end_of_term="renew", quantity=5,
                           cancellation_allowed_until="2999-01-01T00:00:00Z")
    reduced = _patch(client, soft_path, quantity=4)
    assert reduced.status_code == 400 and reduced.json()["code"] == 800090
    refused_est = _patch(client, soft_path, autoRenewEnabled=False,
                         scheduledActions=[{"actionType": "RenewToExtendedServiceTerm"}])
    assert refused_est.status_code == 400 and "not eligible" in refused_est.json()["description"]


def test_renewal_on_the_clock_lands_each_end_of_term_action(lsim):
    client = _client(lsim)
    renew_path, renew = _new(lsim, end_of_term="renew", ends_in_days=10)
    instructions = {"product": {"termDuration": "P1M", "billingCycle": "monthly"}, "quantity": 7}
    assert _patch(client, renew_path, scheduledActions=[{"actionType": "RenewToNewTerm",
                                                          "instructions": instructions}]).status_code == 200
    cancel_path, _ = _new(lsim, end_of_term="cancel", ends_in_days=10)
    est_path, _ = _new(lsim, end_of_term="est", ends_in_days=10)
    trap_path, trap = _new(lsim, end_of_term="none", ends_in_days=10)
    software_path, _ = _new(lsim, software=True, end_of_term="none", ends_in_days=10)
    lsim.control.advance_clock(days=11)
    renewed = client.get(renew_path).json()
    assert (renewed["status"], renewed["quantity"], renewed["termDuration"], renewed["billingCycle"]) == \
        ("active", 7, "P1M", "monthly")
    assert renewed["commitmentEndDate"] > renew["commitmentEndDate"] and not renewed["isExtendedServiceTerm"]
    assert client.get(cancel_path).json()["status"] == "expired"
    assert client.get(est_path).json()["isExtendedServiceTerm"] is True
    assert client.get(trap_path).json()["isExtendedServiceTerm"] is True  # no action chosen: EST
    assert client.get(software_path).json()["status"] == "expired"
    events = {e["subscriptionId"]: e["event"] for e in lsim.control.lifecycle()["events"]}
    assert events[trap["id"]] == "entered EST without an EST action"
    assert events[renew["id"]] == "renewed"


def test_est_backfill_knob(lsim):
    path, sub = _new(lsim, end_of_term="none", ends_in_days=30)
    assert lsim.control.est_backfill([sub["id"]]) == [sub["id"]]
    body = _client(lsim).get(path).json()
    assert [a["actionType"] for a in body["scheduledActions"]] == ["RenewToExtendedServiceTerm"]
    assert lsim.control.est_backfill([sub["id"]], immediately=True) == [sub["id"]]
    assert _client(lsim).get(path).json()["isExtendedServiceTerm"] is True


def test_bad_actions_are_400(lsim):
    client = _client(lsim)
    path, _ = _new(lsim, end_of_term="renew")
    for actions in ("cancel", [{"actionType": "Pause"}], [{"actionType": "Cancel", "scheduleType": "CustomDate"}],
                    [{"actionType": "Cancel", "instructions": {"quantity": 1}}]):
        response = _patch(client, path, autoRenewEnabled=False, scheduledActions=actions)
        assert response.status_code == 400 and response.json()["code"] == 3000, actions
    with pytest.raises(Exception):
        lsim.control.set_settings(pending_operation_seconds=-1)


def test_the_2026_knobs_reach_a_simulator_process():
    from simulator.testing import start_simulator_process

    running = start_simulator_process(customers=1, subscriptions_per_customer=1, invoices=1, line_items_per_invoice=1,
                                      pending_operation_seconds=5, conditional_access_block=True,
                                      mfa_error_format="2019")
    try:
        settings = running.control.settings()
        assert (settings["pending_operation_seconds"], settings["conditional_access_block"],
                settings["mfa_error_format"], settings["allow_multi_property_patch"]) == (5.0, True, "2019", False)
    finally:
        running.stop()
