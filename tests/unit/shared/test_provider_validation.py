from decimal import Decimal

import pytest

from shared.errors import ValidationFailed
from shared.providers import Tolerance, parse_provider_fields, validate_provider_id

TENANT = "3b33e682-00c3-41ee-9dd2-a548adf56438"
VALID = {"name": "Microsoft US Partner Center", "countryCode": "US", "currencyCode": "USD", "tenantId": TENANT}


def problems(body):
    with pytest.raises(ValidationFailed) as err:
        parse_provider_fields(body)
    return err.value.problems


def test_minimal_valid_provider_gets_defaults_free_fields_only():
    values = parse_provider_fields(VALID)
    assert values == {"name": "Microsoft US Partner Center", "country_code": "US", "currency_code": "USD", "tenant_id": TENANT}


def test_full_provider_normalises_values():
    values = parse_provider_fields(VALID | {
        "countryCode": "gb", "currencyCode": "gbp", "billingStartDay": "15",
        "resellerRelationshipUrl": "https://admin.microsoft.com/x", "delegatedAdminAuthorizeUrl": "https://admin.microsoft.com/y",
        "costManagement": True, "usageMismatchTolerance": "0.5%", "azureSpecializations": ["kubernetes", "analytics"],
        "enabled": "false",
    })
    assert values["country_code"] == "GB" and values["currency_code"] == "GBP"
    assert values["billing_start_day"] == 15
    assert values["usage_mismatch_tolerance"] == "0.5%"
    assert values["azure_specializations"] == ("kubernetes", "analytics")
    assert values["enabled"] is False and values["cost_management"] == "from the provider invoice"  # true migrates


def test_pascal_and_snake_case_field_names_are_accepted():
    values = parse_provider_fields({"Name": "x", "COUNTRYCODE": "US", "currency_code": "USD", "TenantId": TENANT})
    assert values["country_code"] == "US"


def test_required_fields_each_get_a_message():
    assert set(problems({})) == {"name", "countryCode", "currencyCode", "tenantId"}
    assert problems(VALID | {"name": None}) == {"name": "is required"}


@pytest.mark.parametrize("field,value", [
    ("countryCode", "XX"), ("countryCode", "USA"), ("countryCode", 1),
    ("currencyCode", "DOLLAR"), ("currencyCode", "ABC"),
    ("tenantId", "not-a-guid"),
    ("billingStartDay", 0), ("billingStartDay", 32), ("billingStartDay", "1.5"), ("billingStartDay", True),
    ("resellerRelationshipUrl", "http://insecure.example"), ("delegatedAdminAuthorizeUrl", "ftp://x"),
    ("costManagement", "yes"), ("usageMismatchTolerance", "-1"), ("usageMismatchTolerance", "abc"),
    ("usageMismatchTolerance", "NaN"), ("azureSpecializations", ["quantum"]), ("azureSpecializations", "kubernetes,nope"),
    ("enabled", 1), ("name", ""), ("name", "x" * 300),
])
def test_bad_values_get_one_message_on_their_own_field(field, value):
    assert list(problems(VALID | {field: value})) == [field]


def test_unknown_fields_are_refused_and_several_problems_reported_together():
    found = problems(VALID | {"colour": "blue", "countryCode": "ZZ"})
    assert found == {"colour": "unknown field", "countryCode": found["countryCode"]}


def test_body_must_be_an_object():
    assert problems(["not", "an", "object"]) == {"body": "must be a JSON object"}


@pytest.mark.parametrize("bad", ["", "UPPER", "-lead", "trail-", "has space", "a" * 64, "x/y"])
def test_provider_ids_are_slugs(bad):
    with pytest.raises(ValidationFailed):
        validate_provider_id(bad)


def test_tolerance_absolute_and_percent():
    assert Tolerance.parse("5").allowed_difference(Decimal("1000")) == Decimal("5")
    assert Tolerance.parse("0.5%").allowed_difference(Decimal("-1000")) == Decimal("5.0")
