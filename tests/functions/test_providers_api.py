"""The provider HTTP API called through the registered functions with real HttpRequest objects."""
import json

import azure.functions as func
import pytest

TENANT = "3b33e682-00c3-41ee-9dd2-a548adf56438"
VALID = {"name": "Microsoft US Partner Center", "countryCode": "US", "currencyCode": "USD", "tenantId": TENANT,
         "billingStartDay": 1, "usageMismatchTolerance": "0.5%", "azureSpecializations": ["kubernetes"]}


@pytest.fixture
def call(registered_functions, runtime):
    def invoke(method, provider_id=None, body=b"", params=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        name = "providers_list" if provider_id is None else "provider_item"
        route = "providers" if provider_id is None else f"providers/{provider_id}"
        request = func.HttpRequest(method=method, url=f"http://localhost/api/{route}", body=body,
                                   params=params or {}, route_params={} if provider_id is None else {"id": provider_id})
        response = registered_functions[name].get_user_function()(request)
        return response.status_code, json.loads(response.get_body() or b"null")
    return invoke


def test_put_creates_then_updates_and_get_lists(call):
    status, created = call("PUT", "contoso-us", VALID)
    assert status == 201 and created["id"] == "contoso-us" and created["consent"]["status"] == "none"
    status, updated = call("PUT", "contoso-us", VALID | {"name": "Renamed"})
    assert status == 200 and updated["name"] == "Renamed" and updated["createdAt"] == created["createdAt"]
    assert call("GET", "contoso-us")[1]["azureSpecializations"] == ["kubernetes"]
    status, listing = call("GET")
    assert status == 200 and [p["id"] for p in listing["providers"]] == ["contoso-us"]


def test_put_replaces_optional_fields_that_are_left_out(call):
    call("PUT", "p1", VALID)
    status, body = call("PUT", "p1", {k: VALID[k] for k in ("name", "countryCode", "currencyCode", "tenantId")})
    assert status == 200 and body["billingStartDay"] is None and body["azureSpecializations"] == []


def test_validation_errors_name_each_bad_field(call):
    status, body = call("PUT", "p1", VALID | {"countryCode": "ZZ", "tenantId": "nope", "extra": 1})
    assert status == 400
    assert set(body["problems"]) == {"countryCode", "tenantId", "extra"}
    assert call("GET", "p1")[0] == 404  # nothing stored


@pytest.mark.parametrize("body,status", [(b"{not json", 400), (b"", 400), (b"\xff\xfe", 400),
                                         (b"[1, 2]", 400), (b"x" * 70_000, 413)])
def test_bad_bodies_get_a_clear_4xx(call, body, status):
    code, payload = call("PUT", "p1", body)
    assert code == status and "error" in payload


def test_bad_input_never_damages_a_stored_provider(call):
    call("PUT", "p1", VALID)
    call("PUT", "p1", VALID | {"currencyCode": "XXX1"})
    call("PUT", "p1", b"{broken")
    assert call("GET", "p1")[1]["currencyCode"] == "USD"


def test_unknown_or_malformed_ids(call):
    assert call("GET", "missing")[0] == 404
    assert call("DELETE", "missing")[0] == 404
    assert call("GET", "Bad_Id")[0] == 400


def test_delete_disables_and_keeps_data_unless_purged(call, runtime):
    call("PUT", "p1", VALID)
    customers = runtime.tables.table("customers")
    customers.upsert_entities([{"PartitionKey": "p1", "RowKey": "c1"}, {"PartitionKey": "p10", "RowKey": "c2"}])
    runtime.tables.table("subscriptions").upsert_entities([{"PartitionKey": "p1|c1", "RowKey": "s1"}])
    status, body = call("DELETE", "p1")
    assert status == 200 and body == {"id": "p1", "enabled": False, "purged": False}
    assert call("GET", "p1")[1]["enabled"] is False
    assert len(list(customers.list_entities())) == 2
    status, body = call("DELETE", "p1", params={"purge": "true"})
    assert status == 200 and body["rowsDeleted"]["customers"] == 1 and body["rowsDeleted"]["subscriptions"] == 1
    assert [r["PartitionKey"] for r in customers.list_entities()] == ["p10"]  # another provider's rows stay
    assert call("GET", "p1")[0] == 404
    # no PCSYNC_KEY_VAULT_URL: the purge still works and says why no refresh token was deleted
    assert body["refreshTokenDeleted"] is False and "PCSYNC_KEY_VAULT_URL" in body["refreshTokenReason"]


def _seed_provider_rows(runtime, provider_id):
    runtime.tables.table("customers").upsert_entities([{"PartitionKey": provider_id, "RowKey": "c1"}])
    runtime.tables.table("subscriptions").upsert_entities([{"PartitionKey": f"{provider_id}|c1", "RowKey": "s1"}])
    runtime.tables.table("consentflows").upsert_entity(
        {"PartitionKey": "flow", "RowKey": f"state-{provider_id}", "provider_id": provider_id})


def _provider_rows(runtime, provider_id):
    return {name: [r["RowKey"] for r in runtime.tables.table(name).list_entities()
                   if r["PartitionKey"] in (provider_id, f"{provider_id}|c1")
                   or r.get("provider_id") == provider_id]
            for name in ("customers", "subscriptions", "consentflows")}


class FailingSecrets:
    """A Key Vault that fails, recording what the tables held when the purge asked it to delete."""

    def __init__(self, runtime, status):
        self.runtime, self.status, self.rows_seen = runtime, status, None

    def delete_secret(self, name):
        from shared.secrets import SecretStoreError

        self.rows_seen = _provider_rows(self.runtime, "p1")
        raise SecretStoreError(f"Key Vault could not be reached to delete secret {name!r} (ServiceRequestError); "
                               "try again later", status=self.status)


@pytest.mark.parametrize("status", [502, 503])
def test_a_key_vault_failure_stops_the_purge_before_any_row_is_deleted(call, runtime, monkeypatch, status):
    from admin.providers import ProviderAdmin

    call("PUT", "p1", VALID)
    _seed_provider_rows(runtime, "p1")
    before = _provider_rows(runtime, "p1")
    secrets = FailingSecrets(runtime, status)
    runtime.provider_admin = ProviderAdmin(tables=runtime.tables, providers=runtime.providers,
                                           refresh_tokens=lambda: secrets)
    code, body = call("DELETE", "p1", params={"purge": "true"})
    assert code == status and set(body) == {"error"}
    assert "stopped before deleting anything" in body["error"] and "Traceback" not in body["error"]
    assert secrets.rows_seen == before == {"customers": ["c1"], "subscriptions": ["s1"], "consentflows": ["state-p1"]}
    assert _provider_rows(runtime, "p1") == before  # the secret is deleted first, so nothing else went
    assert call("GET", "p1")[1]["enabled"] is False  # kept, disabled: the purge can be run again


def test_purge_deletes_only_that_providers_consent_flows(call, runtime):
    from auth import consent

    # the column names admin uses to find flows are the ones auth writes
    from admin import providers as providers_service
    assert providers_service.CONSENT_FLOWS_TABLE == consent.CONSENT_FLOWS_TABLE
    assert providers_service.CONSENT_FLOW_PARTITION == consent.FLOW_PARTITION
    for provider_id in ("p1", "p2"):
        call("PUT", provider_id, VALID)
        _seed_provider_rows(runtime, provider_id)
    code, body = call("DELETE", "p1", params={"purge": "true"})
    assert code == 200 and body["consentFlowsDeleted"] == 1
    assert _provider_rows(runtime, "p1") == {"customers": [], "subscriptions": [], "consentflows": []}
    assert _provider_rows(runtime, "p2")["consentflows"] == ["state-p2"]


def test_purge_deletes_the_refresh_token_against_the_simulator(sim_runtime, simulator, registered_functions,
                                                               caplog):
    import logging
    import uuid

    from devservices import register_and_consent

    caplog.set_level(logging.DEBUG)
    gone, kept = f"purge-{uuid.uuid4().hex[:8]}", f"keep-{uuid.uuid4().hex[:8]}"
    for provider_id in (gone, kept):
        assert register_and_consent(sim_runtime, simulator, provider_id).succeeded
        _seed_provider_rows(sim_runtime, provider_id)
    sim_runtime.consent.create_link(gone)  # a pending flow too
    provider = sim_runtime.providers.get_provider(gone)
    secret_name = provider.refresh_token_secret_name
    refresh_token = sim_runtime.secrets.find_secret(secret_name)
    kept_token = sim_runtime.secrets.find_secret(sim_runtime.providers.get_provider(kept).refresh_token_secret_name)
    assert refresh_token and kept_token
    sim_runtime.tokens.for_provider(provider)  # cached in this process

    request = func.HttpRequest(method="DELETE", url=f"http://localhost/api/providers/{gone}", body=b"",
                               params={"purge": "true"}, route_params={"id": gone})
    response = registered_functions["provider_item"].get_user_function()(request)
    text = response.get_body().decode()
    body = json.loads(text)
    assert response.status_code == 200, text
    assert body["purged"] is True and body["refreshTokenDeleted"] is True
    assert body["refreshTokenSecret"] == secret_name and body["refreshTokenRecoverableUntil"]
    assert body["rowsDeleted"]["customers"] == 1 and body["consentFlowsDeleted"] == 3  # spent, extra, seeded
    assert sim_runtime.secrets.find_secret(secret_name) is None
    assert sim_runtime.providers.find_provider(gone) is None
    assert _provider_rows(sim_runtime, gone) == {"customers": [], "subscriptions": [], "consentflows": []}
    assert gone not in sim_runtime.tokens
    # the other provider is untouched
    assert sim_runtime.secrets.find_secret(sim_runtime.providers.get_provider(kept).refresh_token_secret_name) \
        == kept_token
    assert _provider_rows(sim_runtime, kept)["customers"] == ["c1"]
    assert refresh_token not in text and refresh_token not in caplog.text

    # purging again: the provider is gone (404)
    assert registered_functions["provider_item"].get_user_function()(request).status_code == 404
    # the same id can be added and consented again: the new provider gets a new secret name
    # (Key Vault keeps the deleted one reserved while recoverable) and the old token stays deleted
    assert register_and_consent(sim_runtime, simulator, gone).succeeded
    new_name = sim_runtime.providers.get_provider(gone).refresh_token_secret_name
    assert new_name != secret_name and sim_runtime.secrets.find_secret(secret_name) is None
    renewed = sim_runtime.secrets.find_secret(new_name)
    assert renewed and renewed != refresh_token
    # a late write under the purged name (e.g. a rotation racing the purge) is refused, not recovered
    from shared.secrets import SecretStoreError
    with pytest.raises(SecretStoreError, match="deleted"):
        sim_runtime.secrets.set_secret(secret_name, "late-rotated-token-value")
    assert sim_runtime.secrets.find_secret(secret_name) is None


def test_purge_of_a_provider_that_never_consented(sim_runtime, registered_functions):
    import uuid

    provider_id = f"never-{uuid.uuid4().hex[:8]}"
    sim_runtime.providers.put_provider(provider_id, VALID)
    request = func.HttpRequest(method="DELETE", url=f"http://localhost/api/providers/{provider_id}", body=b"",
                               params={"purge": "true"}, route_params={"id": provider_id})
    response = registered_functions["provider_item"].get_user_function()(request)
    body = json.loads(response.get_body())
    assert response.status_code == 200 and body["purged"] is True
    assert body["refreshTokenDeleted"] is False and "does not exist" in body["refreshTokenReason"]
