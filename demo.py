"""`make demo`: the local end-to-end run on Azurite + the simulator.

Starts Azurite and the simulator, registers a provider connection and shows it, then runs each
feature that exists against the simulator. The last line printed is one JSON object summarising
what happened, so scripts can check it.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from devservices import running_azurite
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings

PROVIDER_ID = "microsoft-us"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def create_provider(runtime: Runtime, tenant_id: str) -> dict[str, Any]:
    from admin import providers_service

    provider, _ = providers_service.put_provider(runtime.providers, PROVIDER_ID, {
        "name": "Microsoft US Partner Center",
        "countryCode": "US",
        "currencyCode": "USD",
        "tenantId": tenant_id,
        "billingStartDay": 1,
        "resellerRelationshipUrl": "https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship",
        "costManagement": True,
        "usageMismatchTolerance": "0.5%",
        "azureSpecializations": ["kubernetes"],
    })
    return provider.to_json()


def main() -> int:
    summary: dict[str, Any] = {}
    with running_azurite() as storage:
        step("Azurite started (tables and queues in memory)")
        settings = Settings.from_environment({"PCSYNC_STORAGE": storage})
        runtime = Runtime.from_settings(settings)
        set_runtime(runtime)

        step("Provider connection")
        provider = create_provider(runtime, "3b33e682-00c3-41ee-9dd2-a548adf56438")
        print(json.dumps(runtime.providers.get_provider(PROVIDER_ID).to_json(), indent=2))
        summary["provider"] = provider["id"]
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
