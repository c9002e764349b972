"""The per-tenant registry of Partner Center and Graph clients.

Partner Center throttles per partner tenant, so every caller in a process (sync, invoices,
write-back, webhook registration) must share one client, one connection pool and one call budget
per tenant. The registry is built once by the composition root (bootstrap.py) and injected into
every service that calls out; no service builds clients of its own.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

from .call_budget import CALL_BUDGET_TABLE, CallBudget, SharedCallBudget
from .graph_billing import GraphBillingClient
from .partner_center import PartnerCenterClient
from .providers import ProviderConnection
from .tokens import TokenSource

TokenSourceFactory = Callable[[ProviderConnection], TokenSource]


class ClientRegistry:
    """One Partner Center client and one Graph billing client per provider (rebuilt when the
    provider's tenant changes), and one call budget per partner tenant.

    With ``shared_budget`` the partner-tenant budget is also shared with the other worker
    processes through table ``callbudget`` (:class:`~shared.call_budget.SharedCallBudget`); the
    per-customer budget stays in-process."""

    def __init__(
        self,
        token_sources: TokenSourceFactory,
        *,
        partner_center_url: str,
        graph_url: str,
        tables: Any = None,
        ca_bundle: str | None = None,
        calls_per_minute: int,
        customer_calls_per_minute: int | None = None,
        shared_budget: bool = False,
        client_options: Mapping[str, Any] | None = None,
        graph_options: Mapping[str, Any] | None = None,
    ):
        if shared_budget and tables is None:
            raise ValueError("a shared call budget needs the table store")
        self._token_sources = token_sources
        self.partner_center_url = partner_center_url
        self.graph_url = graph_url
        self.ca_bundle = ca_bundle
        self.calls_per_minute = calls_per_minute
        self.customer_calls_per_minute = customer_calls_per_minute
        self.shared_budget = shared_budget
        self._tables = tables
        self._client_options = dict(client_options or {})
        self._graph_options = dict(graph_options or {})
        self._partner_center: dict[str, tuple[str, PartnerCenterClient]] = {}
        self._graph: dict[str, tuple[str, GraphBillingClient]] = {}
        self._budgets: dict[str, CallBudget | SharedCallBudget] = {}
        self._lock = threading.Lock()

    def token_source_for(self, provider: ProviderConnection) -> TokenSource:
        return self._token_sources(provider)

    def budget_for(self, tenant_id: str) -> CallBudget | SharedCallBudget:
        """The tenant's call budget, one per process."""
        with self._lock:
            budget = self._budgets.get(tenant_id)
            if budget is None:
                local = CallBudget(partner_limit=self.calls_per_minute, customer_limit=self.customer_calls_per_minute)
                if self.shared_budget:
                    tables = self._tables
                    # the table is created on first lease, under the budget's storage-failure fallback
                    budget = SharedCallBudget(lambda: tables.table(CALL_BUDGET_TABLE).client, tenant_id.lower(),
                                              limit=self.calls_per_minute, local=local)
                else:
                    budget = local
                self._budgets[tenant_id] = budget
            return budget

    def partner_center(self, provider: ProviderConnection) -> PartnerCenterClient:
        """The provider's Partner Center client; ``bind()`` it per run for correlation id and counters."""
        return self._cached(self._partner_center, provider, lambda: PartnerCenterClient(
            self.partner_center_url, self.token_source_for(provider), budget=self.budget_for(provider.tenant_id),
            ca_bundle=self.ca_bundle, **self._client_options,
        ))

    def graph(self, provider: ProviderConnection) -> GraphBillingClient:
        """The provider's Graph billing client (app-only tokens from the same token source)."""
        return self._cached(self._graph, provider, lambda: GraphBillingClient(
            self.graph_url, self.token_source_for(provider), ca_bundle=self.ca_bundle, **self._graph_options,
        ))

    def _cached(self, cache: dict[str, tuple[str, Any]], provider: ProviderConnection, build: Callable[[], Any]) -> Any:
        with self._lock:
            cached = cache.get(provider.id)
            if cached and cached[0] == provider.tenant_id:
                return cached[1]
        client = build()  # outside the lock: building a token source may read storage
        with self._lock:
            cache[provider.id] = (provider.tenant_id, client)
        return client

    def forget(self, provider_id: str) -> None:
        """Drop a provider's clients (after its consent ended, so nothing stale is reused)."""
        with self._lock:
            dropped = [cache.pop(provider_id, None) for cache in (self._partner_center, self._graph)]
        for entry in dropped:
            if entry:
                entry[1].close()
