"""The published JSON Schema of the write-back request (sync/writeback/request.schema.json)
agrees with the validation in sync/writeback/request.py: same operations and fields, and the
bodies one accepts the other accepts."""
from __future__ import annotations

import datetime as dt
import json
import pathlib

import jsonschema
import pytest

from shared.errors import ValidationFailed
from sync.writeback import request as request_module
from sync.writeback.request import OPERATIONS, parse_request

SCHEMA_PATH = pathlib.Path(request_module.__file__).with_name("request.schema.json")
SCHEMA = json.loads(SCHEMA_PATH.read_text())
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
BASE = {"idempotencyKey": "crm-4711", "provider": "microsoft-us", "customer": "c1"}

VALID = [
    {"operation": "subscription.quantity", "subscription": "s1", "quantity": 12},
    {"operation": "subscription.quantity", "subscription": "s1", "quantity": 4, "atRenewal": True},
    {"operation": "subscription.suspend", "subscription": "s1", "effectiveDate": "2027-01-01"},
    {"operation": "subscription.autoRenew", "subscription": "s1", "autoRenewEnabled": False, "action": "cancel"},
    {"operation": "subscription.autoRenew", "subscription": "s1", "autoRenewEnabled": True},
    {"operation": "subscription.endOfTerm", "subscription": "s1", "action": "renew",
     "nextTerm": {"quantity": 8, "termDuration": "P1Y", "billingCycle": "monthly"}},
    {"operation": "subscription.endOfTerm", "subscription": "s1", "action": "extendedServiceTerm"},
    {"operation": "subscription.friendlyName", "subscription": "s1", "friendlyName": "Sales seats"},
    {"operation": "agreement.confirm", "contact": {"firstName": "Ada", "lastName": "L", "email": "a@b.example"}},
]
INVALID = [
    {"operation": "subscription.autoRenew", "subscription": "s1", "autoRenewEnabled": False},  # the EST trap
    {"operation": "subscription.endOfTerm", "subscription": "s1", "action": "cancel", "nextTerm": {"quantity": 2}},
    {"operation": "subscription.endOfTerm", "subscription": "s1"},
    {"operation": "subscription.quantity", "subscription": "s1", "quantity": 2, "atRenewal": True,
     "effectiveDate": "2027-01-01"},
    {"operation": "subscription.suspend", "subscription": "s1", "quantity": 2},
    {"operation": "subscription.friendlyName", "subscription": "s1"},
    {"operation": "subscription.quantity", "subscription": "s1", "quantity": 0},
    {"operation": "agreement.confirm", "contact": {"firstName": "Ada"}},
    {"operation": "subscription.sell", "subscription": "s1"},
    {"operation": "subscription.cancel", "subscription": "s1", "typo": 1},
]


def test_the_schema_is_a_valid_json_schema_naming_every_operation_and_field():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["operation"]["enum"] == list(OPERATIONS)
    fields = set(request_module._FIELDS.values())
    assert set(SCHEMA["properties"]) == fields


@pytest.mark.parametrize("body", VALID)
def test_bodies_the_service_accepts_the_schema_accepts(body):
    parse_request({**BASE, **body}, now=NOW)
    jsonschema.validate({**BASE, **body}, SCHEMA)


@pytest.mark.parametrize("body", INVALID)
def test_bodies_the_service_refuses_the_schema_refuses(body):
    with pytest.raises(ValidationFailed):
        parse_request({**BASE, **body}, now=NOW)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**BASE, **body}, SCHEMA)
