"""Helpers for tests and tools: start the simulator in-process or as a subprocess and drive
its control API.

    with start_simulator(customers=5) as sim:
        sim.control.advance_clock(days=91)
"""
from __future__ import annotations

import json
from decimal import Decimal
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trusting_session(ca_bundle: str) -> requests.Session:
    """A requests.Session that trusts the simulator's CA. trust_env=False matters: this machine
    sets REQUESTS_CA_BUNDLE, which would silently override session.verify."""
    session = requests.Session()
    session.verify = ca_bundle
    session.trust_env = False
    return session


def _given(**fields) -> dict:
    """The fields that are not None: a None argument means "leave it as it is" on the server."""
    return {name: value for name, value in fields.items() if value is not None}


class ControlError(RuntimeError):
    def __init__(self, status: int, body):
        super().__init__(f"control API answered {status}: {body}")
        self.status, self.body = status, body


class SimulatorControl:
    """Thin client for /_sim/. Every method returns the decoded JSON (or None for 204)."""

    def __init__(self, control_url: str, ca_bundle: str):
        self.base = control_url.rstrip("/")
        self.session = trusting_session(ca_bundle)

    def request(self, method: str, path: str, json_body=None, params=None):
        response = self.session.request(method, f"{self.base}{path}", json=json_body, params=params, timeout=30)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise ControlError(response.status_code, body)
        if response.status_code == 204 or not response.content:
            return None
        content_type = response.headers.get("Content-Type", "")
        return response.json() if "json" in content_type else response.content

    # health and truth
    def health(self) -> dict:
        return self.request("GET", "/health")

    def customers(self) -> list[dict]:
        return self.request("GET", "/truth/customers")["items"]

    def subscriptions(self, customer_id: str | None = None) -> list[dict]:
        return self.request("GET", "/truth/subscriptions", params={"customer": customer_id} if customer_id else None)["items"]

    def agreements(self) -> list[dict]:
        return self.request("GET", "/truth/agreements")["items"]

    def invoices(self) -> list[dict]:
        return self.request("GET", "/truth/invoices")["items"]

    # mutations
    def add_customer(self, **fields) -> dict:
        """fields: companyName, domain, id, country, upperCaseId (served with an upper-case id; all optional)."""
        return self.request("POST", "/customers", fields)

    def delete_customer(self, customer_id: str) -> None:
        self.request("DELETE", f"/customers/{customer_id}")

    def add_subscription(self, customer_id: str, **fields) -> dict:
        """fields: nce (bool), quantity, status, days_ago, term_duration, billing_cycle,
        cancellation_allowed_until (ISO)."""
        return self.request("POST", f"/customers/{customer_id}/subscriptions", fields)

    def update_subscription(self, customer_id: str, subscription_id: str, **changes) -> dict:
        """changes: quantity, status, autoRenewEnabled, friendlyName, cancellationAllowedUntilDate."""
        return self.request("PATCH", f"/subscriptions/{customer_id}/{subscription_id}", changes)

    def delete_subscription(self, customer_id: str, subscription_id: str) -> None:
        self.request("DELETE", f"/subscriptions/{customer_id}/{subscription_id}")

    def add_invoice(self, kind: str = "G", line_items: int | None = None, currency: str | None = None,
                    billing: dict | None = None) -> dict:
        """billing: knobs of simulator.billing_plan.BillingPlan (see STATUS.md "Billing files")."""
        body: dict = {"kind": kind}
        if line_items is not None:
            body["line_items"] = line_items
        if currency:
            body["currency"] = currency
        if billing:
            body["billing"] = billing
        return self.request("POST", "/invoices", body)

    def billing(self, invoice_id: str) -> dict:
        return self.request("GET", f"/invoices/{invoice_id}/billing")

    def set_billing(self, invoice_id: str, **knobs) -> dict:
        """e.g. usageMismatch={sub: "12.34"}, extras=["reservation"], usageReady=False, usageDelayDays=1,
        usageNotReady="empty", exchangeRate="1.1", currency="EUR"."""
        return self.request("PATCH", f"/invoices/{invoice_id}/billing", knobs)

    def set_unbilled_billing(self, **knobs) -> dict:
        return self.request("PATCH", "/unbilled/billing", knobs)

    def usage_truth(self, invoice_id: str) -> dict:
        """Per subscription: recon usage-based subtotal, usage total, difference (Decimals)."""
        response = self.session.get(f"{self.base}/truth/invoices/{invoice_id}/usage", timeout=120)
        if response.status_code >= 400:
            raise ControlError(response.status_code, response.text)
        return json.loads(response.text, parse_float=Decimal)

    # upstream changes with a chosen trace (simulator/upstream.py) and the activity log
    def upstream_change(self, kind: str, customer_id: str, *, trace: str | None = None, **fields) -> dict:
        """kind: subscription_quantity, subscription_suspend, customer_profile, agreement, renewal,
        est_conversion; trace: audit, webhook or none (default: audit, none for Microsoft-side kinds)."""
        return self.request("POST", "/upstream/changes",
                            {"kind": kind, "customerId": customer_id, **_given(trace=trace), **fields})

    def upstream_changes(self) -> list[dict]:
        return self.request("GET", "/upstream/changes")["items"]

    def audit_records(self) -> list[dict]:
        return self.request("GET", "/truth/auditrecords")["items"]

    # clock, calls, faults
    def now(self) -> str:
        return self.request("GET", "/clock")["now"]

    def advance_clock(self, days: float = 0, seconds: float = 0) -> str:
        return self.request("POST", "/clock", {"advance_days": days, "advance_seconds": seconds})["now"]

    def set_clock(self, iso_time: str) -> str:
        return self.request("POST", "/clock", {"now": iso_time})["now"]

    def calls(self) -> dict:
        return self.request("GET", "/calls")

    def reset_calls(self) -> None:
        self.request("POST", "/calls/reset")

    def faults(self) -> dict:
        return self.request("GET", "/faults")

    def set_faults(self, **knobs) -> dict:
        return self.request("PUT", "/faults", knobs)

    # identities
    def integration_user(self) -> dict:
        return self.request("GET", "/users/integration")

    def set_integration_user(self, roles: list[str] | None = None, mfa_registered: bool | None = None) -> dict:
        return self.request("POST", "/users/integration", _given(roles=roles, mfa_registered=mfa_registered))

    def revoke_refresh_tokens(self) -> int:
        return self.request("POST", "/tokens/revoke")["revoked"]

    def app_permissions(self) -> dict:
        return self.request("GET", "/app/permissions")

    def set_app_permissions(self, graph_application: list[str] | None = None,
                            graph_delegated: list[str] | None = None) -> dict:
        return self.request("POST", "/app/permissions",
                            _given(graph_application=graph_application, graph_delegated=graph_delegated))

    def sign_in(self, auth_uri: str, mfa: bool | str = True) -> str:
        """Complete the sign-in page for an msal auth_uri; returns the redirect URL
        (with code and state, or with error=access_denied when mfa="decline")."""
        choice = "decline" if mfa == "decline" else ("true" if mfa else "false")
        return self.request("GET", f"/entra/signin?auth_uri={quote(auth_uri, safe='')}&mfa={choice}")["redirect"]

    # the 2026 rules (simulator/control_2026.py)
    def settings(self) -> dict:
        return self.request("GET", "/settings")

    def set_settings(self, **settings) -> dict:
        """est_conversion_hours, pending_operation_seconds, allow_multi_property_patch,
        legacy_agreement_confirmation, attestation_link_days, mfa_error_format, mfa_enforcement,
        conditional_access_block, trusted_location_skips_mfa."""
        return self.request("PUT", "/settings", settings)

    def est_backfill(self, subscription_ids: list[str] | None = None, immediately: bool = False) -> list[str]:
        return self.request("POST", "/subscriptions/est-backfill",
                            _given(subscriptionIds=subscription_ids, immediately=immediately))["changed"]

    def lifecycle(self) -> dict:
        """{subscriptions: [{customerId, subscriptionId, status, endOfTermAction, ...}], events: [...]}"""
        return self.request("GET", "/truth/lifecycle")

    def attestations(self) -> list[dict]:
        return self.request("GET", "/truth/attestations")["items"]

    def accept_attestation(self, attestation_id: str) -> dict:
        return self.request("POST", f"/attestations/{attestation_id}/accept")

    def expire_attestation(self, attestation_id: str) -> dict:
        return self.request("POST", f"/attestations/{attestation_id}/expire")

    def fail_refresh_tokens(self, reason: str) -> dict:
        """reason: expired | revoked | mfa | conditional_access | none (the next redemptions fail so)."""
        return self.request("POST", "/tokens/fail", {"reason": reason})

    def mfa_requests(self) -> dict:
        return self.request("GET", "/truth/mfa")

    # webhooks
    def send_webhook(self, event_name: str, resource_uri: str, **extra) -> dict:
        return self.request("POST", "/webhooks/send", {"EventName": event_name, "ResourceUri": resource_uri, **extra})

    def webhook_deliveries(self) -> list[dict]:
        return self.request("GET", "/webhooks/deliveries")

    def webhook_certificate_pem(self) -> bytes:
        return self.request("GET", "/webhook-cert.cer")

    def close(self) -> None:
        self.session.close()


