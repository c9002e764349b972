"""Entra ID stand-in: OIDC discovery, JWKS, sign-in page, token endpoint.

Enough of the v2 endpoints for msal's ConfidentialClientApplication and azure-identity's
ClientSecretCredential to work unchanged against https://127.0.0.1:PORT/{tenant}.
"""
from __future__ import annotations

import base64
import datetime as dt
import hmac
import html
import secrets
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from simulator.state import AuthCode, RefreshTokenRecord, SimulatorState
from simulator.tokens import ScopeError, TokenIssuer, pkce_s256, split_scopes
from simulator.web import HttpError, Request, Response, Router, html_response, json_response, route

SERVICE = "entra"
SIGN_IN_ACTIONS = ("signin_mfa", "signin_nomfa", "decline")
# what a refresh-token redemption answers while POST /_sim/tokens/fail set a reason: (error, AADSTS, message)
REFRESH_FAILURES = {
    "expired": ("invalid_grant", 700082, "AADSTS700082: The refresh token has expired due to inactivity. The token "
                                         "was issued on 2026-01-01T00:00:00.0000000Z and was inactive for 90.00:00:00."),
    "revoked": ("invalid_grant", 50173, "AADSTS50173: The provided grant has expired due to it being revoked, a "
                                        "fresh auth token is needed. The user might have changed or reset their "
                                        "password."),
    "mfa": ("interaction_required", 50076, "AADSTS50076: Due to a configuration change made by your administrator, "
                                           "or because you moved to a new location, you must use multi-factor "
                                           "authentication to access the resource."),
    "conditional_access": ("invalid_grant", 53003, "AADSTS53003: Access has been blocked by Conditional Access "
                                                   "policies. The access policy does not allow token issuance."),
}


class EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, message: str):
        super().__init__(message)
        self.status, self.error, self.code, self.message = status, error, code, message


def entra_error_response(err: EntraError) -> Response:
    now = dt.datetime.now(dt.timezone.utc)
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    description = (f"{err.message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
                   f"Timestamp: {stamp}")
    return json_response(err.status, {
        "error": err.error, "error_description": description, "error_codes": [err.code], "timestamp": stamp,
        "trace_id": trace_id, "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
    }, headers=[("Cache-Control", "no-store"), ("Pragma", "no-cache")])


def redirect_uri_allowed(uri: str) -> bool:
    """Any https URI, or http on localhost (Entra's rule for loopback redirect URIs)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")


def _with_query(uri: str, params: dict) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class Entra:
    def __init__(self, state: SimulatorState, issuer: TokenIssuer, base_url: str):
        self.state, self.issuer, self.base_url = state, issuer, base_url

    # ---- routing ------------------------------------------------------------------------
    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

    def _check_tenant(self, tenant: str) -> None:
        known = {self.state.partner.tenant_id, self.state.partner.domain.lower(), "organizations", "common"}
        if tenant.lower() not in known:
            raise HttpError(entra_error_response(EntraError(
                400, "invalid_tenant", 90002, f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you "
                                              f"have the correct tenant ID and are signing into the correct cloud.")))

    # ---- discovery ----------------------------------------------------------------------
    @route("GET", "/common/discovery/instance")
    def instance_discovery(self, req: Request) -> Response:
        host = urlsplit(self.base_url).netloc
        return json_response(200, {
            "tenant_discovery_endpoint": f"{self.base_url}/{self.state.partner.tenant_id}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    @route("GET", "/{tenant}/v2.0/.well-known/openid-configuration")
    def openid_configuration(self, req: Request) -> Response:
        self._check_tenant(req.params["tenant"])
        tenant = self.state.partner.tenant_id
        base = f"{self.base_url}/{tenant}"
        return json_response(200, {
            "issuer": self.issuer.issuer,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "name",
                                 "tid", "oid", "ver"],
            "tenant_region_scope": "NA", "cloud_instance_name": "microsoftonline.com",
        })

    @route("GET", "/{tenant}/discovery/v2.0/keys")
    def keys(self, req: Request) -> Response:
        self._check_tenant(req.params["tenant"])
        return json_response(200, self.issuer.jwks())

    # ---- sign-in ------------------------------------------------------------------------
    def _validate_authorize_request(self, query: dict) -> str | None:
        """Returns an error message for requests Entra would refuse before showing a page."""
        if query.get("client_id") != self.state.app.client_id:
            return (f"AADSTS700016: Application with identifier '{query.get('client_id')}' was not found in the "
                    f"directory '{self.state.partner.domain}'.")
        redirect = query.get("redirect_uri", "")
        if not redirect or not redirect_uri_allowed(redirect):
            return (f"AADSTS50011: The redirect URI '{redirect}' specified in the request does not match the "
                    f"redirect URIs configured for the application '{self.state.app.client_id}'.")
        if "code" not in query.get("response_type", "").split():
            return "AADSTS900144: The request body must contain the following parameter: 'response_type=code'."
        method = query.get("code_challenge_method", "plain" if query.get("code_challenge") else "")
        if query.get("code_challenge") and method not in ("S256", "plain"):
            return "AADSTS501491: Invalid code_challenge_method."
        try:
            split_scopes(query.get("scope", "openid"))
        except ScopeError as exc:
            return str(exc)
        return None

    @route("GET", "/{tenant}/oauth2/v2.0/authorize")
    def authorize_page(self, req: Request) -> Response:
        self._check_tenant(req.params["tenant"])
        query = dict(req.query)
        problem = self._validate_authorize_request(query)
        if problem:
            return html_response(400, f"<html><body><h1>Sign in</h1><p id='error'>{html.escape(problem)}</p></body></html>")
        user = self.state.user
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in query.items() if k != "action")
        mfa_note = "" if user.mfa_registered else "<p id='mfa-note'>MFA is not registered for this user.</p>"
        page = f"""<!doctype html>
