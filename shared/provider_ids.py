"""What a provider id may look like, apart from the provider model: the blueprints check ids
before any service is built, and importing shared/providers.py would load the Table SDK."""
from __future__ import annotations

import re

from .errors import ValidationFailed

# \Z, not $: "$" also matches before a trailing newline, and "contoso\n" is not a provider id
PROVIDER_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def validate_provider_id(provider_id: str) -> str:
    """The id itself, or ValidationFailed (400): no whitespace, control characters or upper case."""
    if not isinstance(provider_id, str) or not PROVIDER_ID_PATTERN.fullmatch(provider_id):
        raise ValidationFailed(
            {"id": "use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"}
        )
    return provider_id
