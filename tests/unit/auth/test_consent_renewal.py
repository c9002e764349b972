"""Issue 9, points 12 and 13, with fakes: a new consent link does not end the consent in force,
and a provider PUT never overwrites consent fields written meanwhile."""
from __future__ import annotations

from dataclasses import replace

from auth.consent import CONSENT_FLOWS_TABLE, ConsentFlowStore, ConsentService
from shared.providers import PROVIDERS_TABLE, ConsentStatus, ProviderConnection, ProviderRepository
from sync.writeback.rules import _consent_problem
from tests.fakes.auth import (
    REDIRECT_URI,
    TENANT_ID,
    FakeConfidentialClient,
    FakeProviders,
    FakeSecrets,
    FakeTable,
    ManualClock,
    make_settings,
    provider,
    token_result,
)

SECRET = "pcsync-refresh-token-contoso"
BODY = {"name": "Contoso", "countryCode": "US", "currencyCode": "USD", "tenantId": TENANT_ID}


def consent_service(providers, secrets, client, clock=None) -> ConsentService:
    return ConsentService(settings=make_settings(), providers=providers, secrets=secrets,
                          flows=ConsentFlowStore(FakeTable(CONSENT_FLOWS_TABLE)),
                          client_for_tenant=lambda tenant: client, clock=clock or ManualClock())


def working(p: ProviderConnection) -> bool:
    """What the sync (consent_active), token refresh (consent_blocked) and write-back look at."""
    return p.consent_active and p.consent_blocked is None and _consent_problem(p) is None


# ---- 12 ----------------------------------------------------------------------------------------


def test_a_link_for_an_active_provider_keeps_it_working_until_the_new_consent_completes():
    """Before: the link set consent_status=pending, and the sync skipped the provider ("consent pending")."""
    providers = FakeProviders(provider(consent_status=ConsentStatus.ACTIVE, consented_at="2025-01-01T00:00:00Z",
                                       consented_upn="old@partner.example"))
    secrets = FakeSecrets({SECRET: "rt-old"})
    client = FakeConfidentialClient()
    service = consent_service(providers, secrets, client)

    service.create_link("contoso")
    during = providers.get_provider("contoso")
    assert during.consent_status == "active" and during.consent_pending_since == "2025-01-15T09:00:00Z"
    assert working(during)
    assert during.to_json()["consent"]["pendingSince"] == "2025-01-15T09:00:00Z"

    client.code_results.append(token_result(refresh_token="rt-new"))
    flow = client.flows[-1]
    outcome = service.complete({"code": "c", "state": flow["state"]}, callback_url=REDIRECT_URI)
    assert outcome.succeeded
    after = providers.get_provider("contoso")
    assert secrets.versions[SECRET] == ["rt-old", "rt-new"]  # the new consent's token replaces the old
    assert after.consent_status == "active" and after.consent_pending_since is None and working(after)


def test_a_link_for_a_provider_without_a_working_consent_is_pending_and_stays_blocked():
    expired = provider(consent_status=ConsentStatus.EXPIRED, consented_at="2025-01-01T00:00:00Z",
                       consent_error="The stored consent expired")
    providers = FakeProviders(expired, replace(expired, id="fresh", consent_status=ConsentStatus.NONE,
                                               consented_at=None, consent_error=None))
    service = consent_service(providers, FakeSecrets(), FakeConfidentialClient())
    service.create_link("contoso")
    service.create_link("fresh")
    blocked = providers.get_provider("contoso")
    assert blocked.consent_status == "pending" and blocked.consent_blocked == "expired" and not blocked.consent_active
    never = providers.get_provider("fresh")
    assert never.consent_status == "pending" and not never.consent_active and _consent_problem(never)


def test_a_row_an_older_version_moved_to_pending_still_counts_as_working():
    legacy = provider(consent_status=ConsentStatus.PENDING, consented_at="2025-01-01T00:00:00Z")
    assert working(legacy)


# ---- 13 ----------------------------------------------------------------------------------------


class RacingTable(FakeTable):
    """Runs ``between`` once, right after the first read of the provider row: a consent
    completing between a PUT's read and its write."""

    def __init__(self):
        super().__init__(PROVIDERS_TABLE)
        self.between = None

    def find_entity(self, pk, rk):
        row = super().find_entity(pk, rk)
        hook, self.between = self.between, None
        if hook:
            hook()
        return row


def test_a_put_between_a_consents_read_and_write_keeps_the_consent():
    """Before: the PUT replaced the whole row with what it had read (consent none), wiping the
    consent that completed meanwhile."""
    table = RacingTable()
    repo = ProviderRepository(table)
    repo.put_provider("contoso", BODY)
    table.between = lambda: repo.update_status("contoso", consent_status=ConsentStatus.ACTIVE,
                                               consented_upn="user@partner.example", consented_at="2025-01-15T09:00:00Z")
    stored, created = repo.put_provider("contoso", BODY | {"name": "Renamed", "billingStartDay": 5})
    assert not created
    assert (stored.name, stored.billing_start_day) == ("Renamed", 5)
    assert (stored.consent_status, stored.consented_upn) == ("active", "user@partner.example")
    assert repo.get_provider("contoso") == stored


def test_a_consent_completing_around_a_put_keeps_the_puts_fields():
    providers_table = RacingTable()
    repo = ProviderRepository(providers_table)
    repo.put_provider("contoso", BODY)
    client = FakeConfidentialClient()
    service = consent_service(repo, FakeSecrets(), client)
    service.create_link("contoso")
    client.code_results.append(token_result(refresh_token="rt"))
    # the consent callback reads the provider, then a PUT lands, then the consent is written
    providers_table.between = lambda: repo.put_provider("contoso", BODY | {"name": "Renamed"})
    assert service.complete({"code": "c", "state": client.flows[-1]["state"]}, callback_url=REDIRECT_URI).succeeded
    stored = repo.get_provider("contoso")
    assert stored.name == "Renamed" and stored.consent_status == "active" and stored.consent_pending_since is None


def test_a_put_clears_left_out_optional_fields_but_not_consent_fields():
    repo = ProviderRepository(FakeTable(PROVIDERS_TABLE))
    repo.put_provider("contoso", BODY | {"billingStartDay": 3, "resellerRelationshipUrl": "https://x.example/r"})
    repo.update_status("contoso", consent_status=ConsentStatus.ACTIVE, verify_result='{"ok": true}')
    stored, _ = repo.put_provider("contoso", BODY)
    assert stored.billing_start_day is None and stored.reseller_relationship_url is None
    assert stored.consent_status == "active" and stored.to_json()["verify"] == {"ok": True}
