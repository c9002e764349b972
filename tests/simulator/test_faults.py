"""Fault injection applies to Partner Center and Graph only, unless configured otherwise."""
from __future__ import annotations

import time

import pytest
import requests

from conftest import PartnerCenterClient, app_only_token, msal_app


def test_server_errors_and_injected_429(fresh_sim):
    client = PartnerCenterClient(fresh_sim, app_only_token(fresh_sim))
    fresh_sim.control.set_faults(fault_5xx=1.0)
    busy = client.get("/v1/customers")
    assert busy.status_code == 503 and "code" in busy.json()
    assert "access_token" in msal_app(fresh_sim).acquire_token_for_client(
        ["https://api.partnercenter.microsoft.com/.default"])   # Entra is not affected
    fresh_sim.control.set_faults(fault_5xx=0.0, fault_429=1.0)
    throttled = client.get("/v1/customers")
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers


def test_connection_reset_and_truncated_body(fresh_sim):
    client = PartnerCenterClient(fresh_sim, app_only_token(fresh_sim))
    fresh_sim.control.set_faults(fault_reset=1.0)
    with pytest.raises(requests.ConnectionError):
        client.get("/v1/customers")
    fresh_sim.control.set_faults(fault_reset=0.0, fault_truncate=1.0)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        client.get("/v1/customers")
    fresh_sim.control.set_faults(fault_truncate=0.0)
    assert client.get("/v1/customers").status_code == 200
    counters = fresh_sim.control.calls()["GET /v1/customers"]
    assert counters["faulted"] == 2


def test_latency_and_bad_knobs(fresh_sim):
    client = PartnerCenterClient(fresh_sim, app_only_token(fresh_sim))
    fresh_sim.control.set_faults(latency_ms=150)
    started = time.monotonic()
    client.get("/v1/customers")
    assert time.monotonic() - started >= 0.14
    response = fresh_sim.session().put(f"{fresh_sim.control_url}/faults", json={"fault_5xx": 3})
    assert response.status_code == 400
    response = fresh_sim.session().put(f"{fresh_sim.control_url}/faults", json={"no_such_knob": 1})
    assert response.status_code == 400
