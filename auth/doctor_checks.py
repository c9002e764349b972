"""`pcsync doctor`'s checks of the app's own credential: readable from Key Vault, and accepted by
Entra ID for an app-only token in each provider's partner tenant, whose roles claim shows the
application permissions granted there. Typed results (shared/checks.py), nothing printed.
"""
from __future__ import annotations

from typing import Any, Callable

import requests
from msal.exceptions import MsalServiceError

from shared.checks import NO_TOKEN_FIX, AzureFailure, DoctorCheck, azure_failure, fail, info, ok
from shared.errors import Conflict, NotFound
from shared.providers import ProviderConnection
from shared.settings import Settings, SettingsError

from .entra import (
    IdentityProviderUnavailable,
    build_client,
    client_credential,
    describe_error,
    error_codes,
    graph_scope,
    register_token_result,
    unverified_claims,
)
from .verify import GRAPH_BILLING_ROLE

# AADSTS numbers of a refused client credential -> what to fix
_CREDENTIAL_FIXES = {
    7000215: "the client secret in Key Vault is not the app's: create a new secret in the app registration "
             "and store it in Key Vault",
    7000222: "the client secret expired: create a new one in the app registration and store it in Key Vault",
    700027: "the certificate in Key Vault is not on the app registration: upload its public part there",
    700016: "the app (PCSYNC_CLIENT_ID) is not known in this tenant: check the client id, the provider's tenant "
            "id, and that the app is consented there",
    7000112: "the app registration is disabled: enable it in Entra ID",
}
REDIRECT_URI_NOTE = ("compare it with Authentication > Web in the app registration: reading the registration "
                     "app-only needs the Graph Application.Read.All permission, which pcsync does not ask for")


def app_checks(settings: Settings, secrets: Callable[[], Any],
               providers: list[ProviderConnection] | None) -> list[DoctorCheck]:
    """The Key Vault credential check, then one app-only token check per enabled provider."""
    credential = credential_check(settings, secrets)
    checks = [credential, info("entra app redirect uri", settings.redirect_uri or "(not set)", REDIRECT_URI_NOTE)]
    if providers is None:
        return checks + [info("entra app", "not checked", "fix storage first: the providers' tenants are stored there")]
    enabled = [p for p in providers if p.enabled]
    if credential.failed or not settings.client_id:
        why = "PCSYNC_CLIENT_ID" if not settings.client_id else "the key vault check"
        return checks + [info(f"entra app {p.id}", "not checked", f"fix {why} first") for p in enabled]
    return checks + [app_token_check(settings, secrets(), p) for p in enabled]


def _key_vault_failure(exc: Exception, vault: str) -> DoctorCheck:
    name = "key vault"
    kind, evidence = azure_failure(exc) or (AzureFailure.REFUSED, f"{type(exc).__name__}")
    if kind == AzureFailure.UNREACHABLE:
        return fail(name, f"{vault} {evidence}", "check PCSYNC_KEY_VAULT_URL and that the vault is reachable from "
                                                 "here (firewall, private endpoints)")
    if kind == AzureFailure.NO_TOKEN:
        return fail(name, f"{vault}: {evidence}", NO_TOKEN_FIX)
    if kind == AzureFailure.FORBIDDEN:
        return fail(name, f"{vault}: {evidence}", "give the app's identity the Key Vault Secrets User role on the "
                                                  "vault (Key Vault Secrets Officer to store refresh tokens)")
    return fail(name, f"{vault}: {evidence}", "see the evidence; Key Vault refused the request")


def credential_check(settings: Settings, secrets: Callable[[], Any]) -> DoctorCheck:
    """The client secret (PCSYNC_CLIENT_SECRET_NAME) or certificate (PCSYNC_CLIENT_CERTIFICATE_NAME)
    can be read from Key Vault; its value is never part of the result."""
    name, vault = "key vault", settings.key_vault_url
    secret = settings.client_certificate_name or settings.client_secret_name
    what = "certificate" if settings.client_certificate_name else "client secret"
    try:
        credential = client_credential(settings, secrets())
    except SettingsError as exc:
        return fail(name, str(exc), "set PCSYNC_KEY_VAULT_URL to the vault's URL")
    except NotFound as exc:
        return fail(name, f"{vault}: {exc}", f"store the app registration's {what} in the vault as secret {secret!r}")
    except Conflict as exc:
        return fail(name, f"{vault}: {exc}", "store the certificate as PEM with its private key (Key Vault's "
                                             "certificate export does this)")
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return _key_vault_failure(exc, vault)
    if isinstance(credential, dict):
        return ok(name, f"{what} {secret!r} read from {vault} (thumbprint {credential['thumbprint']})")
    return ok(name, f"{what} {secret!r} read from {vault}")


def _refused(name: str, tenant: str, result: dict[str, Any]) -> DoctorCheck:
    fixes = [_CREDENTIAL_FIXES[c] for c in error_codes(result) if c in _CREDENTIAL_FIXES]
    fix = fixes[0] if fixes else "check the app registration's client id and its secret or certificate"
    return fail(name, f"tenant {tenant}: {describe_error(result)}", fix)


def app_token_check(settings: Settings, secrets: Any, provider: ProviderConnection) -> DoctorCheck:
    """An app-only Graph token for the provider's partner tenant, and its roles claim."""
    name, tenant = f"entra app {provider.id}", provider.tenant_id
    try:
        result = build_client(settings, secrets, tenant).acquire_token_for_client([graph_scope(settings)])
    except (Conflict, IdentityProviderUnavailable) as exc:
        return fail(name, str(exc), "check the provider's tenant id and network access to Entra ID")
    except (requests.RequestException, MsalServiceError) as exc:
        return fail(name, f"Entra ID at {settings.authority_host} failed ({type(exc).__name__})", "try again later")
    if "access_token" not in result:
        return _refused(name, tenant, result)
    register_token_result(result)
    roles = sorted(str(r) for r in unverified_claims(result["access_token"]).get("roles") or [])
    evidence = f"app-only token issued in tenant {tenant}; roles: {', '.join(roles) or '(none)'}"
    if provider.cost_management and GRAPH_BILLING_ROLE not in roles:
        return fail(name, evidence, f"cost management is on: add the Microsoft Graph application permission "
                                    f"{GRAPH_BILLING_ROLE} and grant admin consent in tenant {tenant}")
    return ok(name, evidence)

