"""Reading a batch's results file: JSON Lines, in bounded memory, resumable at a byte offset.

Sans-I/O, shared by both shells: they feed the bytes of the body as they arrive and take
the results out; after a broken connection they ask where to resume (``position``), send
``Range: bytes=<position>-``, and let ``resume_skip`` decide, from the answer's status and
headers, how many of its first bytes were already delivered.  Memory is one partial line,
capped: a line longer than the cap is a ``ProtocolError``, whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._batch_types import BatchResult, parse_result
from ._errors import ProtocolError


class LineSplitter:
    """Splits a byte stream at ``\\n`` into lines of at most ``max_line`` bytes, counting bytes fed.

    ``position`` is the number of bytes of the file fed so far (after any ``skip``): where
    the next byte belongs.  A partial line is kept across ``feed`` calls, and across a
    resume, so no byte is ever needed twice.  The newline search only looks at new bytes:
    the work is linear in the input, whatever the chunking.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.position = 0
        self.lines = 0  # complete lines handed out, blank ones included
        self._partial = bytearray()
        self._skip = 0

    def skip(self, count: int) -> None:
        """Drop the next ``count`` bytes fed: a resumed body that repeats bytes already fed."""
        self._skip = count

    def feed(self, data: bytes) -> list[bytes]:
        """The lines completed by ``data`` (without line ends; blank lines left out)."""
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self.position += len(data)
        lines: list[bytes] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._partial:
                self._partial += data[start:end]
                self._check(len(self._partial))
                line = bytes(self._partial)
                self._partial.clear()
            else:
                self._check(end - start)
                line = data[start:end]
            self.lines += 1
            line = line.rstrip(b"\r")
            if line.strip():
                lines.append(line)
            start = end + 1
        if start < len(data):
            self._check(len(self._partial) + len(data) - start)
            self._partial += data[start:]
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the body ended without a newline after it."""
        line = bytes(self._partial).rstrip(b"\r")
        self._partial.clear()
        return [line] if line.strip() else []

    def _check(self, size: int) -> None:
        if size > self.max_line:
            raise ProtocolError(
                f"line {self.lines + 1:,} of the batch results is over {self.max_line:,} bytes: refused",
                data=bytes(self._partial[:500]),
            )


class ResultsDecoder:
    """The results of a batch, from the bytes of its results file (``feed``, then ``end``)."""

    def __init__(self, max_line: int) -> None:
        self._lines = LineSplitter(max_line)
        self.delivered = 0

    @property
    def position(self) -> int:
        """Bytes of the file received: a resumed request asks for the bytes from here."""
        return self._lines.position

    def skip(self, count: int) -> None:
        self._lines.skip(count)

    def feed(self, data: bytes) -> list[BatchResult]:
        return self._parse(self._lines.feed(data))

    def end(self) -> list[BatchResult]:
        return self._parse(self._lines.end())

    def _parse(self, lines: list[bytes]) -> list[BatchResult]:
        results = [parse_result(line) for line in lines]
        self.delivered += len(results)
        return results


def range_header(position: int) -> dict[str, str]:
    """The headers of a request for the results file from ``position`` on.

    ``accept-encoding: identity`` throughout: a byte offset means the same in every answer
    only when the bytes are not compressed.
    """
    headers = {"accept-encoding": "identity", "accept": "*/*"}
    if position:
        headers["range"] = f"bytes={position}-"
    return headers


def resume_skip(status: int, headers: Mapping[str, str], position: int) -> int | None:
    """How many leading bytes of this answer were already received; None when the file was complete.

    A 200 is the whole file again: skip ``position`` bytes.  A 206 starts where its
    ``Content-Range`` says, at or before ``position``.  A 416 whose size is ``position``
    means every byte had arrived (the connection broke after the last one).
    """
    request_id = headers.get("request-id")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ProtocolError(
            f"the results file came with content-encoding {encoding!r} although identity was asked for: "
            "its byte offsets cannot be resumed",
            request_id=request_id,
        )
    if status == 200:
        return position
    content_range = headers.get("content-range", "")
    unit, _, spec = content_range.strip().partition(" ")
    span, _, size = spec.partition("/")
    if status == 416 and unit == "bytes" and span == "*" and size.isdigit() and int(size) == position:
        return None
    first, _, _last = span.partition("-")
    if status == 206 and unit == "bytes" and first.isdigit() and int(first) <= position:
        return position - int(first)
    raise ProtocolError(
        f"the answer to a resumed read of the results at byte {position:,} was {status} with "
        f"content-range {content_range[:100]!r}: it does not continue the file",
        request_id=request_id,
    )
