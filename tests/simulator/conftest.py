"""Fixtures for the simulator's own tests: one shared in-process simulator per session (for
read-only checks) and a fresh one per test where a test changes global state (clock, roles,
faults, rate limits). Starting one takes ~0.1 s."""
from __future__ import annotations

import json
import warnings

import msal
import pytest

from simulator.testing import start_simulator

from tests.support import SAMPLES_DIR as SAMPLES
PC_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
REDIRECT_URI = "http://localhost:7071/api/consent/callback"


def load_sample(name: str):
    return json.loads((SAMPLES / name).read_text())


def assert_same_shape(sample, actual, path: str = "$", ignore: tuple[str, ...] = ()) -> None:
    """Every key of the sample exists in the actual document with a value of the same JSON
    type (int and float count as one type; null in the sample matches anything). Lists are
    compared through their first element. The simulator may add fields."""
    if path in ignore or sample is None:
        return
    if isinstance(sample, bool) or isinstance(actual, bool):
        assert isinstance(sample, bool) and isinstance(actual, bool), f"{path}: {sample!r} vs {actual!r}"
        return
    if isinstance(sample, (int, float)):
        assert isinstance(actual, (int, float)), f"{path}: expected a number, got {actual!r}"
        return
    if isinstance(sample, str):
        assert isinstance(actual, str), f"{path}: expected a string, got {actual!r}"
        return
    if isinstance(sample, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {type(actual).__name__}"
        for key, value in sample.items():
            assert key in actual, f"{path}: missing key {key!r} (has {sorted(actual)})"
            assert_same_shape(value, actual[key], f"{path}.{key}", ignore)
        return
    if isinstance(sample, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {type(actual).__name__}"
        if sample:  # an empty answer proves nothing about the items' shape
            assert actual, f"{path}: expected a non-empty list like the sample, got []"
            assert_same_shape(sample[0], actual[0], f"{path}[0]", ignore)
        return
    raise AssertionError(f"{path}: unexpected sample type {type(sample).__name__}")


@pytest.fixture(scope="session")
def sim():
    with start_simulator() as running:
        yield running


@pytest.fixture
def fresh_sim():
    with start_simulator(customers=6, subscriptions_per_customer=3, invoices=3, line_items_per_invoice=30) as running:
        yield running


def msal_app(sim) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sim.client_id, client_credential=sim.client_secret, authority=f"{sim.authority_host}/{sim.tenant_id}",
        instance_discovery=False, http_client=sim.session())


def consent(sim, mfa: bool = True, scopes=(PC_SCOPE,)) -> dict:
    """Run the full msal auth-code flow (PKCE, state, nonce) through the control shortcut."""
    app = msal_app(sim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # msal recommends form_post; query is fine here
        flow = app.initiate_auth_code_flow(list(scopes), redirect_uri=REDIRECT_URI)
    redirect = sim.control.sign_in(flow["auth_uri"], mfa=mfa)
    from urllib.parse import parse_qsl, urlsplit
    result = app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(redirect).query)))
    assert "access_token" in result, result
    return result


def app_only_token(sim, resource: str = "https://api.partnercenter.microsoft.com") -> str:
    result = msal_app(sim).acquire_token_for_client([f"{resource}/.default"])
    assert "access_token" in result, result
    return result["access_token"]


class PartnerCenterClient:
    """Just enough of a client for tests: base URL + bearer + CA trust."""

    def __init__(self, sim, token: str):
        self.sim, self.http = sim, sim.session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kw):
        return self.http.get(self.sim.partner_center_url + path, timeout=60, **kw)

    def patch(self, path: str, **kw):
        return self.http.patch(self.sim.partner_center_url + path, timeout=60, **kw)

    def post(self, path: str, **kw):
        return self.http.post(self.sim.partner_center_url + path, timeout=60, **kw)


@pytest.fixture(scope="session")
def user_pc(sim) -> PartnerCenterClient:
    return PartnerCenterClient(sim, consent(sim)["access_token"])


@pytest.fixture(scope="session")
def app_pc(sim) -> PartnerCenterClient:
    return PartnerCenterClient(sim, app_only_token(sim))
