"""The consent start page: what the link in the Generate Consent Link dialog opens.

The integration user opens ``/api/admin/consent?state=...`` in a private window, reads what is
about to happen and presses **Start Consent Process**, which goes to the Entra sign-in of the
flow the link was made for. The state is the credential (random, single use, 15 minutes), as for
the callback: the page shows the sign-in address of a live flow and nothing else. Flows are
read from table ``consentflows`` by their state (written by auth/consent.py; named in
admin/providers.py, since admin does not import auth).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.clock import parse_iso
from shared.tables import TableStore, escape_key

from .providers import CONSENT_FLOW_PARTITION, CONSENT_FLOW_PROVIDER_COLUMN, CONSENT_FLOWS_TABLE

MAX_STATE_LENGTH = 256


@dataclass(frozen=True)
class LiveFlow:
    sign_in_url: str  # where Start Consent Process goes
    provider_id: str | None
    expires_at: str | None


@dataclass(frozen=True)
class StartPage:
    status: int
    title: str
    message: str
    flow: LiveFlow | None = None  # None: the link cannot be used


UNKNOWN = StartPage(404, "Consent link not valid", "This consent link is unknown. Ask the pcsync administrator "
                                                   "for a new link.")
USED = StartPage(410, "Consent link already used", "This consent link was already used. Ask the pcsync "
                                                   "administrator for a new link.")
EXPIRED = StartPage(410, "Consent link expired", "This consent link is older than 15 minutes. Ask the pcsync "
                                                 "administrator for a new link.")


def consent_start(tables: TableStore, state: str | None, *, now: datetime) -> StartPage:
    state = (state or "").strip()
    if not state or len(state) > MAX_STATE_LENGTH:
        return UNKNOWN
    row: dict[str, Any] | None = tables.table(CONSENT_FLOWS_TABLE).find_entity(CONSENT_FLOW_PARTITION,
                                                                                escape_key(state))
    if row is None:
        return UNKNOWN
    if row.get("used_at"):
        return USED
    expires = parse_iso(row.get("expires_at"))
    if expires is None or expires <= now:
        return EXPIRED
    try:
        url = json.loads(row.get("flow") or "{}").get("auth_uri")
    except ValueError:
        url = None
    if not isinstance(url, str) or not url.startswith("https://"):
        return UNKNOWN
    return StartPage(200, "Consent for pcsync", "",
                     LiveFlow(url, row.get(CONSENT_FLOW_PROVIDER_COLUMN), row.get("expires_at")))


__all__ = ["LiveFlow", "StartPage", "consent_start"]
