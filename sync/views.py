"""How the operator's CLI shows stored rows: a rich table by default, JSON for scripts.

A :class:`View` names the fields of one kind of row: the JSON key (camelCase, stable, listed in
the README), the stored column it comes from, and the table header when the field is one of the
few a table shows. ``--json`` prints a list of objects with every field of the view, whatever
the filters; ``show`` adds the view's detail fields.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from shared.clock import to_iso

# A table written to a pipe or a file is read by grep or a person with a wide pager, not wrapped
# to the 80 columns rich assumes without a terminal.
PIPE_WIDTH = 240


def plain(value: Any) -> Any:
    return to_iso(value) if isinstance(value, datetime) else value


def parsed_json(value: Any) -> Any:
    """A JSON text column (``raw``, ``skipped``) as the value it holds; None when empty or cut."""
    if not value or not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Field:
    key: str  # the JSON key
    column: str  # the stored column (or the to_json key for records)
    header: str | None = None  # shown in tables under this header; None: JSON and show only
    convert: Callable[[Any], Any] = plain


def field(key: str, column: str | None = None, header: str | None = None, convert: Callable[[Any], Any] = plain) -> Field:
    return Field(key, column or key, header, convert)


@dataclass(frozen=True)
class View:
    noun: str  # "customer": for titles and messages
    fields: tuple[Field, ...]
    detail: tuple[Field, ...] = ()  # shown by `show` only (raw payloads, long text)

    def select(self) -> list[str]:
        """The columns a list reads (the service returns nothing else)."""
        return sorted({f.column for f in self.fields})

    def item(self, row: Mapping[str, Any], *, detailed: bool = False) -> dict[str, Any]:
        fields = (*self.fields, *self.detail) if detailed else self.fields
        return {f.key: f.convert(row.get(f.column)) for f in fields}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _console() -> Any:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def print_items(view: View, items: Sequence[Mapping[str, Any]], *, as_json: bool, title: str,
                next_token: str | None, extra_headers: Sequence[tuple[str, str]] = ()) -> int:
    """A page of items; when there are more, the next page's token on stderr (stdout stays the
    list, so ``--json`` output is always one JSON array)."""
    if as_json:
        print(json.dumps(list(items), indent=2, default=str))
    else:
        from rich.table import Table

        shown = [(f.header, f.key) for f in view.fields if f.header] + list(extra_headers)
        table = Table(title=title)
        for header, _ in shown:
            table.add_column(header, overflow="fold")
        for item in items:
            table.add_row(*(_cell(item.get(key)) for _, key in shown))
        _console().print(table)
        if not items:
            print(f"no {view.noun}s", file=sys.stderr)
    if next_token:
        print(f"more {view.noun}s: --page-token {next_token}", file=sys.stderr)
    return 0


def print_item(item: Mapping[str, Any], *, as_json: bool, title: str) -> int:
    if as_json:
        print(json.dumps(dict(item), indent=2, default=str))
        return 0
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in item.items():
        text = json.dumps(value, indent=1, default=str) if isinstance(value, (dict, list)) else _cell(value)
        table.add_row(key, text)
    _console().print(table)
    return 0


def add_output_options(parser: Any, *, paged: bool) -> None:
    from .queries import DEFAULT_LIMIT, MAX_LIMIT

    parser.add_argument("--json", action="store_true", help="print JSON (a list of objects for list commands)")
    if paged:
        parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                            help=f"rows per page, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})")
        parser.add_argument("--page-token", help="continue after the page that printed this token")


__all__ = ["Field", "View", "add_output_options", "field", "parsed_json", "plain", "print_item", "print_items"]
