"""The result of one check (a `pcsync doctor` line, a Verify Connectivity step), and how an Azure
SDK failure reads in one.

Here, not in admin/ or auth/, because both produce checks (admin: settings, storage, consent
health; auth: the app credential and its tokens, and Verify Connectivity) and neither may import
the other.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class CheckStatus(enum.StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    INFO = "info"  # a fact worth knowing that the doctor cannot (or need not) judge


@dataclass(frozen=True)
class Check:
    """One named check: its status, the evidence (an HTTP status, an error code, what was read)
    and, when it did not pass, the fix in plain words."""

    name: str
    status: CheckStatus
    evidence: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == CheckStatus.FAIL

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        """The doctor's form (``status``: ok, FAIL or info)."""
        return {"name": self.name, "status": str(self.status), "evidence": self.evidence, "fix": self.fix}

    def verdict_json(self) -> dict[str, Any]:
        """Verify Connectivity's stored form (``passed``: true or false)."""
        return {"name": self.name, "passed": self.passed, "evidence": self.evidence, "fix": self.fix}

    def line(self) -> str:
        text = f"[{self.status}] {self.name}: {self.evidence}"
        return f"{text} — {self.fix}" if self.fix else text


DoctorCheck = Check  # the doctor's name for it


def ok(name: str, evidence: str) -> Check:
    return Check(name, CheckStatus.OK, evidence)


def fail(name: str, evidence: str, fix: str) -> Check:
    return Check(name, CheckStatus.FAIL, evidence, fix)


def info(name: str, evidence: str, fix: str = "") -> Check:
    return Check(name, CheckStatus.INFO, evidence, fix)


class AzureFailure(enum.Enum):
    UNREACHABLE = "unreachable"  # no connection, or no answer
    NO_TOKEN = "no token"  # the app's credential could not get a token at all
    FORBIDDEN = "forbidden"  # 401/403: the identity lacks a role (or the key is wrong)
    REFUSED = "refused"  # any other answer


def azure_failure(exc: BaseException) -> tuple[AzureFailure, str] | None:
    """What kind of failure an Azure SDK error is, and its evidence (type, HTTP status, error
    code; never the SDK's full text, which can be pages long). None for anything else."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError

    if not isinstance(exc, AzureError):
        return None
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return AzureFailure.UNREACHABLE, f"could not be reached ({type(exc).__name__})"
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        return AzureFailure.NO_TOKEN, f"no token for the app's identity ({type(exc).__name__})"
    code = getattr(getattr(exc, "error", None), "code", None) or getattr(exc, "error_code", None)
    evidence = f"HTTP {status}" + (f" {code}" if code else "")
    if status in (401, 403):
        return AzureFailure.FORBIDDEN, evidence
    return AzureFailure.REFUSED, evidence


NO_TOKEN_FIX = ("check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (locally) or the Function App's "
                "managed identity")
