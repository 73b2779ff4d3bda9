"""Reading a body in pieces, resumable at a byte offset, and a batch's results file (JSON Lines) in it.

Sans-I/O, shared by both shells.  ``ResumePoint`` keeps where a body read in pieces (a
results file, a downloaded file) stands: the shell asks it for the request's headers
(``Range: bytes=<position>-`` after a break), tells it how the server answered (it decides,
from the status and headers, how many leading bytes were already received) and passes
each chunk through it; after a broken connection it says whether to resume.
``ResultsDecoder`` turns the bytes into results: memory is one partial line, capped (a
line longer than the cap is a ``ProtocolError``, whatever the file's size).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._batch_types import BatchResult, parse_result
from ._errors import APIConnectionError, ProtocolError, StreamkitError


class LineSplitter:
    """Splits a byte stream at ``\\n`` into lines of at most ``max_line`` bytes.

    A partial line is kept across ``feed`` calls, and across a resume, so no byte is ever
    needed twice.  The newline search only looks at new bytes: the work is linear in the
    input, whatever the chunking.  A line over the cap is refused before it is kept: the
    lines before it are handed out first, and the next call raises the ``ProtocolError``.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.lines = 0  # complete lines handed out, blank ones included
        self._partial = bytearray()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """The lines completed by ``data`` (without line ends; blank lines left out)."""
        self._raise_pending()
        lines: list[bytes] = []
        start = 0
        try:
            while (end := data.find(b"\n", start)) >= 0:
                self._check(len(self._partial) + end - start, data, start)
                if self._partial:
                    self._partial += data[start:end]
                    line = bytes(self._partial)
                    self._partial.clear()
                else:
                    line = data[start:end]
                self.lines += 1
                line = line.rstrip(b"\r")
                if line.strip():
                    lines.append(line)
                start = end + 1
            if start < len(data):
                self._check(len(self._partial) + len(data) - start, data, start)
                self._partial += data[start:]
        except ProtocolError as error:
            self._error = error
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the body ended without a newline after it."""
        self._raise_pending()
        line = bytes(self._partial).rstrip(b"\r")
        self._partial.clear()
        return [line] if line.strip() else []

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def _check(self, size: int, data: bytes, start: int) -> None:
        """Refuse a line of ``size`` bytes over the cap; its first bytes (``data`` from ``start``) go in the error."""
        if size > self.max_line:
            raise ProtocolError(
                f"line {self.lines + 1:,} of the batch results is over {self.max_line:,} bytes: refused",
                data=bytes(self._partial[:500]) or data[start : start + 500],
            )


class ResultsDecoder:
    """The results of a batch, from the bytes of its results file (``feed``, then ``end``).

    A line that is not a result is a ``ProtocolError``, raised by the call after the one
    that hands out the results before it: nothing received before the bad line is lost.
    """

    def __init__(self, max_line: int) -> None:
        self._lines = LineSplitter(max_line)
        self._error: ProtocolError | None = None
        self.delivered = 0

    def feed(self, data: bytes) -> list[BatchResult]:
        self._raise_pending()
        return self._parse(self._lines.feed(data))

    def end(self) -> list[BatchResult]:
        self._raise_pending()
        return self._parse(self._lines.end())

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def _parse(self, lines: list[bytes]) -> list[BatchResult]:
        results: list[BatchResult] = []
        for line in lines:
            try:
                results.append(parse_result(line))
            except ProtocolError as error:
                self._error = error
                break
        self.delivered += len(results)
        return results


def range_header(position: int) -> dict[str, str]:
    """The headers of a request for a body from ``position`` on.

    ``accept-encoding: identity`` throughout: a byte offset means the same in every answer
    only when the bytes are not compressed.
    """
    headers = {"accept-encoding": "identity", "accept": "*/*"}
    if position:
        headers["range"] = f"bytes={position}-"
    return headers


def resume_skip(status: int, headers: Mapping[str, str], position: int) -> int | None:
    """How many leading bytes of this answer were already received; None when the body was complete.

    A 200 is the whole body again: skip ``position`` bytes.  A 206 starts where its
    ``Content-Range`` says, at or before ``position``.  A 416 whose size is ``position``
    means every byte had arrived (the connection broke after the last one).
    """
    request_id = headers.get("request-id")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ProtocolError(
            f"the body came with content-encoding {encoding!r} although identity was asked for: "
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
        f"the answer to a read resumed at byte {position:,} was {status} with "
        f"content-range {content_range[:100]!r}: it does not continue the body",
        request_id=request_id,
    )


class ResumePoint:
    """Where a body read in pieces stands, and whether to resume it after a break.

    ``position``: bytes received, where a resumed request starts.  ``take`` drops the
    leading bytes a resumed answer repeats and counts the rest.  ``broke`` counts breaks
    in a row without a new byte: past ``max_resumes`` of them, or for a failure that is
    not a lost connection, the read is given up.
    """

    def __init__(self, max_resumes: int) -> None:
        self.max_resumes = max_resumes
        self.position = 0
        self.resumes = 0  # resumed requests
        self._skip = 0
        self._failures = 0

    def headers(self) -> dict[str, str]:
        """The headers of the next request: from ``position`` on."""
        return range_header(self.position)

    def answered(self, status: int, headers: Mapping[str, str]) -> bool:
        """Take the answer's status and headers; False when it says every byte had already arrived."""
        skip = resume_skip(status, headers, self.position)
        if skip is None:
            return False
        self._skip = skip
        return True

    def take(self, data: bytes) -> bytes:
        """The bytes of ``data`` not received before."""
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        if data:
            self.position += len(data)
            self._failures = 0
        return data

    def broke(self, error: StreamkitError) -> bool:
        """Whether to resume after the read failed with ``error``."""
        self._failures += 1
        if not isinstance(error, APIConnectionError) or self._failures > self.max_resumes:
            return False
        self.resumes += 1
        return True
