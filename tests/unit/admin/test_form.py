"""The provider form follows the model: each field's input comes from its dataclass type."""
import enum
import typing
from dataclasses import MISSING, field, fields, make_dataclass

import pytest

from admin import form
from admin.form import Kind, provider_form_fields
from shared.providers import EDITABLE_FIELDS, REQUIRED_FIELDS, ProviderConnection


def test_every_editable_field_once_in_the_models_order():
    fields = provider_form_fields()
    assert [f.key for f in fields] == list(EDITABLE_FIELDS)
    assert {f.key for f in fields if f.required} == set(REQUIRED_FIELDS)
    by_key = {f.key: f for f in fields}
    # issue 10's enums became selects without a change to the form
    assert by_key["costManagement"].kind is Kind.SELECT and by_key["costManagement"].default == "do not update"
    assert ("from the provider invoice", "from the provider invoice") in by_key["costManagement"].choices
    assert by_key["azureSpecialization"].kind is Kind.SELECT and by_key["azureSpecialization"].default == "none"
    assert by_key["azureSpecializations"].kind is Kind.MULTI
    assert ("kubernetes", "Kubernetes on Microsoft Azure") in by_key["azureSpecializations"].choices
    assert by_key["billingStartDay"].kind is Kind.NUMBER
    assert by_key["resellerRelationshipUrl"].kind is Kind.URL and by_key["resellerRelationshipUrl"].recommended
    assert by_key["countryCode"].kind is Kind.TEXT and ("US", "US") in by_key["countryCode"].choices
    assert all(f.hint and f.label for f in fields)


class CostMode(enum.StrEnum):
    OFF = "off"
    BILLED = "billed"
    UNBILLED = "unbilled"


class Specialization(enum.StrEnum):
    KUBERNETES = "kubernetes"
    SAP = "sap-on-azure"


def future_model():
    """The model as another branch may change it: enums where there are a bool and strings."""
    hints = typing.get_type_hints(ProviderConnection)
    replaced = {"cost_management": (CostMode, CostMode.OFF),
                "azure_specializations": (tuple[Specialization, ...], ())}
    specs = []
    for f in fields(ProviderConnection):
        kind, default = replaced.get(f.name, (hints[f.name], f.default))
        specs.append((f.name, kind) if default is MISSING else (f.name, kind, field(default=default)))
    return make_dataclass("FutureProvider", specs, frozen=True)


def test_a_field_whose_type_becomes_an_enum_becomes_a_select(monkeypatch):
    monkeypatch.setattr(form, "ProviderConnection", future_model())
    by_key = {f.key: f for f in provider_form_fields()}
    cost = by_key["costManagement"]
    assert cost.kind is Kind.SELECT and [v for v, _ in cost.choices] == ["off", "billed", "unbilled"]
    assert cost.default == "off"
    specializations = by_key["azureSpecializations"]
    assert specializations.kind is Kind.MULTI and [v for v, _ in specializations.choices] == ["kubernetes", "sap-on-azure"]


@pytest.mark.parametrize("annotation,kind", [(bool, Kind.CHECKBOX), (int | None, Kind.NUMBER), (str, Kind.TEXT),
                                             (tuple[str, ...], Kind.MULTI), (CostMode | None, Kind.SELECT)])
def test_kinds_by_type(annotation, kind):
    assert form._kind("someField", annotation)[0] is kind
