"""Entra ID plumbing shared by consent, tokens and verify: msal client construction, the HTTP
session it uses, the app's credential (secret or certificate from Key Vault) and reading claims.

Retries for the token endpoint live here, in the session's transport adapter, and nowhere else:
msal itself remembers a 5xx/429 answer for the request's Retry-After (5 s by default) and
replays it to an immediate second attempt, so a retry loop *above* msal would only see the
cached failure. Below msal, each attempt really reaches Entra.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Protocol

import jwt
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from msal.exceptions import MsalServiceError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.errors import Conflict, Unavailable, UpstreamRefused
from shared.logging import get_logger, register_secret
from shared.settings import DEFAULT_AUTHORITY_HOST, Settings

log = get_logger(__name__)

# Resource ids (audiences), which are not the same thing as the base URL settings: the simulator
# and proxies change the base URL, the audience Entra issues tokens for stays the same. In the
# national clouds the resource id equals that cloud's API base, so those are recognised.
PARTNER_CENTER_RESOURCE = "https://api.partnercenter.microsoft.com"
_NATIONAL_PARTNER_CENTER_RESOURCES = frozenset({"https://partner.partnercenterapi.microsoftonline.cn"})
GRAPH_RESOURCE = "https://graph.microsoft.com"
_NATIONAL_GRAPH_RESOURCES = frozenset(
    {"https://microsoftgraph.chinacloudapi.cn", "https://graph.microsoft.us", "https://dod-graph.microsoft.us"}
)

TOKEN_HTTP_TIMEOUT = (5, 30)  # connect, read (seconds)
TOKEN_HTTP_RETRIES = 3
TOKEN_HTTP_BACKOFF = 0.5  # urllib3: 0 s, 1 s, 2 s between the attempts, plus jitter
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


class IdentityProviderUnavailable(Unavailable):
    """Entra ID could not be reached or kept failing with 5xx after the bounded retries.
    Transient: the Functions runtime (or the operator) should try again later."""


class TokenRequestFailed(UpstreamRefused):
    """Entra ID refused a token request for a reason that new consent would not fix, such as a
    wrong client secret or certificate (AADSTS7000215, AADSTS700027). ``error`` and ``codes``
    carry the OAuth error and AADSTS numbers; the message never contains a token."""

    def __init__(self, message: str, *, error: str | None = None, codes: tuple[int, ...] = ()):
        super().__init__(message)
        self.error = error
        self.codes = codes


class ConfidentialClient(Protocol):
    """The part of ``msal.ConfidentialClientApplication`` that auth/ uses (fakes implement it)."""

    def initiate_auth_code_flow(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]: ...

    def acquire_token_by_auth_code_flow(
        self, auth_code_flow: dict[str, Any], auth_response: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]: ...

    def acquire_token_by_refresh_token(self, refresh_token: str, scopes: list[str], **kwargs: Any) -> dict[str, Any]: ...

    def acquire_token_for_client(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]: ...


ClientFactory = Callable[[str], ConfidentialClient]  # tenant id -> client


def partner_center_scope(settings: Settings) -> str:
    base = settings.partner_center_url.rstrip("/")
    resource = base if base in _NATIONAL_PARTNER_CENTER_RESOURCES else PARTNER_CENTER_RESOURCE
    return f"{resource}/user_impersonation"


def graph_scope(settings: Settings) -> str:
    base = settings.graph_url.rstrip("/")
    resource = base if base in _NATIONAL_GRAPH_RESOURCES else GRAPH_RESOURCE
    return f"{resource}/.default"


class _TimeoutSession(requests.Session):
    """requests has no session-wide timeout and msal passes none; never wait forever."""

    def __init__(self, timeout: Any):
        super().__init__()
        self._timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, **kwargs)


def http_session(settings: Settings, *, retries: int = TOKEN_HTTP_RETRIES) -> requests.Session:
    """A session that verifies TLS against ``settings.ca_bundle`` regardless of the environment.

    ``trust_env=False`` matters: requests lets REQUESTS_CA_BUNDLE override ``session.verify``.
    """
    session = _TimeoutSession(TOKEN_HTTP_TIMEOUT)
    session.verify = settings.ca_bundle or True
    session.trust_env = False
    if retries:
        policy = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=TOKEN_HTTP_BACKOFF,
            backoff_jitter=0.25,
            status_forcelist=TRANSIENT_STATUSES,
            # Token redemption is a POST. Repeating it is safe: a refresh token stays valid after
            # use, and a second redemption of an auth code fails cleanly with invalid_grant.
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
            respect_retry_after_header=False,  # bounded: never sleep for a server-chosen time
        )
        adapter = HTTPAdapter(max_retries=policy)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


def certificate_credential(pem: str) -> dict[str, str]:
    """msal's certificate credential from a Key Vault certificate secret in PEM form
    (private key and certificate in one text, as Key Vault exports it)."""
    register_secret(pem)
    data = pem.encode("utf-8")
    try:
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError):
        raise Conflict(
            "the client certificate secret must hold an unencrypted PEM private key and its certificate"
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    register_secret(key_pem)
    thumbprint = certificate.fingerprint(hashes.SHA1()).hex().upper()  # what the app registration shows
    return {"private_key": key_pem, "thumbprint": thumbprint}


def client_credential(settings: Settings, secrets: Any) -> str | dict[str, str]:
    """The app's own credential, read from Key Vault: a certificate when one is configured
    (PCSYNC_CLIENT_CERTIFICATE_NAME), otherwise the client secret."""
    certificate_name = settings.client_certificate_name
    if certificate_name:
        return certificate_credential(secrets.get_secret(certificate_name))
    secret = secrets.get_secret(settings.client_secret_name)
    register_secret(secret)
    return secret


def build_client(
    settings: Settings, secrets: Any, tenant_id: str, *, token_cache: msal.TokenCache | None = None
) -> msal.ConfidentialClientApplication:
    """A confidential client for the partner tenant. Construction fetches the OpenID
    configuration, so callers keep the result for as long as they can."""
    settings.require("client_id")
    credential = client_credential(settings, secrets)
    options: dict[str, Any] = {}
    if settings.authority_host.rstrip("/") != DEFAULT_AUTHORITY_HOST:
        options["instance_discovery"] = False
    try:
        return msal.ConfidentialClientApplication(
            settings.client_id,
            client_credential=credential,
            authority=f"{settings.authority_host.rstrip('/')}/{tenant_id}",
            http_client=http_session(settings),
            token_cache=token_cache if token_cache is not None else msal.TokenCache(),
            **options,
        )
    except (requests.RequestException, MsalServiceError, RuntimeError) as exc:  # 5xx after retries, network
        raise IdentityProviderUnavailable(
            f"Entra ID at {settings.authority_host} could not be reached ({type(exc).__name__})"
        ) from None
    except ValueError as exc:
        # msal raises ValueError when the authority has no OpenID configuration: unknown tenant
        log.warning("msal refused authority for tenant %s: %s", tenant_id, exc)
        raise Conflict(
            f"Entra ID at {settings.authority_host} does not know tenant {tenant_id}: "
            "check the provider's tenant id (the partner's Microsoft ID)"
        ) from None


def unverified_claims(token: str | None) -> dict[str, Any]:
    """Claims of a JWT without checking its signature.

    Only for reading facts Entra stated about the sign-in (amr, tid, upn, roles) in a token we
    just received from Entra over TLS; never to authenticate a caller.
    """
    if not token:
        return {}
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def error_codes(result: dict[str, Any]) -> tuple[int, ...]:
    """AADSTS numbers of an msal error result (``error_codes`` or parsed from the description)."""
    codes = [c for c in (result.get("error_codes") or []) if isinstance(c, int)]
    if not codes:
        codes = [int(m) for m in re.findall(r"AADSTS(\d+)", str(result.get("error_description") or ""))]
    return tuple(dict.fromkeys(codes))


def describe_error(result: dict[str, Any]) -> str:
    """``invalid_grant AADSTS700082``: the error and its codes, never the description's trace ids."""
    codes = " ".join(f"AADSTS{c}" for c in error_codes(result))
    return " ".join(p for p in (str(result.get("error") or "error"), codes) if p)


def register_token_result(result: dict[str, Any]) -> None:
    """Mask every token of an msal result in all logs from now on."""
    for key in ("access_token", "refresh_token", "id_token"):
        register_secret(result.get(key))
