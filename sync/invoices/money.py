"""Exact money on the invoice side: Decimal in, exact decimal strings out, never a float between.

* :func:`to_decimal` reads numbers, numeric strings ("1,234.50", " 12 ") and, for values that
  already went through a float (v1 Partner Center bodies, rows an older pcsync stored as
  ``Edm.Double``), the float's shortest repr, so stored floats still read.
* :func:`plain` writes a Decimal as fixed-point text ("1234.5", "0", "-0.01"): the stored form.
* :func:`dumps_exact` (from :mod:`shared.jsonutil`) is ``json.dumps`` that writes Decimals as JSON numbers with every digit,
  so the stored raw JSON of a v1 item keeps the 22 significant digits Microsoft prints for unit
  prices (a Graph export row keeps its line's own text, :class:`shared.jsonlines.JsonLine`).
* :func:`rounddown` and the two published subtotal formulas (Microsoft's new-commerce
  reconciliation file documentation):
  usage-based ``ROUNDDOWN(ROUNDDOWN(EffectiveUnitPrice x BillableQuantity, 2) x PCToBCExchangeRate, 2)``,
  license-based ``ROUNDDOWN(EffectiveUnitPrice x PCToBCExchangeRate, 2) x BillableQuantity``.
  Excel's ROUNDDOWN rounds towards zero.
"""
from __future__ import annotations

import functools
from decimal import ROUND_DOWN, Decimal, InvalidOperation, localcontext
from typing import Any, Callable, TypeVar

from shared.jsonutil import dumps_exact, loads_json

CENT = Decimal("0.01")
EXACT_DIGITS = 100  # products and sums of 22-digit unit prices stay exact (the default context keeps 28)
F = TypeVar("F", bound=Callable[..., Any])


def to_decimal(value: Any) -> Decimal | None:
    """A finite Decimal, or None for a missing or non-numeric value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    text = repr(value) if isinstance(value, float) else str(value).strip().replace(",", "")
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def plain(value: Decimal) -> str:
    """Fixed-point text without exponent; minus zero is "0"."""
    text = format(value.normalize(), "f") if value else "0"
    return "0" if text in ("-0", "") else text


def amount_text(value: Any) -> str | None:
    """A column value as exact decimal text (None when not a number)."""
    number = to_decimal(value)
    return None if number is None else plain(number)


def loads_exact(text: str | bytes) -> Any:
    """JSON with every non-integer number as Decimal."""
    return loads_json(text, exact_numbers=True)


def exact(function: F) -> F:
    """Run ``function`` with enough Decimal digits that its arithmetic never rounds."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with localcontext() as context:
            context.prec = EXACT_DIGITS
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def rounddown(value: Decimal, places: int = 2) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


def usage_subtotal(effective_unit_price: Decimal, billable_quantity: Decimal, exchange_rate: Decimal) -> Decimal:
    """Microsoft's usage-based line subtotal in the billing currency."""
    return rounddown(rounddown(effective_unit_price * billable_quantity) * exchange_rate)


def license_subtotal(effective_unit_price: Decimal, billable_quantity: Decimal, exchange_rate: Decimal) -> Decimal:
    """Microsoft's license-based line subtotal in the billing currency."""
    return rounddown(effective_unit_price * exchange_rate) * billable_quantity


__all__ = ["CENT", "EXACT_DIGITS", "amount_text", "exact", "dumps_exact", "license_subtotal", "loads_exact", "plain", "rounddown",
           "to_decimal", "usage_subtotal"]
