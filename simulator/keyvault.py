"""Key Vault secrets stand-in with the challenge-based bearer flow SecretClient expects.

Secret values are kept in memory only and never logged or shown by the control API.
"""
from __future__ import annotations

import re
import time
import uuid

from simulator.data import KEY_VAULT_RESOURCE
from simulator.state import SimulatorState
from simulator.tokens import TokenIssuer
from simulator.web import HttpError, Request, Response, Router, json_response

SERVICE = "keyvault"
_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


def _kv_error(status: int, code: str, message: str, headers=()) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers=headers)


class KeyVault:
    def __init__(self, state: SimulatorState, issuer: TokenIssuer, base_url: str, authority_host: str):
        self.state, self.issuer, self.base_url, self.authority_host = state, issuer, base_url, authority_host

    def register(self, router: Router) -> None:
        router.add("GET", "/secrets", self.list_secrets, SERVICE)
        router.add("PUT", "/secrets/{name}", self.set_secret, SERVICE)
        router.add("GET", "/secrets/{name}", self.get_secret, SERVICE)
        router.add("GET", "/secrets/{name}/{version}", self.get_secret, SERVICE)
        router.add("DELETE", "/secrets/{name}", self.delete_secret, SERVICE)

    def _challenge(self, message: str) -> Response:
        header = (f'Bearer authorization="{self.authority_host}/{self.state.partner.tenant_id}", '
                  f'resource="{KEY_VAULT_RESOURCE}"')
        return _kv_error(401, "Unauthorized", message, headers=[("WWW-Authenticate", header)])

    def _authorize(self, req: Request) -> None:
        token = req.bearer_token()
        if token is None:
            raise HttpError(self._challenge("AKV10000: Request is missing a Bearer or PoP token."))
        if self.issuer.validate(token, [KEY_VAULT_RESOURCE, KEY_VAULT_RESOURCE + "/"]) is None:
            raise HttpError(self._challenge("AKV10022: Invalid audience, issuer or signature, or the token expired."))

    def _bundle(self, name: str, version: dict, include_value: bool = True) -> dict:
        bundle = {
            "id": f"{self.base_url}/secrets/{name}/{version['version']}",
            "attributes": {"enabled": version["enabled"], "created": version["created"],
                           "updated": version["updated"], "recoveryLevel": "Recoverable+Purgeable",
                           "recoverableDays": 90},
            "tags": version["tags"],
        }
        if version.get("contentType"):
            bundle["contentType"] = version["contentType"]
        if include_value:
            bundle["value"] = version["value"]
        return bundle

    def set_secret(self, req: Request) -> Response:
        self._authorize(req)
        name = req.params["name"]
        if not _NAME.match(name):
            return _kv_error(400, "BadParameter", "The secret name is invalid: use 1-127 letters, digits and dashes.")
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return _kv_error(400, "BadParameter", "Property 'value' is required and must be a string.")
        attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else {}
        now = int(time.time())
        version = {"version": uuid.uuid4().hex, "value": body["value"], "contentType": body.get("contentType"),
                   "tags": body.get("tags") if isinstance(body.get("tags"), dict) else {},
                   "enabled": bool(attributes.get("enabled", True)), "created": now, "updated": now}
        with self.state.lock:
            self.state.secrets.setdefault(name.lower(), []).append({**version, "name": name})
        return json_response(200, self._bundle(name, version))

    def get_secret(self, req: Request) -> Response:
        self._authorize(req)
        name, wanted = req.params["name"], req.params.get("version", "")
        with self.state.lock:
            versions = list(self.state.secrets.get(name.lower(), []))
        if wanted:
            versions = [v for v in versions if v["version"] == wanted]
        if not versions:
            detail = f"(name/id) {name}" + (f"/{wanted}" if wanted else "")
            return _kv_error(404, "SecretNotFound", f"A secret with {detail} was not found in this key vault. "
                                                    f"If you recently deleted this secret you may be able to "
                                                    f"recover it using the correct recovery command.")
        latest = versions[-1]
        return json_response(200, self._bundle(latest["name"], latest))

    def list_secrets(self, req: Request) -> Response:
        self._authorize(req)
        with self.state.lock:
            latest = [versions[-1] for versions in self.state.secrets.values() if versions]
        items = []
        for version in latest:
            item = self._bundle(version["name"], version, include_value=False)
            item["id"] = f"{self.base_url}/secrets/{version['name']}"
            items.append(item)
        return json_response(200, {"value": items, "nextLink": None})

    def delete_secret(self, req: Request) -> Response:
        self._authorize(req)
        name = req.params["name"]
        with self.state.lock:
            versions = self.state.secrets.pop(name.lower(), None)
        if not versions:
            return _kv_error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
        bundle = self._bundle(versions[-1]["name"], versions[-1], include_value=False)
        bundle.update({"recoveryId": f"{self.base_url}/deletedsecrets/{name}",
                       "deletedDate": int(time.time()), "scheduledPurgeDate": int(time.time()) + 90 * 86400})
        return json_response(200, bundle)