<html><head><title>Sign in to your account (simulated)</title></head>
<body>
<h1>Sign in (pcsync simulator)</h1>
<p>Signing in as <strong id="upn">{html.escape(user.upn)}</strong> to application
<code>{html.escape(self.state.app.client_id)}</code>.</p>
{mfa_note}
<form method="post" action="{html.escape(req.path)}" id="signin">
{hidden}
<button type="submit" name="action" value="signin_mfa" id="signin-mfa">Sign in with MFA</button>
<button type="submit" name="action" value="signin_nomfa" id="signin-nomfa">Sign in without MFA</button>
<button type="submit" name="action" value="decline" id="decline">Decline consent</button>
</form>
</body></html>"""
        return html_response(200, page)

    @route("POST", "/{tenant}/oauth2/v2.0/authorize")
    def authorize_submit(self, req: Request) -> Response:
        self._check_tenant(req.params["tenant"])
        fields = dict(req.query)
        fields.update(req.form())
        action = fields.pop("action", "")
        if action not in SIGN_IN_ACTIONS:
            return html_response(400, f"<html><body><p id='error'>Unknown action; use one of "
                                      f"{', '.join(SIGN_IN_ACTIONS)}.</p></body></html>")
        problem = self._validate_authorize_request(fields)
        if problem:
            return html_response(400, f"<html><body><p id='error'>{html.escape(problem)}</p></body></html>")
        params = self.complete_sign_in(fields, action)
        redirect = fields["redirect_uri"]
        if fields.get("response_mode") == "form_post":
            inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in params.items())
            return html_response(200, f"""<html><head><title>Working...</title></head>
