"""simulator.persistence: a simulator stopped and started on the same folder keeps its keys and
its state (the local playground's restart)."""
from __future__ import annotations

from simulator.config import SimulatorConfig
from simulator.persistence import STATE_FILE, PersistentSimulator
from simulator.testing import RunningSimulator


def _start(directory) -> tuple[PersistentSimulator, RunningSimulator]:
    persistent = PersistentSimulator(str(directory), SimulatorConfig(customers=3)).start()
    return persistent, RunningSimulator(**persistent.info())


def test_a_restarted_simulator_keeps_its_keys_identities_and_changes(tmp_path):
    first, sim = _start(tmp_path)
    try:
        assert not first.restored
        added = sim.control.add_customer(companyName="Kept Ltd")
        sim.control.set_integration_user(roles=["SalesAgent"])
        sim.control.advance_clock(days=3)
        before = {"info": first.info(), "clock": sim.control.now(), "customers": sim.control.customers()}
        ca = open(first.info()["ca_bundle"], "rb").read()
    finally:
        sim.control.close()
        first.stop()
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o077 == 0   # it holds secrets and refresh tokens

    second, again = _start(tmp_path)
    try:
        assert second.restored
        info = second.info()
        assert {k: info[k] for k in ("tenant_id", "client_id", "client_secret", "integration_user", "ca_bundle")} == \
               {k: before["info"][k] for k in ("tenant_id", "client_id", "client_secret", "integration_user",
                                                "ca_bundle")}
        assert open(info["ca_bundle"], "rb").read() == ca   # the settings' CA bundle still trusts it
        assert again.control.health()["status"] == "ok"     # served with the kept certificate
        assert added["id"] in {c["id"] for c in again.control.customers()}
        assert again.control.customers() == before["customers"]
        assert again.control.integration_user()["roles"] == ["SalesAgent"]
        assert again.control.now() >= before["clock"]        # the moved clock stays moved
    finally:
        again.control.close()
        second.stop()


def test_a_fresh_folder_gets_new_key_material_kept_owner_only(tmp_path):
    persistent = PersistentSimulator(str(tmp_path / "sim"), SimulatorConfig(customers=1))
    try:
        keys = sorted(p.name for p in (tmp_path / "sim").iterdir())
        assert {"simulator-ca.pem", "simulator-key.pem", "jwt-key.pem", "webhook-key.pem", "webhook-cert.pem"} <= set(keys)
        for name in ("simulator-key.pem", "jwt-key.pem", "webhook-key.pem"):
            assert (tmp_path / "sim" / name).stat().st_mode & 0o077 == 0
    finally:
        persistent.start().stop()
