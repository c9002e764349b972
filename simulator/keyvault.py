"""Key Vault secrets stand-in with the challenge-based bearer flow SecretClient expects.

Secret values are kept in memory only and never logged or shown by the control API.

The vault behaves like one with soft delete and purge protection (as infra/ deploys it):
``DELETE /secrets/{name}`` moves every version to the deleted collection and answers a
DeletedSecretBundle; ``GET /deletedsecrets/{name}`` (what SecretClient's delete poller calls)
finds it there; ``POST /deletedsecrets/{name}/recover`` brings it back. Until then the name cannot
be reused (``PUT`` answers 409, as Key Vault does). There is no purge.
"""
from __future__ import annotations

import re
import time
import uuid

from simulator.data import KEY_VAULT_RESOURCE
from simulator.state import SimulatorState
from simulator.tokens import TokenIssuer
from simulator.web import HttpError, Request, Response, Router, json_response, route

SERVICE = "keyvault"
_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
RETENTION_DAYS = 90  # softDeleteRetentionInDays of the deployed vault


def _kv_error(status: int, code: str, message: str, headers=()) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers=headers)


class KeyVault:
    def __init__(self, state: SimulatorState, issuer: TokenIssuer, base_url: str, authority_host: str):
        self.state, self.issuer, self.base_url, self.authority_host = state, issuer, base_url, authority_host

    def register(self, router: Router) -> None:
        router.add_handlers(self, SERVICE)

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
                           "recoverableDays": RETENTION_DAYS},
            "tags": version["tags"],
        }
        if version.get("contentType"):
            bundle["contentType"] = version["contentType"]
        if include_value:
            bundle["value"] = version["value"]
        return bundle

    @route("PUT", "/secrets/{name}")
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
            if name.lower() in self.state.deleted_secrets:
                return json_response(409, {"error": {
                    "code": "Conflict",
                    "message": f"Secret {name} is currently in a deleted but recoverable state, and its name "
                               f"cannot be reused; in this state, the secret can only be recovered or purged.",
                    "innererror": {"code": "ObjectIsDeletedButRecoverable"}}})
            self.state.secrets.setdefault(name.lower(), []).append({**version, "name": name})
        return json_response(200, self._bundle(name, version))

    @route("GET", "/secrets/{name}")
    @route("GET", "/secrets/{name}/{version}")
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

    @route("GET", "/secrets")
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

    def _deleted_bundle(self, record: dict) -> dict:
        latest = record["versions"][-1]
        bundle = self._bundle(latest["name"], latest, include_value=False)
        bundle.update({"recoveryId": f"{self.base_url}/deletedsecrets/{latest['name']}",
                       "deletedDate": record["deletedDate"], "scheduledPurgeDate": record["scheduledPurgeDate"]})
        return bundle

    @route("DELETE", "/secrets/{name}")
    def delete_secret(self, req: Request) -> Response:
        self._authorize(req)
        name = req.params["name"]
        now = int(time.time())
        with self.state.lock:
            versions = self.state.secrets.pop(name.lower(), None)
            if versions:
                record = {"versions": versions, "deletedDate": now,
                          "scheduledPurgeDate": now + RETENTION_DAYS * 86400}
                self.state.deleted_secrets[name.lower()] = record
        if not versions:
            return _kv_error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault. "
                                                    f"If you recently deleted this secret you may be able to "
                                                    f"recover it using the correct recovery command.")
        return json_response(200, self._deleted_bundle(record))

    def _deleted_record(self, name: str, recover: bool = False) -> dict:
        """The deleted secret's record, 404 if there is none; recover=True also moves it back to the
        live secrets (under the same lock, so a concurrent PUT sees either state, never both)."""
        with self.state.lock:
            deleted = self.state.deleted_secrets
            record = deleted.pop(name.lower(), None) if recover else deleted.get(name.lower())
            if recover and record is not None:
                self.state.secrets[name.lower()] = record["versions"]
        if record is None:
            raise HttpError(_kv_error(404, "SecretNotFound", f"Deleted Secret not found: {name}"))
        return record

    @route("GET", "/deletedsecrets/{name}")
    def get_deleted_secret(self, req: Request) -> Response:
        self._authorize(req)
        return json_response(200, self._deleted_bundle(self._deleted_record(req.params["name"])))

    @route("POST", "/deletedsecrets/{name}/recover")
    def recover_deleted_secret(self, req: Request) -> Response:
        self._authorize(req)
        latest = self._deleted_record(req.params["name"], recover=True)["versions"][-1]
        return json_response(200, self._bundle(latest["name"], latest, include_value=False))