<body onload="document.forms[0].submit()"><form method="POST" action="{html.escape(redirect)}">{inputs}
<noscript><button type="submit">Continue</button></noscript></form></body></html>""")
        return Response(302, headers=[("Location", _with_query(redirect, params)), ("Content-Length", "0")])

    def complete_sign_in(self, query: dict, action: str) -> dict[str, str]:
        """Runs the user's choice; returns the parameters sent back to the redirect URI."""
        state = query.get("state")
        if action == "decline":
            params = {"error": "access_denied",
                      "error_description": "AADSTS65004: User declined to consent to access the app.",
                      "error_subcode": "cancel"}
        else:
            # A user without registered MFA cannot complete an MFA sign-in.
            mfa = action == "signin_mfa" and self.state.user.mfa_registered
            code = secrets.token_urlsafe(48)
            with self.state.lock:
                self.state.auth_codes[code] = AuthCode(
                    code=code, client_id=query["client_id"], redirect_uri=query["redirect_uri"],
                    scopes=query.get("scope", "").split(), code_challenge=query.get("code_challenge"),
                    code_challenge_method=query.get("code_challenge_method", "plain"),
                    nonce=query.get("nonce"), mfa=mfa, issued_at=self.state.clock.now())
            params = {"code": code, "client_info": self.issuer.client_info(),
                      "session_state": str(uuid.uuid4())}
        if state is not None:
            params["state"] = state
        return params

    def sign_in_redirect(self, auth_uri: str, choice: str) -> str:
        """Control shortcut: the redirect URL a browser would be sent to after the choice."""
        query = dict(parse_qsl(urlsplit(auth_uri).query, keep_blank_values=True))
        problem = self._validate_authorize_request(query)
        if problem:
            raise ValueError(problem)
        return _with_query(query["redirect_uri"], self.complete_sign_in(query, choice))

    # ---- token endpoint -----------------------------------------------------------------
    @route("POST", "/{tenant}/oauth2/v2.0/token")
    def token(self, req: Request) -> Response:
        self._check_tenant(req.params["tenant"])
        form = req.form()
        try:
            self._authenticate_client(req, form)
            grant = form.get("grant_type", "")
            if grant == "authorization_code":
                return self._grant_authorization_code(form)
            if grant == "refresh_token":
                return self._grant_refresh_token(form)
            if grant == "client_credentials":
                return self._grant_client_credentials(form)
            raise EntraError(400, "unsupported_grant_type", 70003,
                             f"AADSTS70003: The app requested an unsupported grant type '{grant}'.")
        except EntraError as err:
            return entra_error_response(err)
        except ScopeError as err:
            return entra_error_response(EntraError(400, "invalid_scope", 70011, str(err)))

    def _authenticate_client(self, req: Request, form: dict) -> None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = req.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:]).decode()
                client_id, _, secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        if not client_id:
            raise EntraError(400, "invalid_request", 900144,
                             "AADSTS900144: The request body must contain the following parameter: 'client_id'.")
        if client_id != self.state.app.client_id:
            raise EntraError(400, "unauthorized_client", 700016,
                             f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                             f"directory '{self.state.partner.domain}'.")
        if form.get("client_assertion"):
            raise EntraError(401, "invalid_client", 700027,
                             "AADSTS700027: Client assertion is not supported by the simulator; use a secret.")
        if not secret:
            raise EntraError(401, "invalid_client", 7000218,
                             "AADSTS7000218: The request body must contain the following parameter: "
                             "'client_assertion' or 'client_secret'.")
        if not hmac.compare_digest(secret.encode(), self.state.app.client_secret.encode()):
            raise EntraError(401, "invalid_client", 7000215,
                             "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                             "request is the client secret value, not the client secret ID, for a secret added "
                             f"to app '{client_id}'.")

    def _grant_authorization_code(self, form: dict) -> Response:
        code_value = form.get("code", "")
        now = self.state.clock.now()
        with self.state.lock:
            code = self.state.auth_codes.get(code_value)
            if code is None:
                raise EntraError(400, "invalid_grant", 9002313,
                                 "AADSTS9002313: Invalid request. Request is malformed or invalid.")
            if code.redeemed:
                raise EntraError(400, "invalid_grant", 54005,
                                 "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with "
                                 "a new valid code or use an existing refresh token.")
            if (now - code.issued_at).total_seconds() > self.state.config.auth_code_lifetime_seconds:
                raise EntraError(400, "invalid_grant", 70008,
                                 "AADSTS70008: The provided authorization code or refresh token has expired due "
                                 "to inactivity. Send a new interactive authorization request for this user and "
                                 "resource.")
            if code.client_id != form.get("client_id", code.client_id):
                raise EntraError(400, "invalid_grant", 70000, "AADSTS70000: The provided value for the 'code' "
                                                              "parameter is not valid for this client.")
            if form.get("redirect_uri", "") != code.redirect_uri:
                raise EntraError(400, "invalid_grant", 50011,
                                 f"AADSTS50011: The redirect URI '{form.get('redirect_uri', '')}' specified in the "
                                 f"request does not match the redirect URI used to obtain the authorization code.")
            if code.code_challenge:
                verifier = form.get("code_verifier", "")
                expected = pkce_s256(verifier) if code.code_challenge_method == "S256" else verifier
                if not verifier or not hmac.compare_digest(expected, code.code_challenge):
                    raise EntraError(400, "invalid_grant", 501481,
                                     "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in "
                                     "the authorization request.")
            code.redeemed = True
            del self.state.auth_codes[code_value]
        scope_text = form.get("scope") or " ".join(code.scopes)
        return self._user_tokens(scope_text, code.mfa, nonce=code.nonce,
                                 include_refresh="offline_access" in (scope_text + " " + " ".join(code.scopes)))

    def _grant_refresh_token(self, form: dict) -> Response:
        token = form.get("refresh_token", "")
        now = self.state.clock.now()
        inactivity = dt.timedelta(days=self.state.config.refresh_token_inactivity_days)
        with self.state.lock:
            record = self.state.refresh_tokens.get(token)
            if record is None:
                raise EntraError(400, "invalid_grant", 9002313,
                                 "AADSTS9002313: Invalid request. Request is malformed or invalid.")
            if record.client_id != form.get("client_id"):
                raise EntraError(400, "invalid_grant", 70000,
                                 "AADSTS70000: Provided grant is invalid or malformed.")
            if record.revoked:
                raise EntraError(400, "invalid_grant", 50173,
                                 f"AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth "
                                 f"token is needed. The user might have changed or reset their password. The grant "
                                 f"was issued on '{record.issued_at:%Y-%m-%dT%H:%M:%S.%fZ}'.")
            forced = REFRESH_FAILURES.get(self.state.refresh_failure or "")
            if forced is not None:  # POST /_sim/tokens/fail
                raise EntraError(400, *forced)
            idle = now - record.last_used
            if idle > inactivity:
                days = idle.days
                raise EntraError(400, "invalid_grant", 700082,
                                 f"AADSTS700082: The refresh token has expired due to inactivity. The token was "
                                 f"issued on {record.issued_at:%Y-%m-%dT%H:%M:%S.%fZ} and was inactive for "
                                 f"{days}.00:00:00.")
            record.last_used = now
            mfa = record.mfa
        scope_text = form.get("scope", "openid")
        return self._user_tokens(scope_text, mfa, nonce=None, include_refresh=True)

    def _user_tokens(self, scope_text: str, mfa: bool, nonce: str | None, include_refresh: bool) -> Response:
        resource, names, oidc = split_scopes(scope_text)
        # a Conditional Access "trusted location" exemption: no MFA prompt, so no "mfa" in amr
        mfa = mfa and not self.state.config.trusted_location_skips_mfa
        access_token, granted = self.issuer.delegated_access_token(resource, names, mfa)
        lifetime = self.state.config.access_token_lifetime_seconds
        body = {"token_type": "Bearer", "scope": granted, "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": access_token, "client_info": self.issuer.client_info()}
        if include_refresh:
            # Rotation: every redemption returns a new refresh token; the old one keeps working.
            new_token = "sim.rt." + secrets.token_urlsafe(64)
            now = self.state.clock.now()
            with self.state.lock:
                self.state.refresh_tokens[new_token] = RefreshTokenRecord(
                    client_id=self.state.app.client_id, user_oid=self.state.user.oid, mfa=mfa,
                    issued_at=now, last_used=now)
            body["refresh_token"] = new_token
        if "openid" in oidc or nonce:
            body["id_token"] = self.issuer.id_token(nonce)
        return json_response(200, body, headers=[("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _grant_client_credentials(self, form: dict) -> Response:
        scope_text = form.get("scope", "")
        scopes = scope_text.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise EntraError(400, "invalid_scope", 1002012,
                             f"AADSTS1002012: The provided value for scope {scope_text} is not valid. Client "
                             f"credential flows must have a scope value with /.default suffixed to the resource "
                             f"identifier (application ID URI).")
        resource, _, _ = split_scopes(scope_text)
        lifetime = self.state.config.access_token_lifetime_seconds
        return json_response(200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                                   "access_token": self.issuer.app_access_token(resource)},
                             headers=[("Cache-Control", "no-store"), ("Pragma", "no-cache")])
