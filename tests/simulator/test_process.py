"""python -m simulator as a subprocess: one JSON line on stdout, clean stop on SIGTERM."""
from __future__ import annotations

from simulator.testing import start_simulator_process

from conftest import PartnerCenterClient, app_only_token


def test_subprocess_json_line_and_shutdown():
    sim = start_simulator_process(seed=7, customers=3)
    try:
        assert sim.partner_center_url == sim.authority_host == sim.graph_url == sim.key_vault_url
        assert sim.control_url == f"{sim.partner_center_url}/_sim" and sim.port > 0
        assert sim.integration_user.startswith("integration@")
        assert sim.control.health()["customers"] == 3
        client = PartnerCenterClient(sim, app_only_token(sim))
        assert client.get("/v1/customers").json()["totalCount"] == 3
    finally:
        sim.stop()
    assert sim.process.returncode == 0


def test_same_seed_same_world():
    from simulator.testing import start_simulator
    with start_simulator(seed=42, customers=4) as a, start_simulator(seed=42, customers=4) as b:
        assert a.tenant_id == b.tenant_id and a.client_id == b.client_id
        assert [c["id"] for c in a.control.customers()] == [c["id"] for c in b.control.customers()]
        assert [i["totalCharges"] for i in a.control.invoices()] == [i["totalCharges"] for i in b.control.invoices()]
