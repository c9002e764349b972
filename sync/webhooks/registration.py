"""Partner Center's webhook registration API for a provider (one registration per partner tenant)."""
from __future__ import annotations

from typing import Any

from shared.clients import ClientRegistry
from shared.errors import ValidationFailed
from shared.partner_center import PartnerCenterClient
from shared.partner_center_errors import ConflictError, NotFoundError
from shared.providers import ProviderRepository

REGISTRATION_PATH = "/webhooks/v1/registration"
CALLBACK_ROUTE = "/api/webhooks/partner-center/"


class WebhookRegistrations:
    def __init__(self, *, providers: ProviderRepository, clients: ClientRegistry, partner_center_url: str):
        self._providers = providers
        self._clients = clients
        # the registration API lives outside /v1; an absolute URL on the configured origin is allowed
        self.url = partner_center_url.rstrip("/") + REGISTRATION_PATH

    def _client(self, provider_id: str) -> PartnerCenterClient:
        return self._clients.partner_center(self._providers.get_provider(provider_id)).bind()

    def get(self, provider_id: str) -> dict[str, Any] | None:
        """The partner's registration, or None when there is none."""
        return _registration(self._client(provider_id), self.url)

    def register(self, provider_id: str, callback_url: str, events: list[str]) -> dict[str, Any]:
        """Create or replace the partner's registration; returns Partner Center's answer."""
        client = self._client(provider_id)
        supported = client.get_json(self.url + "/events").get("items", [])
        known = {str(e).lower(): str(e) for e in supported}
        unknown = [e for e in events if e.lower() not in known]
        if unknown:
            raise ValidationFailed({"events": f"not offered by Partner Center: {', '.join(unknown)}; "
                                              f"supported: {', '.join(known.values())}"})
        body = {"WebhookUrl": callback_url, "WebhookEvents": [known[e.lower()] for e in events]}
        method = "PUT" if _registration(client, self.url) is not None else "POST"
        try:
            # POST is safe to replay (a second create is refused with 409), PUT replaces
            return client.send_json(method, self.url, body, replay_safe=True).body
        except ConflictError:
            return client.send_json("PUT", self.url, body, replay_safe=True).body


def _registration(client: PartnerCenterClient, url: str) -> dict[str, Any] | None:
    try:
        return client.get_json(url)
    except NotFoundError:
        return None
