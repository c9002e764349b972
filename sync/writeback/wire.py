"""Small facts about a write-back's calls shared by its appliers: the MS-RequestId it sends,
the code a failure is recorded under, and the refusal's wording."""
from __future__ import annotations

import uuid

from shared.partner_center_errors import PartnerCenterError

_REQUEST_ID_NAMESPACE = uuid.UUID("5f0c2b1e-3d4a-4c6b-9a57-0b9f7f3c2a10")


def request_id(provider_id: str, idempotency_key: str, what: str) -> str:
    """One MS-RequestId per (write-back, resource version): a redelivery that sends the same
    write again reuses it, which is what Partner Center's idempotency keys on."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{provider_id}|{idempotency_key}|{what}"))


def error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    if code is not None and str(code) != "0":  # 0 is the simulator's / APIM's "no code"
        return str(code)
    return f"HTTP {status}" if status else type(exc).__name__


def refused(what: str, exc: PartnerCenterError) -> str:
    return f"Partner Center refused {what}: {exc.description or exc}"


__all__ = ["error_code", "refused", "request_id"]
