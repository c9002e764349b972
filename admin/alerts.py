"""Alerts for the admin page (``GET /api/alerts``): rows from a list of sources.

A source is a callable ``(provider) -> iterable of Alert``; the composition root hands the
service its sources. Two kinds exist: alerts computed here when asked (the consent about to
expire), and the rows features store in table ``alerts`` (shared/alerts.py: the write-back's
``est_without_choice`` and ``end_of_term_drift``), read by :func:`stored_alerts`. A feature
that stores its alerts there is listed without a change here.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Sequence

from shared.alerts import Alert, AlertRows, Severity
from shared.clock import parse_iso, to_iso, utc_now
from shared.providers import ProviderConnection, ProviderRepository

from .doctor import CONSENT_WARNING_DAYS

AlertSource = Callable[[ProviderConnection], Iterable[Alert]]


def days_left(provider: ProviderConnection, now: datetime) -> int | None:
    """Whole days until the refresh token expires if unused (negative once it has)."""
    expires = parse_iso(provider.refresh_token_expires_at)
    return (expires - now).days if expires else None


def consent_alerts(clock: Callable[[], datetime] = utc_now) -> AlertSource:
    """Lost consent, and a refresh token that expires within the infra alert's 14 days."""
    def source(provider: ProviderConnection) -> Iterable[Alert]:
        reconsent = "Generate Consent Link and sign in again as the integration user"
        blocked = provider.consent_blocked
        if blocked:
            yield Alert("consent_lost", Severity.CRITICAL, provider.id,
                        f"consent {blocked}: {provider.consent_error or 'the stored consent no longer works'}",
                        fix=reconsent)
            return
        if not provider.consent_active:
            return
        left = days_left(provider, clock())
        if left is not None and left < CONSENT_WARNING_DAYS:
            yield Alert("consent_expiring", Severity.CRITICAL if left < 3 else Severity.WARNING, provider.id,
                        f"the refresh token expires in {max(left, 0)} days if unused",
                        since=to_iso(parse_iso(provider.refresh_token_expires_at)),
                        fix="run a sync (each token refresh renews the window) or " + reconsent.lower())
    return source


def stored_alerts(rows: AlertRows) -> AlertSource:
    """The provider's open rows of table ``alerts``, whichever feature raised them."""
    def source(provider: ProviderConnection) -> Iterable[Alert]:
        return rows.open_alerts(provider.id)
    return source


class AlertService:
    def __init__(self, providers: ProviderRepository, sources: Sequence[AlertSource]):
        self._providers = providers
        self._sources = tuple(sources)

    def list_alerts(self, provider_id: str | None = None) -> list[Alert]:
        providers = [self._providers.get_provider(provider_id)] if provider_id else \
            list(self._providers.list_providers(enabled_only=True))
        alerts: list[Alert] = []
        for provider in providers:
            for source in self._sources:
                alerts.extend(source(provider))
        return sorted(alerts, key=lambda a: (a.severity != Severity.CRITICAL, a.provider, a.kind, a.customer or "",
                                             a.subscription or ""))


__all__ = ["Alert", "AlertService", "AlertSource", "Severity", "consent_alerts", "days_left", "stored_alerts"]
