"""Structured logging with secret redaction applied to every log record.

Redaction is installed as a log-record factory rather than a handler filter, so it covers
records from every library and every handler (the Functions host's, pytest's, a console one)
without having to know the handlers in advance.
"""
from __future__ import annotations

import logging
import re
import threading
import traceback

REDACTED = "***"

_PATTERNS = [
    # Authorization headers and bearer tokens
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/=]+"),
    re.compile(r"(?i)(signature\s+)[A-Za-z0-9+/=]{16,}"),
    # JWTs anywhere (header.payload.signature, base64url)
    re.compile(r"()eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"),
    # key=value and "key": "value" forms of well-known secret fields
    re.compile(
        r"(?i)((?:refresh_token|access_token|id_token|client_secret|client_assertion|code_verifier|"
        r"password|secret|accountkey)\s*[=:]\s*\"?)[^\"&;,\s}]+"
    ),
    # authorization codes and SAS signatures in query strings
    re.compile(r"(?i)([?&](?:code|sig)=)[^&\s\"]+"),
    re.compile(
        r"(?i)(\"(?:refresh_token|access_token|id_token|client_secret|value|password)\"\s*:\s*\")[^\"]+"
    ),
]

_known_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it appears in a log record."""
    if value and len(value) >= 6:
        with _lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string must not hide the record
        message = str(record.msg)
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        # keep the type for handlers that look at it, drop the live traceback objects
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def install_redaction() -> None:
    """Wrap the log-record factory once per process so every record is redacted at creation."""
    global _installed
    with _lock:
        if _installed:
            return
        base_factory = logging.getLogRecordFactory()

        def redacting_factory(*args, **kwargs):
            return _redact_record(base_factory(*args, **kwargs))

        logging.setLogRecordFactory(redacting_factory)
        _installed = True


def get_logger(name: str) -> logging.Logger:
    install_redaction()
    return logging.getLogger(name)
