"""JSON text written from Decimal without a float in between.

Microsoft prints unit prices with 22 significant digits (0.1835431430074643112595); a float
keeps about 16. The standard encoder cannot emit a Decimal as a number, so billing rows are
written here: Decimal values become JSON numbers with exactly their digits, everything else is
encoded as ``json`` would (compact separators).
"""
from __future__ import annotations

import json
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _quote

_plain_dumps = json.JSONEncoder(separators=(",", ":")).encode


def number_text(value: Decimal) -> str:
    """Fixed-point digits, no exponent, no trailing zeros beyond the value's own ("1.5", "-0.01")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def dumps(value) -> str:
    """Compact JSON of dicts, lists and scalars where Decimal values are written exactly."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is Decimal:
        return number_text(value)
    if kind is dict:
        return "{" + ",".join(_quote(str(k)) + ":" + dumps(v) for k, v in value.items()) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return _plain_dumps(value)


def dumps_row(row: dict) -> str:
    """One flat row (the hot path of an export blob): nested values go through :func:`dumps`."""
    parts = []
    for key, value in row.items():
        kind = type(value)
        if kind is str:
            text = _quote(value)
        elif kind is Decimal:
            text = number_text(value)
        elif kind is int:
            text = str(value)
        else:
            text = dumps(value)
        parts.append(_quote(key) + ":" + text)
    return "{" + ",".join(parts) + "}"
