"""Defensive accessors for service JSON: key case varies (``companyProfile`` / ``CompanyProfile``)
and so do value types (``"5"`` or ``5``, ``"true"`` or ``true``), so every read goes through here."""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Mapping

_DECIMAL_MARK = "\u0000dec:"
_DECIMAL_MARKED = re.compile(r'"\\u0000dec:(-?[0-9.]+|null)"')


def get_path(obj: Any, *keys: str) -> Any:
    """Nested lookup tolerant of key case; None as soon as a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        if key in obj:
            obj = obj[key]
            continue
        lowered = key.lower()
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() == lowered:
                obj = v
                break
        else:
            return None
    return obj


def lower_keys(obj: Mapping[Any, Any]) -> dict[str, Any]:
    """The mapping with lower-cased keys: for reading many fields of one object in any key case,
    cheaper than a case-insensitive scan per field (``get_path``)."""
    return {k.lower() if type(k) is str else str(k).lower(): v for k, v in obj.items()}  # noqa: E721 - str keys: fast


def as_text(value: Any) -> str | None:
    """Text as stored; objects and arrays become compact, key-sorted JSON."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def as_enum(value: Any) -> str | None:
    """Enum values as the service spells them today (lower snake case); unknown values pass through."""
    if value is None:
        return None
    return str(value).strip().lower() or None


__all__ = ["JsonRejected", "MAX_JSON_DEPTH", "as_bool", "as_enum", "as_int", "as_text", "get_path", "lower_keys",
           "nesting_depth", "parse_json_text", "loads_json", "dumps_exact"]


MAX_JSON_DEPTH = 32  # pcsync's own bodies and messages nest 4 levels; Partner Center's events 3


class JsonRejected(ValueError):
    """Bytes that are not a JSON document pcsync accepts; the message says why and is safe to show."""


def loads_json(text: str | bytes | bytearray, *, exact_numbers: bool = False) -> Any:
    """``json.loads``; with ``exact_numbers`` every non-integer number is a Decimal parsed from its
    text (money: a float holds about 16 digits, Microsoft prints unit prices with 22)."""
    return json.loads(text, parse_float=Decimal) if exact_numbers else json.loads(text)


def _mark_decimal(value: Any) -> str:
    if isinstance(value, Decimal):
        return _DECIMAL_MARK + (format(value, "f") if value.is_finite() else "null")
    return str(value)


def dumps_exact(item: Any) -> str:
    """Compact, key-sorted JSON with Decimals written as numbers, digit for digit (the C encoder
    does the work; Decimals pass through a marker string that is replaced afterwards); other
    values JSON lacks are written as their text."""
    text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_mark_decimal)
    return _DECIMAL_MARKED.sub(lambda m: m.group(1), text) if "\\u0000dec:" in text else text


def parse_json_text(body: bytes | bytearray | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The one decoder for JSON from outside (HTTP bodies, queue messages, webhook posts):
    size, UTF-8, nesting depth (checked before parsing, so a deeply nested document is refused
    instead of exhausting the parser's recursion) and syntax. Raises JsonRejected."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if len(raw) > max_bytes:
        raise JsonRejected(f"larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRejected("not UTF-8 text") from None
    if not text.strip():
        raise JsonRejected("empty")
    if nesting_depth(text) > max_depth:
        raise JsonRejected(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except ValueError:
        raise JsonRejected("not valid JSON") from None


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
