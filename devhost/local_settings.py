"""local.settings.json as ``func start`` reads it: its Values become the process environment (a
variable already set in the environment wins), and the local host's function key lives there as
Values.PCSYNC_LOCAL_FUNCTION_KEY (generated and written back when missing)."""
from __future__ import annotations

import json
import os
import pathlib
import secrets
from typing import Any, MutableMapping

from shared.errors import NotConfigured

FUNCTION_KEY_SETTING = "PCSYNC_LOCAL_FUNCTION_KEY"
SAMPLE = pathlib.Path(__file__).resolve().parent.parent / "local.settings.json.sample"


class LocalSettingsError(NotConfigured):
    """local.settings.json is missing or unreadable; the message says which file and why."""


def read(path: pathlib.Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LocalSettingsError(f"{path} not found: copy local.settings.json.sample there and fill it in, "
                                 "or run `pcsync serve --simulator` to get one for the simulator") from None
    except (OSError, ValueError) as exc:
        raise LocalSettingsError(f"{path}: not a readable local.settings.json ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("Values", {}), dict):
        raise LocalSettingsError(f"{path}: \"Values\" must be an object of app settings")
    if document.get("IsEncrypted"):
        raise LocalSettingsError(f"{path}: encrypted settings (IsEncrypted: true) are not supported; "
                                 "run `func settings decrypt` first")
    return document


def write(path: pathlib.Path, document: dict[str, Any]) -> None:
    """Written owner-only and atomically: the file holds secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=2)
        fh.write("\n")
    os.replace(partial, path)


def new_function_key() -> str:
    return secrets.token_urlsafe(32)


def ensure_function_key(path: pathlib.Path, environ: MutableMapping[str, str]) -> str:
    """The function key: the environment's, else the file's, else a new one written to the file."""
    if environ.get(FUNCTION_KEY_SETTING, "").strip():
        return environ[FUNCTION_KEY_SETTING].strip()
    document = read(path)
    values = document.setdefault("Values", {})
    key = str(values.get(FUNCTION_KEY_SETTING) or "").strip()
    if not key:
        key = values[FUNCTION_KEY_SETTING] = new_function_key()
        write(path, document)
    environ[FUNCTION_KEY_SETTING] = key
    return key


def load_into(path: pathlib.Path, environ: MutableMapping[str, str]) -> dict[str, str]:
    """Put the file's Values into ``environ`` where not already set; returns the Values."""
    values = {k: str(v) for k, v in read(path).get("Values", {}).items()}
    for name, value in values.items():
        environ.setdefault(name, value)
    return values


def sample_values() -> dict[str, str]:
    """The Values of local.settings.json.sample: every setting with its local default."""
    return dict(json.loads(SAMPLE.read_text(encoding="utf-8"))["Values"])


def function_key(path: pathlib.Path) -> str:
    """The function key written in a settings file (for tests and tools that drive the host)."""
    return str(read(path).get("Values", {}).get(FUNCTION_KEY_SETTING) or "")
