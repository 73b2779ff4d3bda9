"""What the mock's REST endpoints (batches, files, token counting) answer, before any byte is sent.

Handlers return an ``Answer`` or raise ``ApiError``; the server turns either into bytes.
Large bodies are ``Source``s: a size and a way to produce any byte range on demand, so
a gigabyte of results is generated while it is sent, and a ``Range`` request costs no
more than the bytes it asks for.
"""

from __future__ import annotations

import json
import re
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

__all__ = [
    "Answer",
    "ApiError",
    "BytesSource",
    "CutFault",
    "LinesSource",
    "Source",
    "byte_range",
    "dumps",
    "json_answer",
    "page",
    "parse_json_object",
    "timestamp",
]

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CHUNK = 256 * 1024
"""Bytes a Source yields at a time: one socket write each."""


class ApiError(Exception):
    """An error answer in the API's JSON shape: ``{"type":"error","error":{"type","message"}}``."""

    def __init__(self, status: int, error_type: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers


class Source(Protocol):
    """A body of known size whose bytes are produced on demand."""

    @property
    def size(self) -> int: ...

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive), in pieces of about ``CHUNK`` bytes."""
        ...


@dataclass(frozen=True)
class BytesSource:
    """A Source over bytes already held."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        view = memoryview(self.data)
        for offset in range(start, end, CHUNK):
            yield bytes(view[offset : min(end, offset + CHUNK)])


class LinesSource:
    """A Source of ``count`` lines, line ``i`` being ``line(i)``, never all held at once.

    With ``width`` (every line that long) an offset maps to its line by division;
    otherwise each line is produced once, on first use, to learn its length (an
    8-byte offset per line is kept).  ``line`` must be deterministic: a resumed
    download must get the same bytes.  ``size`` cuts the last line short.
    """

    def __init__(
        self, count: int, line: Callable[[int], bytes], width: int | None = None, size: int | None = None
    ) -> None:
        self._count = count
        self._line = line
        self._width = width
        self._size = size
        self._offsets: array[int] | None = None

    def _ends(self) -> array[int]:
        if self._offsets is None:
            ends = array("q")
            total = 0
            for index in range(self._count):
                total += len(self._line(index))
                ends.append(total)
            self._offsets = ends
        return self._offsets

    @property
    def size(self) -> int:
        if self._size is not None:
            return self._size
        if self._width is not None:
            return self._count * self._width
        ends = self._ends()
        return ends[-1] if ends else 0

    def _locate(self, offset: int) -> tuple[int, int]:
        """The line holding byte ``offset``, and where that line starts."""
        if self._width is not None:
            index = offset // self._width
            return index, index * self._width
        ends = self._ends()
        index = bisect_right(ends, offset)
        return index, ends[index - 1] if index else 0

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        if start >= end:
            return
        index, line_start = self._locate(start)
        skip = start - line_start
        remaining = end - start
        parts: list[bytes] = []
        size = 0
        while remaining > 0 and index < self._count:
            line = self._line(index)
            if skip:
                line, skip = line[skip:], 0
            if len(line) > remaining:
                line = line[:remaining]
            parts.append(line)
            size += len(line)
            remaining -= len(line)
            index += 1
            if size >= CHUNK:
                yield b"".join(parts)
                parts.clear()
                size = 0
        if parts:
            yield b"".join(parts)


@dataclass
class Answer:
    """One response: status, content type, body, extra headers.

    ``span``: the byte range a ``Range`` header asked for; the server answers 206 with it.
    ``cut_after``: send that many body bytes and close the connection (a fault).
    ``sent``: called with the number of body bytes that went out, for the stores' counters.
    """

    status: int
    body: bytes | Source
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()
    span: tuple[int, int] | None = None
    cut_after: int | None = None
    sent: Callable[[int], None] | None = None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the API sends it."""
    return _ENCODE(value).encode()


def json_answer(value: Any, status: int = 200) -> Answer:
    return Answer(status, dumps(value))


def timestamp(seconds: float) -> str:
    """An RFC 3339 UTC time as the API writes it (``2024-08-20T18:37:24.100435Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the API's 400."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request_error", "mock server: the request body must be a JSON object")
    return value


@dataclass
class CutFault:
    """Cut every ``every``-th response of a kind after ``after`` body bytes, ``times`` times (None: always)."""

    after: int
    every: int = 1
    times: int | None = 1
    _seen: int = field(default=0, init=False)

    def next_cut(self) -> int | None:
        """Byte count at which to cut the response about to be sent, or None."""
        if self.times == 0:
            return None
        self._seen += 1
        if self._seen % self.every:
            return None
        if self.times is not None:
            self.times -= 1
        return self.after


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` for a single ``Range: bytes=`` header, None to send the whole body.

    A range that starts past the end raises the 416, with ``Content-Range: bytes */size``.
    Headers it does not understand (other units, several ranges) are ignored, as RFC 9110 allows.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
        if last != "" and int(last) < start:
            return None
    if start >= size:
        message = f"range {header!r} starts past the end ({size:,} bytes)"
        raise ApiError(416, "invalid_request_error", message, [("content-range", f"bytes */{size}")])
    return start, end


def page(items: Sequence[tuple[str, Any]], query: str) -> dict[str, Any]:
    """A page of a newest-first list, as the API pages: ``limit`` (1-1000, default 20), ``after_id``, ``before_id``."""
    params = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
    after, before = params.get("after_id"), params.get("before_id")
    if after is not None and before is not None:
        raise ApiError(400, "invalid_request_error", "after_id and before_id cannot both be set")
    ids = [key for key, _ in items]
    if after is not None or before is not None:
        cursor = after if after is not None else before
        try:
            index = ids.index(str(cursor))
        except ValueError:
            raise ApiError(400, "invalid_request_error", f"no object with id {cursor!r} to page from") from None
        rest = items[index + 1 :] if after is not None else items[:index]
    else:
        rest = items
    chosen = rest[:limit] if before is None else rest[-limit:]
    data = [value for _, value in chosen]
    return {
        "data": data,
        "has_more": len(rest) > limit,
        "first_id": chosen[0][0] if chosen else None,
        "last_id": chosen[-1][0] if chosen else None,
    }
