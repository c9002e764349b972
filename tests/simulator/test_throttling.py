"""Token buckets per partner and per partner+customer, answered like APIM."""
from __future__ import annotations

from simulator.testing import start_simulator

from conftest import PartnerCenterClient, app_only_token


def test_partner_bucket_429_with_retry_after_and_counters():
    with start_simulator(customers=3, rate_limit_per_minute=5) as sim:
        client = PartnerCenterClient(sim, app_only_token(sim))
        statuses = [client.get("/v1/customers").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        refused = client.get("/v1/customers")
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
        seconds = refused.headers["Retry-After"]
        assert refused.json() == {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {seconds} seconds."}
        counters = sim.control.calls()["GET /v1/customers"]
        assert counters["count"] == 7 and counters["throttled"] == 2
        sim.control.reset_calls()
        assert sim.control.calls() == {}


def test_customer_bucket_is_separate():
    with start_simulator(customers=3, rate_limit_per_minute=100, customer_rate_limit_per_minute=2) as sim:
        client = PartnerCenterClient(sim, app_only_token(sim))
        first, second = [c["id"] for c in sim.control.customers()[:2]]
        codes = [client.get(f"/v1/customers/{first}/subscriptions").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert client.get(f"/v1/customers/{second}/subscriptions").status_code == 200
        key = "GET /v1/customers/{id}/subscriptions"
        assert sim.control.calls()[key]["throttled"] == 1


def test_rate_limit_can_change_at_runtime(fresh_sim):
    client = PartnerCenterClient(fresh_sim, app_only_token(fresh_sim))
    fresh_sim.control.set_faults(rate_limit_per_minute=1)
    assert [client.get("/v1/customers").status_code for _ in range(2)] == [200, 429]
