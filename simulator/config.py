"""Every knob of the simulator in one dataclass (CLI flags map onto these fields)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Faults are injected only into the APIs under test, never into sign-in or secrets, unless a
# test asks for it explicitly (the production code's retry logic is what faults exercise).
DEFAULT_FAULT_SERVICES = ("partner_center", "graph")
ALL_SERVICES = ("partner_center", "graph", "webhooks", "entra", "keyvault", "blobs")


@dataclass
class SimulatorConfig:
    seed: int = 1
    customers: int = 25
    subscriptions_per_customer: int = 4
    nce_fraction: float = 0.5
    invoices: int = 6
    line_items_per_invoice: int = 40

    # Token buckets: one per partner tenant and one per partner+customer, both per minute.
    rate_limit_per_minute: int = 500
    customer_rate_limit_per_minute: int | None = None  # None: same as rate_limit_per_minute

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_5xx: float = 0.0
    fault_429: float = 0.0
    fault_reset: float = 0.0
    fault_truncate: float = 0.0
    # a successful GET answered 200 with a body that is not the resource: an error envelope,
    # HTML, an empty body, or a collection without "items" (clients must not read it as empty)
    fault_malformed: float = 0.0
    write_202: float = 0.0
    # a write on a subscription refused with 409 / 900278 "... Try again after 24 hours." (issue 11)
    fault_try_again_later: float = 0.0
    fault_services: tuple[str, ...] = DEFAULT_FAULT_SERVICES

    # Graph export: number of "running" polls before the operation finishes.
    export_running_polls: int = 2
    export_retry_after_seconds: int = 1
    export_items_per_blob: int = 250_000

    nce_cancellation_days: int = 7
    # end of term (simulator/lifecycle.py; changeable at run time through PUT /_sim/settings)
    est_conversion_hours: float = 6.0  # "auto-renew off only" becomes EST this long after the PATCH
    pending_operation_seconds: float = 0.0  # after a change, PATCHes get 409/900278 for this long
    allow_multi_property_patch: bool = False  # False: one property change per PATCH, as Partner Center
    # agreements (simulator/attestation.py)
    legacy_agreement_confirmation: bool = False  # True: the pre-2026 confirmation POST still works
    attestation_link_days: int = 30
    # MFA (simulator/mfa.py)
    mfa_error_format: str = "2026"  # "2026": 401 + ApiFault 900421; "2019": empty body, reason phrase
    mfa_enforcement: float = 1.0  # share of non-MFA App+User calls refused (progressive roll-out)
    conditional_access_block: bool = False  # App+User calls get 403 / 900309
    trusted_location_skips_mfa: bool = False  # user tokens carry no "mfa" in amr even after MFA
    refresh_token_inactivity_days: int = 90
    auth_code_lifetime_seconds: int = 600
    access_token_lifetime_seconds: int = 3600

    # Business clock start (ISO-8601). None: the real current time. JWT timestamps always use
    # the real time so that msal and azure-identity accept them; only business rules
    # (refresh-token inactivity, NCE windows, code lifetime) follow the simulator clock.
    start_time: str | None = None

    host: str = "127.0.0.1"
    port: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("customers", "subscriptions_per_customer", "invoices", "line_items_per_invoice"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for name in ("nce_fraction", "fault_5xx", "fault_429", "fault_reset", "fault_truncate", "fault_malformed",
                     "write_202", "fault_try_again_later", "mfa_enforcement"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        if self.mfa_error_format not in ("2026", "2019"):
            problems.append("mfa_error_format must be 2026 or 2019")
        if self.rate_limit_per_minute < 1:
            problems.append("rate_limit_per_minute must be >= 1")
        if self.export_items_per_blob < 1:
            problems.append("export_items_per_blob must be >= 1")
        unknown = set(self.fault_services) - set(ALL_SERVICES)
        if unknown:
            problems.append(f"unknown fault_services: {sorted(unknown)}")
        if problems:
            raise ValueError("; ".join(problems))
        self.fault_services = tuple(self.fault_services)

    @property
    def effective_customer_rate_limit(self) -> int:
        return self.customer_rate_limit_per_minute or self.rate_limit_per_minute

    def with_changes(self, **knobs) -> "SimulatorConfig":
        known = {f.name for f in fields(self)}
        unknown = set(knobs) - known
        if unknown:
            raise TypeError(f"unknown simulator knobs: {sorted(unknown)}")
        values = asdict(self)
        values.update(knobs)
        return SimulatorConfig(**values)


# Knobs that PUT /_sim/faults may change while the simulator runs.
FAULT_KNOBS = ("latency_ms", "latency_jitter_ms", "fault_5xx", "fault_429", "fault_reset",
               "fault_truncate", "fault_malformed", "write_202", "fault_try_again_later", "fault_services",
               "rate_limit_per_minute",
               "customer_rate_limit_per_minute", "export_running_polls", "export_retry_after_seconds")
