"""Paging: one GET described as a :class:`PageRequest`, and paginators that derive the next
request from each page (Singer-style), with a loop guard.

Partner Center collections come in three styles (:class:`PagingStyle`): returned whole, size/offset
with a ``links.next`` link, and seek with ``MS-ContinuationToken``. The client's ``iter_pages``
drives a paginator; a whole collection is never held.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .jsonutil import get_path
from .partner_center_errors import PaginationLoopError

CONTINUATION_HEADER = "MS-ContinuationToken"


class PagingStyle(enum.StrEnum):
    """How a collection pages; the values are the names streams and settings have always used."""

    NONE = "none"
    OFFSET = "offset"
    SEEK = "seek"


@dataclass(frozen=True)
class PageRequest:
    """One GET: a path relative to the API root (with or without ``/v1``) or an absolute URL."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> "PageRequest":
        return cls(
            path,
            tuple((k, str(v)) for k, v in (params or {}).items() if v is not None),
            tuple((k, str(v)) for k, v in (headers or {}).items()),
        )


class Paginator:
    """Holds the current request and decides the next one from each page.

    Subclasses implement ``get_next(page)``; ``advance`` applies the loop guard (a next request
    seen before raises :class:`PaginationLoopError`) and stops when there is no next request.
    """

    def __init__(self, first: PageRequest):
        self.current: PageRequest = first
        self.finished = False
        self.count = 0
        self._seen: set[tuple[Any, ...]] = {self._fingerprint(first)}

    @staticmethod
    def _fingerprint(request: PageRequest) -> tuple[Any, ...]:
        return (request.path, request.params, tuple(sorted((k.lower(), v) for k, v in request.headers)))

    def get_next(self, page: Mapping[str, Any]) -> PageRequest | None:
        raise NotImplementedError

    def advance(self, page: Mapping[str, Any]) -> None:
        self.count += 1
        nxt = self.get_next(page)
        if nxt is None:
            self.finished = True
            return
        fingerprint = self._fingerprint(nxt)
        if fingerprint in self._seen:
            raise PaginationLoopError(
                f"pagination loop detected after page {self.count}: {nxt.path} was already requested"
                " with the same continuation",
                path=nxt.path,
            )
        self._seen.add(fingerprint)
        self.current = nxt


class SinglePagePaginator(Paginator):
    """Collections returned whole (e.g. a customer's subscriptions)."""

    def get_next(self, page: Mapping[str, Any]) -> PageRequest | None:
        return None


class NextLinkPaginator(Paginator):
    """Follows ``links.next`` verbatim (size/offset and seek collections alike), adding every
    ``links.next.headers[]`` entry (e.g. ``MS-ContinuationToken``) to the next request. A seek
    page whose next link lacks the token header gets the top-level ``continuationToken``."""

    def get_next(self, page: Mapping[str, Any]) -> PageRequest | None:
        nxt = get_path(page, "links", "next")
        if not isinstance(nxt, Mapping):
            return None
        uri = get_path(nxt, "uri")
        if not isinstance(uri, str) or not uri.strip():
            return None
        headers: list[tuple[str, str]] = []
        for entry in get_path(nxt, "headers") or []:
            if isinstance(entry, Mapping):
                key, value = get_path(entry, "key"), get_path(entry, "value")
                if key and value is not None:
                    headers.append((str(key), str(value)))
        token = get_path(page, "continuationToken")
        if token and not any(k.lower() == CONTINUATION_HEADER.lower() for k, _ in headers):
            headers.append((CONTINUATION_HEADER, str(token)))
        return PageRequest(uri.strip(), (), tuple(headers))


class OffsetPaginator(NextLinkPaginator):
    """size/offset collections: the next link carries the new offset; the first request sets it."""


class SeekPaginator(NextLinkPaginator):
    """Continuation-token collections (customers, line items)."""


def collection_problem(page: Any) -> str | None:
    """Why a 2xx answer is not a page of a collection (None when it is one): a JSON object with
    an ``items`` array of objects, ``totalCount`` (when present) the number of items on the page
    and ``attributes.objectType`` (when present) ``Collection``. Anything else, e.g. an error
    envelope or an object without ``items``, must fail the read: read as an empty page, it would
    tombstone every stored row."""
    if not isinstance(page, Mapping):
        return f"a collection page must be a JSON object, not {type(page).__name__}"
    if get_path(page, "error") is not None:
        return "the answer is an error envelope, not a collection page"
    items = get_path(page, "items")
    if not isinstance(items, list):
        return "the collection page has no 'items' array"
    if not all(isinstance(item, Mapping) for item in items):
        return "the collection page has an item that is not a JSON object"
    total = get_path(page, "totalCount")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total != len(items)):
        return f"the collection page says totalCount {total!r} but has {len(items)} item(s)"
    object_type = get_path(page, "attributes", "objectType")
    if object_type is not None and str(object_type).lower() != "collection":
        return f"the answer is a {str(object_type)[:80]!r}, not a collection page"
    return None


_PAGINATORS: dict[PagingStyle, Callable[[PageRequest], Paginator]] = {
    PagingStyle.NONE: SinglePagePaginator,
    PagingStyle.OFFSET: OffsetPaginator,
    PagingStyle.SEEK: SeekPaginator,
}


def paginator_for(style: PagingStyle | str, first: PageRequest) -> Paginator:
    """A fresh paginator of ``style`` (a :class:`PagingStyle` or its value) starting at ``first``."""
    try:
        return _PAGINATORS[PagingStyle(style)](first)
    except ValueError:
        expected = sorted(s.value for s in PagingStyle)
        raise ValueError(f"unknown paging style {style!r}; expected one of {expected}") from None


__all__ = [
    "CONTINUATION_HEADER", "collection_problem", "NextLinkPaginator", "OffsetPaginator", "PageRequest", "Paginator", "PagingStyle",
    "SeekPaginator", "SinglePagePaginator", "paginator_for",
]
