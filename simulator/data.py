"""Deterministic seeded world: partner, app, integration user, customers, subscriptions,
agreements and invoices. Line items are not stored here (see line_items.py)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import random
import string
import uuid
import zlib
from dataclasses import dataclass, field

from simulator.config import SimulatorConfig

MCA_TEMPLATE_ID = "117a77b0-9360-443b-8795-c6dedc750cf9"
MCA_LINK = "https://aka.ms/customeragreement"
# customers whose MCA was accepted before 2023-04-01 must accept it again
MCA_REATTEST_BEFORE = dt.datetime(2023, 4, 1, tzinfo=dt.timezone.utc)
PRE_2023_AGREEMENT_BASE = dt.datetime(2022, 5, 1, tzinfo=dt.timezone.utc)
PARTNER_CENTER_RESOURCE = "https://api.partnercenter.microsoft.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
KEY_VAULT_RESOURCE = "https://vault.azure.net"
DEFAULT_ROLES = ("SalesAgent", "BillingAdmin")
GRAPH_BILLING_PERMISSION = "PartnerBilling.Read.All"

_ADJECTIVES = ["Contoso", "Fabrikam", "Northwind", "Tailspin", "Wingtip", "Adventure", "Alpine", "Blue Yonder",
               "Coho", "Datum", "Fourth Coffee", "Humongous", "Litware", "Lucerne", "Margie's", "Proseware",
               "Relecloud", "Southridge", "Trey", "Woodgrove", "Graphic", "Lamna", "Munson's", "Nod"]
_NOUNS = ["Systems", "Logistics", "Pharma", "Travel", "Bank", "Foods", "Energy", "Media", "Motors", "Labs",
          "Retail", "Health", "Outfitters", "Consulting", "Airlines", "Publishing", "Winery", "Insurance"]
_SUFFIXES = ["Ltd", "Inc.", "GmbH", "LLC", "S.A.", "B.V.", "AB", "Pty Ltd"]
_PLACES = [("US", "Redmond", "WA", "98052"), ("US", "Austin", "TX", "73301"), ("GB", "London", "", "EC1A 1BB"),
           ("DE", "Munich", "", "80331"), ("NL", "Amsterdam", "", "1011"), ("FR", "Paris", "", "75001"),
           ("SE", "Stockholm", "", "111 20"), ("AU", "Sydney", "NSW", "2000")]
_FIRST = ["Gena", "Tania", "Ravi", "Mei", "Lars", "Ana", "Omar", "Ingrid", "Kenji", "Zoe", "Pablo", "Nia"]
_LAST = ["Soto", "Carr", "Patel", "Chen", "Berg", "Silva", "Haddad", "Olsen", "Sato", "Kim", "Ruiz", "Okafor"]

# (offerId, offerName, unitType, billingType)
LEGACY_OFFERS = [
    ("CD25B4A5-8D04-4E07-B6E3-6F0B1C3A1F11", "Office 365 E3", "Licenses", "license"),
    ("91FD106F-4B2C-4938-95AC-F54F74E9A239", "Office 365 Business Premium", "Licenses", "license"),
    ("2828BE95-46BA-4F91-B2FD-0BEF192ECF60", "Exchange Online Archiving for Exchange Online", "Licenses", "license"),
    ("618B53FE-9B99-428B-9745-F706AEAF3979", "SharePoint Online (Plan 2)", "Licenses", "license"),
    ("MS-AZR-0145P", "Microsoft Azure", "Usage-based", "usage"),
]
# (productId, skuId, availabilityId, name, productTypeId, productTypeName)
NCE_PRODUCTS = [
    ("CFQ7TTC0LF8Q", "0001", "CFQ7TTC0K5BF", "Microsoft 365 Business Premium", "OnlineServicesNCE", "OnlineServicesNCE"),
    ("CFQ7TTC0LFLZ", "0002", "CFQ7TTC0KDJM", "Microsoft 365 E3", "OnlineServicesNCE", "OnlineServicesNCE"),
    ("CFQ7TTC0LH18", "0001", "CFQ7TTC0J2C9", "Microsoft 365 Business Basic", "OnlineServicesNCE", "OnlineServicesNCE"),
    ("CFQ7TTC0MM8R", "0002", "CFQ7TTC0MM9B", "Microsoft Teams Essentials", "OnlineServicesNCE", "OnlineServicesNCE"),
    ("DG7GMGF0DVSV", "000P", "DG7GMGF0F3Q9", "Windows Server 2022 Standard - 16 Core License Pack", "Software", "Software"),
]


@dataclass
class Partner:
    tenant_id: str
    company_name: str
    domain: str
    mpn_id: int
    org_profile_id: str


@dataclass
class AppRegistration:
    client_id: str
    client_secret: str
    service_principal_oid: str
    graph_application_permissions: list[str] = field(default_factory=lambda: [GRAPH_BILLING_PERMISSION])
    graph_delegated_permissions: list[str] = field(default_factory=lambda: [GRAPH_BILLING_PERMISSION])


@dataclass
class User:
    oid: str
    upn: str
    display_name: str
    roles: list[str] = field(default_factory=lambda: list(DEFAULT_ROLES))
    mfa_registered: bool = True


@dataclass
class Customer:
    id: str
    company_name: str
    domain: str
    country: str
    city: str
    state: str
    postal_code: str
    contact_first: str
    contact_last: str
    commerce_id: str
    billing_profile_id: str


@dataclass
class Subscription:
    id: str
    customer_id: str
    nce: bool
    offer_id: str
    offer_name: str
    friendly_name: str
    quantity: int
    unit_type: str
    billing_type: str
    billing_cycle: str
    status: str
    auto_renew: bool
    creation_date: dt.datetime
    effective_start: dt.datetime
    commitment_end: dt.datetime
    order_id: str
    entitlement_id: str | None = None
    parent_id: str | None = None
    term_duration: str | None = None
    cancellation_allowed_until: dt.datetime | None = None
    product_type: dict | None = None
    scheduled_next_term: dict | None = None
    suspension_reasons: list[str] = field(default_factory=list)
    version: int = 1
    # end of term (simulator/lifecycle.py): [{actionType, scheduleType, effectiveDate, instructions}]
    scheduled_actions: list[dict] = field(default_factory=list)
    extended_service_term: bool = False
    est_started: dt.datetime | None = None
    est_conversion_at: dt.datetime | None = None  # the 24-hour "auto-renew off becomes EST" trap
    pending_until: dt.datetime | None = None  # a change is still being processed until then

    @property
    def etag(self) -> str:
        raw = json.dumps({"id": self.id.lower(), "version": self.version}, separators=(",", ":"))
        return base64.b64encode(raw.encode()).decode()


@dataclass
class Agreement:
    customer_id: str
    type: str
    template_id: str
    date_agreed: str
    first_name: str
    last_name: str
    email: str
    phone: str
    user_id: str
    attestation_id: str | None = None  # set when created from an enhanced attestation


@dataclass
class Invoice:
    id: str
    invoice_date: dt.datetime
    period_start: dt.datetime
    period_end: dt.datetime
    line_items: int          # per billing/usage stream (see line_items.streams_for_invoice)
    currency: str = "USD"
    paid_amount: float = 0.0

    @property
    def is_new_commerce(self) -> bool:
        return self.id.startswith("G")


def rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())[:20]


@dataclass
class World:
    partner: Partner
    app: AppRegistration
    user: User
    customers: list[Customer]
    subscriptions: list[Subscription]
    agreements: list[Agreement]
    invoices: list[Invoice]


class WorldFactory:
    """Builds the seeded world and, later, new customers/subscriptions/invoices on demand."""

    def __init__(self, config: SimulatorConfig, today: dt.datetime):
        self.config = config
        self.rng = random.Random(config.seed)
        # Anchor every generated date on the start day so the same seed gives the same data.
        self.today = today.replace(hour=0, minute=0, second=0, microsecond=0)
        self._invoice_serial = 24_130
        self._customer_serial = 0

    def build(self) -> World:
        rng = self.rng
        tenant_id = rng_uuid(rng)
        word = _ADJECTIVES[rng.randrange(len(_ADJECTIVES))]
        partner = Partner(tenant_id=tenant_id, company_name=f"{word} Cloud Partners (Simulated)",
                          domain=f"{_slug(word)}partner{rng.randrange(100, 999)}.onmicrosoft.com",
                          mpn_id=rng.randrange(4_000_000, 6_999_999), org_profile_id=rng_uuid(rng))
        secret_alphabet = string.ascii_letters + string.digits + "~._-"
        app = AppRegistration(client_id=rng_uuid(rng),
                              client_secret="sim~" + "".join(rng.choice(secret_alphabet) for _ in range(36)),
                              service_principal_oid=rng_uuid(rng))
        user = User(oid=rng_uuid(rng), upn=f"integration@{partner.domain}", display_name="Integration Account")
        customers, subscriptions, agreements = [], [], []
        for _ in range(self.config.customers):
            customer = self.new_customer()
            customers.append(customer)
            for _ in range(self.config.subscriptions_per_customer):
                subscriptions.append(self.new_subscription(customer.id))
            agreements.extend(self._seed_agreements(customer, user))
        invoices = [self.new_invoice(months_back=i, new_commerce=(i % 3 != 2))
                    for i in range(self.config.invoices)]
        return World(partner, app, user, customers, subscriptions, agreements, invoices)

    def new_customer(self, company_name: str | None = None, domain: str | None = None,
                     customer_id: str | None = None, country: str | None = None) -> Customer:
        rng = self.rng
        self._customer_serial += 1
        name = company_name or (f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_SUFFIXES)}")
        place = rng.choice(_PLACES)
        return Customer(
            id=customer_id or rng_uuid(rng), company_name=name,
            domain=domain or f"{_slug(name)}{self._customer_serial}.onmicrosoft.com",
            country=country or place[0], city=place[1], state=place[2], postal_code=place[3],
            contact_first=rng.choice(_FIRST), contact_last=rng.choice(_LAST),
            commerce_id=rng_uuid(rng), billing_profile_id=rng_uuid(rng))

    def new_subscription(self, customer_id: str, nce: bool | None = None, quantity: int | None = None,
                         status: str | None = None, days_ago: int | None = None,
                         term_duration: str | None = None, billing_cycle: str | None = None) -> Subscription:
        rng = self.rng
        is_nce = (rng.random() < self.config.nce_fraction) if nce is None else nce
        if days_ago is None:
            # About a third of NCE subscriptions are still inside their cancellation window.
            days_ago = rng.randrange(0, max(1, self.config.nce_cancellation_days - 1)) if (is_nce and rng.random() < 0.35) \
                else rng.randrange(10, 700)
        created = self.today - dt.timedelta(days=days_ago, hours=rng.randrange(0, 20), minutes=rng.randrange(60))
        if status is None:
            roll = rng.random()
            status = "suspended" if roll < 0.05 else "active"
        if is_nce:
            product = rng.choice(NCE_PRODUCTS)
            term = term_duration or rng.choice(["P1M", "P1Y", "P1Y"])
            cycle = billing_cycle or ("monthly" if term == "P1M" or rng.random() < 0.5 else "annual")
            term_days = 30 if term == "P1M" else 365 if term == "P1Y" else 1095
            end = created + dt.timedelta(days=term_days)
            while end < self.today:        # auto-renewed terms roll forward
                end += dt.timedelta(days=term_days)
            return Subscription(
                id=rng_uuid(rng), customer_id=customer_id, nce=True,
                offer_id=f"{product[0]}:{product[1]}:{product[2]}", offer_name=product[3],
                friendly_name=product[3], quantity=quantity or rng.randrange(1, 60), unit_type="Licenses",
                billing_type="license", billing_cycle=cycle, status=status, auto_renew=rng.random() < 0.8,
                creation_date=created, effective_start=created.replace(hour=0, minute=0, second=0, microsecond=0),
                commitment_end=end.replace(hour=0, minute=0, second=0, microsecond=0),
                order_id=rng_uuid(rng).replace("-", "")[:32], term_duration=term,
                cancellation_allowed_until=created + dt.timedelta(days=self.config.nce_cancellation_days),
                product_type={"id": product[4], "displayName": product[5]},
                suspension_reasons=["CustomerCancellation"] if status == "suspended" else [])
        offer = rng.choice(LEGACY_OFFERS)
        usage = offer[3] == "usage"
        return Subscription(
            id=rng_uuid(rng).upper(), customer_id=customer_id, nce=False, offer_id=offer[0], offer_name=offer[1],
            friendly_name=offer[1], quantity=1 if usage else (quantity or rng.randrange(1, 80)), unit_type=offer[2],
            billing_type=offer[3], billing_cycle="monthly" if usage else (billing_cycle or rng.choice(["monthly", "annual"])),
            status=status, auto_renew=(not usage) and rng.random() < 0.7, creation_date=created,
            effective_start=created.replace(hour=0, minute=0, second=0, microsecond=0),
            commitment_end=dt.datetime(9999, 12, 10, tzinfo=dt.timezone.utc) if usage
            else (created + dt.timedelta(days=365)).replace(hour=0, minute=0, second=0, microsecond=0),
            order_id=rng_uuid(rng).upper(), entitlement_id=rng_uuid(rng).upper(),
            suspension_reasons=["CustomerCancellation"] if status == "suspended" else [])

    def _seed_agreements(self, customer: Customer, user: User) -> list[Agreement]:
        rng = self.rng
        found = []
        if rng.random() < 0.6:
            agreed = self.today - dt.timedelta(days=rng.randrange(30, 900))
            if zlib.crc32(customer.id.encode()) % 3 == 0:
                # a third of them predate 2023-04-01 and must be attested again (issue 11); the
                # date comes from the id, not the random stream, so the rest of the world stays
                agreed = PRE_2023_AGREEMENT_BASE + dt.timedelta(days=zlib.crc32(customer.id.encode()) % 300)
            found.append(Agreement(customer.id, "MicrosoftCustomerAgreement", MCA_TEMPLATE_ID,
                                   agreed.strftime("%Y-%m-%dT00:00:00"),
                                   customer.contact_first, customer.contact_last,
                                   f"{customer.contact_first.lower()}@{customer.domain}", "4255550100", user.oid))
        if rng.random() < 0.3:
            found.append(Agreement(customer.id, "MicrosoftCloudAgreement", rng_uuid(rng),
                                   (self.today - dt.timedelta(days=rng.randrange(900, 2000))).strftime("%Y-%m-%dT00:00:00"),
                                   customer.contact_first, customer.contact_last,
                                   f"{customer.contact_first.lower()}@{customer.domain}", "4255550100", user.oid))
        return found

    def new_invoice(self, months_back: int = 0, new_commerce: bool = True, line_items: int | None = None,
                    invoice_id: str | None = None) -> Invoice:
        self._invoice_serial += 1
        first_of_month = self.today.replace(day=1)
        for _ in range(months_back):
            first_of_month = (first_of_month - dt.timedelta(days=1)).replace(day=1)
        period_end = first_of_month - dt.timedelta(seconds=1)
        period_start = period_end.replace(day=1, hour=0, minute=0, second=0)
        if invoice_id is None:
            invoice_id = f"G{self._invoice_serial:09d}" if new_commerce else \
                "D" + "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        return Invoice(id=invoice_id, invoice_date=first_of_month + dt.timedelta(hours=8),
                       period_start=period_start, period_end=period_end,
                       line_items=self.config.line_items_per_invoice if line_items is None else line_items)
