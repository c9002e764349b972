"""A real ClientRegistry over fake transports: what the composition root injects into services,
with Partner Center and Graph answered by the fakes in tests/fakes/partner_center.py."""
from __future__ import annotations

from typing import Any, Callable

from shared.clients import ClientRegistry

from .partner_center import BASE, FakeTokenSource

GRAPH_BASE = "https://graph.test"


def fake_clients(token_sources: Callable[[Any], Any] | None = None, *, calls_per_minute: int = 450,
                 graph_options: dict[str, Any] | None = None, **client_options: Any) -> ClientRegistry:
    """``client_options`` go to every PartnerCenterClient (e.g. ``session=FakePartnerCenter()``),
    ``graph_options`` to every GraphBillingClient."""
    return ClientRegistry(
        token_sources or (lambda provider: FakeTokenSource()), partner_center_url=BASE, graph_url=GRAPH_BASE,
        calls_per_minute=calls_per_minute, client_options=client_options, graph_options=graph_options,
    )
