"""admin/security.py: the principal header, the modes and the same-origin check, without a host."""
import base64
import json

import pytest

from admin.security import Denied, Refusal, authenticate, check_same_origin, parse_principal
from shared.settings import AdminAuth, Settings, SettingsError


def encode(body) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()


def test_roles_from_either_claim_type_and_the_declared_role_type():
    principal = parse_principal(encode({"role_typ": "custom/role", "claims": [
        {"typ": "roles", "val": "a"},
        {"typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "val": "b"},
        {"typ": "custom/role", "val": "c"}, {"typ": "groups", "val": "d"},
        {"typ": "preferred_username", "val": "ann@contoso.test"}]}))
    assert principal.roles == {"a", "b", "c"} and principal.name == "ann@contoso.test"


@pytest.mark.parametrize("mode,headers,reason", [
    (AdminAuth.FUNCTION_KEY, {"X-MS-CLIENT-PRINCIPAL": encode({"claims": []})}, Refusal.FORGED_PRINCIPAL),
    (AdminAuth.FUNCTION_KEY, {"x-ms-client-principal-id": "1"}, Refusal.FORGED_PRINCIPAL),
    (AdminAuth.APP_SERVICE, {}, Refusal.NOT_SIGNED_IN),
    (AdminAuth.APP_SERVICE, {"X-MS-CLIENT-PRINCIPAL": "%%%"}, Refusal.BAD_PRINCIPAL),
    (AdminAuth.APP_SERVICE, {"X-MS-CLIENT-PRINCIPAL": encode({"claims": [{"typ": "roles", "val": "x"}]})},
     Refusal.MISSING_ROLE),
])
def test_refusals(mode, headers, reason):
    with pytest.raises(Denied) as refused:
        authenticate(headers, mode, "pcsync.Admin")
    assert refused.value.reason is reason


def test_function_key_mode_leaves_the_key_to_the_host():
    assert authenticate({"x-functions-key": "k"}, AdminAuth.FUNCTION_KEY, "pcsync.Admin") is None


@pytest.mark.parametrize("method,headers,allowed", [
    ("GET", {"X-PCSYNC-Admin": "1"}, True),
    ("GET", {}, False),
    ("POST", {"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "same-origin"}, True),
    ("POST", {"X-PCSYNC-Admin": "1", "Origin": "https://app.example"}, True),
    ("POST", {"X-PCSYNC-Admin": "1", "Origin": "https://app.example:444"}, False),
    ("POST", {"X-PCSYNC-Admin": "1", "Origin": "null"}, False),
    ("PUT", {"X-PCSYNC-Admin": "1", "Sec-Fetch-Site": "cross-site", "Origin": "https://app.example"}, False),
])
def test_same_origin(method, headers, allowed):
    try:
        check_same_origin(method, headers, "https://app.example/api/admin/api/providers/x")
    except Denied:
        assert not allowed
    else:
        assert allowed


def test_the_settings():
    base = {"PCSYNC_STORAGE": "UseDevelopmentStorage=true"}
    settings = Settings.from_environment(base)
    assert settings.admin_auth is AdminAuth.FUNCTION_KEY and settings.admin_role == "pcsync.Admin"
    settings = Settings.from_environment(base | {"PCSYNC_ADMIN_AUTH": "App_Service", "PCSYNC_ADMIN_ROLE": "Ops"})
    assert settings.admin_auth is AdminAuth.APP_SERVICE and settings.admin_role == "Ops"
    with pytest.raises(SettingsError, match="PCSYNC_ADMIN_AUTH"):
        Settings.from_environment(base | {"PCSYNC_ADMIN_AUTH": "easyauth"})
