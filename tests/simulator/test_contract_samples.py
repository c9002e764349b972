"""Contract tests: simulator responses have the field names, types and envelopes of
Microsoft's documented samples (../shared/partner-center-samples)."""
from __future__ import annotations

import pytest

from conftest import assert_same_shape, load_sample


def _first_g_and_d(sim):
    invoices = sim.control.invoices()
    g = next(i for i in invoices if i["id"].startswith("G"))
    d = next(i for i in invoices if i["id"].startswith("D"))
    return g["id"], d["id"]


def test_organization_profile(user_pc):
    response = user_pc.get("/v1/profiles/organization")
    assert response.status_code == 200
    assert_same_shape(load_sample("organization-profile.json"), response.json())


def test_legal_business_profile_app_only(app_pc):
    response = app_pc.get("/v1/profiles/legalbusiness?vettingVersion=Current")
    assert response.status_code == 200
    assert_same_shape(load_sample("legal-business-profile.json"), response.json())


def test_customers_list(app_pc):
    body = app_pc.get("/v1/customers?size=40").json()
    assert_same_shape(load_sample("customers-list.json"), body)
    assert body["attributes"]["objectType"] == "Collection"


def test_subscriptions_list_and_legacy_shape(sim, app_pc):
    customer_id = next(s["customerId"] for s in sim.control.subscriptions() if not s["isNce"])
    body = app_pc.get(f"/v1/customers/{customer_id}/subscriptions").json()
    legacy = [item for item in body["items"] if ":" not in item["offerId"]]
    assert legacy and body["totalCount"] == len(body["items"])
    assert_same_shape(load_sample("subscriptions-list.json"), {**body, "items": legacy})
    single = app_pc.get(f"/v1/customers/{customer_id}/subscriptions/{legacy[0]['id']}").json()
    assert_same_shape(load_sample("subscription-legacy-azure.json"), single)


def test_nce_subscription_fields(sim, app_pc):
    nce = next(s for s in sim.control.subscriptions() if s["isNce"])
    body = app_pc.get(f"/v1/customers/{nce['customerId']}/subscriptions/{nce['id']}").json()
    product, sku, availability = body["offerId"].split(":")
    assert product and sku and availability
    for key in ("termDuration", "cancellationAllowedUntilDate", "refundOptions", "productType", "billingCycle"):
        assert key in body


def test_agreement_metadata_and_lists(sim, user_pc):
    assert_same_shape(load_sample("agreement-metadata-mca.json"),
                      user_pc.get("/v1/agreements?agreementType=MicrosoftCustomerAgreement").json())
    customer_id = next(a["customerId"] for a in sim.control.agreements() if a["type"] == "MicrosoftCustomerAgreement")
    listed = user_pc.get(f"/v1/customers/{customer_id}/agreements?agreementType=MicrosoftCustomerAgreement").json()
    assert_same_shape(load_sample("customer-agreements-list.json"), listed)


def test_invoices_list_and_invoice(sim, user_pc):
    body = user_pc.get("/v1/invoices?size=2&offset=0").json()
    assert_same_shape(load_sample("invoices-list.json"), body,
                      ignore=("$.items[0].amendments", "$.items[0].taxReceipts"))
    g_id, _ = _first_g_and_d(sim)
    assert_same_shape(load_sample("invoice.json"), user_pc.get(f"/v1/invoices/{g_id}").json(),
                      ignore=("$.taxReceipts",))


@pytest.mark.parametrize("sample, provider, item_type, kind", [
    ("invoice-lineitems-office-billing-legacy.json", "office", "billinglineitems", "D"),
    ("invoice-lineitems-azure-billing-legacy.json", "azure", "billinglineitems", "D"),
    ("invoice-lineitems-azure-usage-legacy.json", "azure", "usagelineitems", "D"),
    ("invoice-lineitems-onetime-billing.json", "onetime", "billinglineitems", "G"),
    ("invoice-lineitems-daily-rated-usage-billed.json", "onetime", "usagelineitems", "G"),
])
def test_invoice_line_items(sim, app_pc, sample, provider, item_type, kind):
    g_id, d_id = _first_g_and_d(sim)
    invoice_id = g_id if kind == "G" else d_id
    body = app_pc.get(f"/v1/invoices/{invoice_id}/lineitems?provider={provider}&invoicelineitemtype={item_type}"
                      f"&currencycode=usd&period=previous&size=2").json()
    assert_same_shape(load_sample(sample), body)


def test_unbilled_recon_line_items(app_pc):
    body = app_pc.get("/v1/invoices/unbilled/lineitems?provider=onetime&invoicelineitemtype=billinglineitems"
                      "&currencycode=usd&period=previous&size=2").json()
    assert_same_shape(load_sample("invoice-lineitems-unbilled-recon.json"), body)


def test_relationship_request(user_pc, sim):
    body = user_pc.get("/v1/customers/relationshiprequests").json()
    assert_same_shape(load_sample("reseller-relationship-request.json"), body)
    assert f"partnerId={sim.tenant_id}" in body["url"]


def test_api_fault_shape(app_pc):
    response = app_pc.get("/v1/customers/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert_same_shape(load_sample("error-404-partnerfd.json"), response.json())
    assert response.json()["code"] == 60003
