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