@dataclass
class RunningSimulator:
    partner_center_url: str
    authority_host: str
    graph_url: str
    key_vault_url: str
    control_url: str
    ca_bundle: str
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    integration_user: str
    port: int
    blob_url: str = ""       # the storage host of Graph export blobs (its own listener)
    control: SimulatorControl = field(init=False, repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)   # set by start_simulator_process
    _stopper: object = field(default=None, repr=False)

    def __post_init__(self):
        self.control = SimulatorControl(self.control_url, self.ca_bundle)

    def session(self) -> requests.Session:
        """A fresh requests.Session that trusts the simulator's CA (trust_env=False)."""
        return trusting_session(self.ca_bundle)

    def stop(self) -> None:
        if self._stopper is not None:
            stopper, self._stopper = self._stopper, None
            self.control.close()
            stopper()

    def __enter__(self) -> "RunningSimulator":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _config(config: SimulatorConfig | None, knobs: dict) -> SimulatorConfig:
    base = config or SimulatorConfig()
    return base.with_changes(**knobs) if knobs else base


def bench_streams(line_items: int, **knobs):
    """(reconciliation, daily-rated usage) streams of a fresh G invoice, generated in this process
    without HTTP (benchmarks): ``.count`` and ``.export_row(index)`` as the Graph export serves them."""
    from simulator.clock import SimulatorClock
    from simulator.line_items import DAILY_RATED_USAGE, ONETIME_BILLING
    from simulator.state import SimulatorState

    state = SimulatorState(_config(None, {"customers": 50, **knobs}), SimulatorClock(None))
    invoice = state.factory.new_invoice(line_items=line_items)
    state.invoices[invoice.id] = invoice
    return state.invoice_stream(invoice, ONETIME_BILLING), state.invoice_stream(invoice, DAILY_RATED_USAGE)


