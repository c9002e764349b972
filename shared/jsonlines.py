"""Streaming gzip JSON Lines: bytes in, one dict per line out, with memory flat whatever the size.

Used for the Graph billing export blobs (gzip JSON Lines, possibly several gzip members); bytes
that are not gzip pass through, so an already-decoded body reads the same.
"""
from __future__ import annotations

import json
import zlib
from typing import Any, Callable, Iterable, Iterator

from .graph_billing_errors import BlobFormatError
from .transport import TruncatedBody

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024  # one reconciliation row is a few KiB; anything huge is corrupt
_DECOMPRESS_STEP = 1024 * 1024  # never inflate more than this per step (bounds a gzip bomb)


def iter_gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress gzip (several members allowed) chunk by chunk. Bytes that do not start with
    the gzip magic pass through unchanged (a proxy may already have decoded them).
    Raises :class:`TruncatedBody` when the stream ends inside a gzip member."""
    decompressor: Any = None
    passthrough: bool | None = None
    head = b""
    for chunk in chunks:
        if not chunk:
            continue
        if passthrough is None:
            head += chunk
            if len(head) < 2:
                continue  # the magic may arrive one byte at a time
            chunk, head = head, b""
            passthrough = not chunk.startswith(b"\x1f\x8b")
        if passthrough:
            yield chunk
            continue
        data = chunk
        while data:
            if decompressor is None:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = decompressor.decompress(data, _DECOMPRESS_STEP)
                while out:
                    yield out
                    if not decompressor.unconsumed_tail:
                        break
                    out = decompressor.decompress(decompressor.unconsumed_tail, _DECOMPRESS_STEP)
            except zlib.error as exc:
                raise BlobFormatError(f"blob is not valid gzip: {exc}") from None
            if decompressor.eof:
                data = decompressor.unused_data  # the next gzip member, if any
                decompressor = None
            else:
                data = b""
    if head:
        yield head  # a one-byte body cannot be gzip
    if decompressor is not None:
        tail = decompressor.flush()
        if tail:
            yield tail
        if not decompressor.eof:
            raise TruncatedBody("gzip stream ended early")


class JsonLine(dict):
    """One parsed line, with the line's own text (``text``): a caller that stores the row as
    JSON keeps Microsoft's text as it was instead of encoding the parsed value again."""

    __slots__ = ("text",)

    def __init__(self, value: dict[str, Any], text: str):
        super().__init__(value)
        self.text = text


def iter_json_lines(chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                    parse_float: Callable[[str], Any] | None = None) -> Iterator[JsonLine]:
    """Parse JSON Lines from byte chunks without holding more than one line (plus a chunk);
    ``parse_float`` as for ``json.loads`` (``Decimal`` keeps every digit)."""
    buffer = bytearray()
    line_no = 0

    def parse(raw: bytes) -> JsonLine | None:
        nonlocal line_no
        line_no += 1
        raw = raw.strip()
        if not raw:
            return None
        try:
            # as json.loads decodes bytes (a UTF-8 byte-order mark is dropped, not an error)
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")
            value = json.loads(text, parse_float=parse_float)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise BlobFormatError(f"line {line_no} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BlobFormatError(f"line {line_no} is not a JSON object")
        return JsonLine(value, text)

    for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            row = parse(bytes(buffer[start:end]))
            if row is not None:
                yield row
            start = end + 1
        if start:
            del buffer[:start]
        if len(buffer) > max_line_bytes:
            raise BlobFormatError(f"line {line_no + 1} is longer than {max_line_bytes} bytes")
    if buffer.strip():
        row = parse(bytes(buffer))  # the last line may lack its newline
        if row is not None:
            yield row


def iter_gzip_json_lines(chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                         parse_float: Callable[[str], Any] | None = None) -> Iterator[JsonLine]:
    return iter_json_lines(iter_gzip_chunks(chunks), max_line_bytes=max_line_bytes, parse_float=parse_float)


__all__ = ["DEFAULT_MAX_LINE_BYTES", "JsonLine", "iter_gzip_chunks", "iter_gzip_json_lines", "iter_json_lines"]
