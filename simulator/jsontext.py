"""JSON text written from Decimal without a float in between.

Microsoft prints unit prices with 22 significant digits (0.1835431430074643112595); a float
keeps about 16. The standard encoder cannot emit a Decimal as a number, so billing rows are
written here: Decimal values become JSON numbers with exactly their digits, everything else is
encoded as ``json`` would (compact separators).
"""
from __future__ import annotations

import json
from decimal import Decimal


def number_text(value: Decimal) -> str:
    """Fixed-point digits, no exponent, no trailing zeros beyond the value's own ("1.5", "-0.01")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# A Decimal goes through the C encoder (its ``default`` hook) as a string between two NUL marks,
# which the encoder escapes to \u0000; removing the marks with their quotes leaves the bare
# number. Generated text never contains NUL, so the marks cannot collide with data.
_MARK = "\x00"
_OPEN, _CLOSE = '"\\u0000', '\\u0000"'


def _marked(value):
    if isinstance(value, Decimal):
        return _MARK + number_text(value) + _MARK
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), default=_marked).encode


def dumps(value) -> str:
    """Compact JSON of dicts, lists and scalars where Decimal values are written exactly."""
    return _encode(value).replace(_OPEN, "").replace(_CLOSE, "")


def dumps_rows(rows) -> str:
    """JSON Lines text of flat rows (the hot path of an export blob), one row per line."""
    return "\n".join(map(_encode, rows)).replace(_OPEN, "").replace(_CLOSE, "")


def dumps_row(row: dict) -> str:
    return dumps(row)
