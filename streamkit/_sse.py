"""The sans-I/O Server-Sent Events decoder: bytes in, ``(event name, data bytes)`` out.

It knows nothing of sockets, HTTP or JSON, so every shell (async, sync, a relay) and the
fuzz tests feed it the same way.
"""

from __future__ import annotations

from ._errors import ProtocolError

_BOM = b"\xef\xbb\xbf"

MAX_EVENT_SIZE = 32 * 1024 * 1024
"""Largest event ``SSEDecoder`` accepts, in bytes (32 MiB).

Everything a reply holds must fit in the next request, which the API caps at 32 MB, so
no real event comes near this; a bigger one is a broken or hostile server, refused
before it can grow the buffer without bound.
"""


class SSEDecoder:
    """Incremental decoder for the ``text/event-stream`` format (WHATWG HTML, 9.2).

    Feed it chunks as they arrive; it returns each complete event as ``(name, data)``.
    ``id`` and ``retry`` fields and comments are ignored: the Messages API does not
    use them.  Bytes of an unfinished event stay buffered until its blank line, up to
    ``max_event_size`` bytes: an event larger than that raises ``ProtocolError`` (and
    the decoder drops its buffer: the stream cannot be trusted past that point).
    """

    __slots__ = ("_head", "_heads", "_max", "_names", "_pending", "_size", "_skip_lf")

    def __init__(self, max_event_size: int = MAX_EVENT_SIZE) -> None:
        self._pending: list[bytes] = []
        self._size = 0  # bytes in _pending
        self._max = max_event_size
        self._names: dict[bytes, str] = {}
        self._heads: dict[bytes, str] = {}  # b"event: NAME" -> NAME, of the names in _names
        self._head: bytes | None = b""  # the first bytes, until we know whether they are a BOM
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes that CRLF

    @property
    def buffered(self) -> bytes:
        """Bytes of the event still waiting for its terminating blank line."""
        return (self._head or b"") + b"".join(self._pending)

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        if (
            chunk.endswith(b"\n\n")
            and not self._pending
            and self._head is None
            and not self._skip_lf
            and b"\r" not in chunk
            and len(chunk) <= self._max
        ):  # whole events and nothing buffered: how the API sends them, one event per chunk
            end = chunk.find(b"\n")
            if (
                chunk.startswith(b"event: ")
                and chunk.startswith(b"data: ", end + 1)
                and chunk.find(b"\n", end + 7) == len(chunk) - 2
                and (name := self._names.get(chunk[7:end])) is not None
            ):  # exactly one "event: NAME\ndata: JSON" block, of a name seen before
                return [(name, chunk[end + 7 : -2])]
            whole = chunk[:-2]
            return self._plain(whole) or self._parse_blocks(whole.split(b"\n\n"))
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return []
            self._head = None
            chunk = chunk.removeprefix(_BOM)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            # CR and CRLF line endings: rewrite them as LF (the buffer holds only LF already).
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = self._pending
        if b"\n\n" not in chunk and not (pending and chunk.startswith(b"\n") and pending[-1].endswith(b"\n")):
            if chunk:
                pending.append(chunk)
                self._size += len(chunk)
                if self._size > self._max:
                    self._too_large(self._size)
            return []
        if pending:
            pending.append(chunk)
            chunk = b"".join(pending)
            pending.clear()
        return self._split(chunk)

    def _split(self, data: bytes) -> list[tuple[str, bytes]]:
        """Cut LF-only ``data`` at blank lines; the unfinished rest stays pending."""
        end = data.rfind(b"\n\n")
        # Unless a line break precedes the last blank line, the blocks before it are what splitting all
        # of ``data`` at blank lines gives, and the rest after it the last piece.
        if end > 0 and data[end - 1] != 10 and len(data) <= self._max and (events := self._plain(data[:end])):
            rest = data[end + 2 :]
            self._size = len(rest)
            if rest:
                self._pending.append(rest)
            return events
        blocks = data.split(b"\n\n")
        rest = blocks.pop()
        self._size = len(rest)
        if rest:
            self._pending.append(rest)
        if len(data) > self._max:  # only then can one event be too large: a cheap test per chunk
            self._too_large(max([self._size, *map(len, blocks)]))
        return self._parse_blocks(blocks)

    def _too_large(self, size: int) -> None:
        if size > self._max:
            self._pending.clear()
            self._size = 0
            raise ProtocolError(
                f"an event of more than {self._max:,} bytes ({size:,} so far): refused, no real event is that large"
            )

    def _plain(self, whole: bytes) -> list[tuple[str, bytes]] | None:
        """The events of ``whole`` (blocks without their last blank line) if every block is a two-line
        "event: NAME\ndata: JSON" of a name seen before (what the API sends); else None.

        A read of a stream that fell behind holds many events: this checks and cuts them all with a
        few C-level splits, lookups and counts instead of a handful of calls per block.
        """
        lines = whole.split(b"\n")
        if len(lines) % 3 != 2 or any(lines[2::3]):  # not "head, data, blank" over and over
            return None
        texts = list(map(self._heads.get, lines[0::3]))
        datas = lines[1::3]
        # Lines hold no LF, so each LF of the join is followed by the start of the next data line.
        if None in texts or not datas[0].startswith(b"data: "):
            return None
        if b"\n".join(datas).count(b"\ndata: ") != len(datas) - 1:
            return None
        return list(zip(texts, [data[6:] for data in datas], strict=True))  # type: ignore[arg-type]

    def _parse_blocks(self, blocks: list[bytes]) -> list[tuple[str, bytes]]:
        events: list[tuple[str, bytes]] = []
        names = self._names
        for block in blocks:
            # Fast path: the two-line "event: NAME\ndata: JSON" block the API always sends.
            end = block.find(b"\n")
            if block.startswith(b"event: ") and block.startswith(b"data: ", end + 1) and block.find(b"\n", end + 1) < 0:
                name = block[7:end]
                text = names.get(name)
                if text is not None:
                    events.append((text, block[end + 7 :]))
                    continue
            name = b"message"
            data: list[bytes] = []
            for line in block.split(b"\n"):
                field, colon, value = line.partition(b":")
                if colon and value.startswith(b" "):
                    value = value[1:]
                if field == b"data":
                    data.append(value)
                elif field == b"event":
                    name = value or b"message"  # an empty type is the default one (WHATWG 9.2.6)
            if not data:
                continue
            text = names.get(name)
            if text is None:
                text = name.decode("utf-8", "replace")
                if len(names) < 64:
                    names[name] = text
                    self._heads[b"event: " + name] = text
            events.append((text, data[0] if len(data) == 1 else b"\n".join(data)))
        return events