def start_simulator(config: SimulatorConfig | None = None, **knobs) -> RunningSimulator:
    """Start in this process on a background thread (port 0 unless configured)."""
    server = SimulatorServer(_config(config, knobs)).start_background()
    return RunningSimulator(**server.info(), _stopper=server.stop)


def _cli_args(config: SimulatorConfig) -> list[str]:
    args = []
    for name in ("host", "port", "seed", "customers", "subscriptions_per_customer", "nce_fraction", "invoices",
                 "line_items_per_invoice", "rate_limit_per_minute", "latency_ms", "latency_jitter_ms", "fault_5xx",
                 "fault_429", "fault_reset", "fault_truncate", "fault_malformed", "write_202", "export_running_polls",
                 "export_retry_after_seconds", "export_items_per_blob"):
        args += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    for name in ("fault_try_again_later", "est_conversion_hours", "pending_operation_seconds", "attestation_link_days",
                 "mfa_error_format", "mfa_enforcement"):
        args += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    for name in ("allow_multi_property_patch", "legacy_agreement_confirmation", "conditional_access_block",
                 "trusted_location_skips_mfa"):
        if getattr(config, name):
            args.append(f"--{name.replace('_', '-')}")
    args += ["--fault-services", ",".join(config.fault_services)]
    if config.customer_rate_limit_per_minute:
        args += ["--customer-rate-limit-per-minute", str(config.customer_rate_limit_per_minute)]
    if config.start_time:
        args += ["--start-time", config.start_time]
    if config.verbose:
        args.append("--verbose")
    return args


def start_simulator_process(config: SimulatorConfig | None = None, *, python: str | None = None,
                            startup_timeout: float = 30.0, **knobs) -> RunningSimulator:
    """Run ``python -m simulator`` as a subprocess; the returned object has ``.process``."""
    config = _config(config, knobs)
    process = subprocess.Popen([python or sys.executable, "-m", "simulator", *_cli_args(config)],
                               cwd=_REPO_ROOT, stdout=subprocess.PIPE, stderr=None, text=True)
    deadline = time.monotonic() + startup_timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            break
        if process.poll() is not None:
            break
    if not line:
        process.kill()
        process.wait(5)
        raise RuntimeError(f"simulator did not start (exit code {process.poll()})")

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        process.stdout.close()

    return RunningSimulator(**json.loads(line), process=process, _stopper=stop)
