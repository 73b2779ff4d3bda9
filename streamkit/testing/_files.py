"""The Files endpoints of the mock server (beta: ``anthropic-beta: files-api-2025-04-14``).

Uploads are parsed while they arrive (``MultipartParser``, fed bytes, never the whole
body): a file keeps its size and at most ``FileStore.stored_bytes`` of its content, so a
500 MB upload costs the server no more memory than a small one.  As in the API, uploaded
files cannot be downloaded; ``FileStore.add`` makes a downloadable one, as a tool would,
whose content may be generated while it is sent.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from ._answers import (
    Answer,
    ApiError,
    BytesSource,
    CutFault,
    LinesSource,
    Source,
    byte_range,
    json_answer,
    page,
    timestamp,
)
from ._render import random_id

__all__ = ["FILES_BETA", "FileStore", "MultipartParser", "Part", "Upload"]

FILES_BETA = "files-api-2025-04-14"
"""The beta the Files endpoints need in the ``anthropic-beta`` header."""

_PATH = re.compile(r"/v1/files(?:/(?P<id>[^/]+)(?:/(?P<content>content))?)?")
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?')
_MAX_PART_HEAD = 16 * 1024
_LINE = 16  # a generated file is lines of its own offsets: "000000000000016\n"


@dataclass
class Part:
    """One part of a multipart body: its form name, filename and type, size, and first bytes."""

    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    prefix: bytearray = field(default_factory=bytearray)


class MultipartParser:
    """A ``multipart/form-data`` body, fed in pieces, read in one pass.

    Each part keeps at most ``keep`` bytes of its content; ``parts`` lists them once
    ``close()`` found the closing delimiter.  ``ValueError`` for a malformed body.
    """

    def __init__(self, boundary: bytes, keep: int) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._keep = keep
        self._buf = bytearray(b"\r\n")  # the first delimiter has no CRLF before it
        self._state = "preamble"
        self.parts: list[Part] = []

    def feed(self, data: bytes) -> None:
        self._buf += data
        while self._step():
            pass

    def close(self) -> list[Part]:
        if self._state != "done":
            raise ValueError("the multipart body ends before its closing delimiter")
        return self.parts

    def _content(self, data: bytes | bytearray) -> None:
        part = self.parts[-1]
        part.size += len(data)
        room = self._keep - len(part.prefix)
        if room > 0:
            part.prefix += data[:room]

    def _step(self) -> bool:
        """Advance through the buffer; False when more bytes are needed."""
        buf = self._buf
        if self._state in ("preamble", "body"):
            found = buf.find(self._delimiter)
            if found < 0:
                keep = len(self._delimiter) - 1
                if len(buf) > keep:
                    if self._state == "body":
                        self._content(buf[: len(buf) - keep])
                    del buf[: len(buf) - keep]
                return False
            if self._state == "body":
                self._content(buf[:found])
            del buf[: found + len(self._delimiter)]
            self._state = "after"
            return True
        if self._state == "after":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "done"
                return False
            end = buf.find(b"\r\n")  # transport padding may precede the line end
            if end < 0:
                return False
            del buf[: end + 2]
            self._state = "head"
            return True
        if self._state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_PART_HEAD:
                    raise ValueError("a part's header section is too long")
                return False
            self.parts.append(_part(bytes(buf[:end])))
            del buf[: end + 4]
            self._state = "body"
            return True
        buf.clear()  # done: the epilogue is ignored
        return False


def _part(head: bytes) -> Part:
    part = Part()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-type":
            part.content_type = value.strip()
        elif name == "content-disposition":
            for param in value.split(";")[1:]:
                key, _, raw = param.strip().partition("=")
                text = raw.strip().strip('"')
                if key.lower() == "name":
                    part.name = text
                elif key.lower() == "filename":
                    part.filename = text
    return part


@dataclass(frozen=True)
class Upload:
    """What ``POST /v1/files`` sent: the ``file`` part, or why it cannot be taken."""

    part: Part | None
    error: str | None = None


@dataclass
class _File:
    id: str
    filename: str
    mime_type: str
    created_at: float
    downloadable: bool
    source: Source

    def json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": "file",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": self.source.size,
            "created_at": timestamp(self.created_at),
            "downloadable": self.downloadable,
        }


class FileStore:
    """The files a MockServer holds (``server.files``).

    ``stored_bytes``: content kept per upload (the rest is counted, not kept).
    ``download_bytes_sent`` counts what ``GET /v1/files/{id}/content`` served.
    Past ``max_files`` the oldest are dropped.
    """

    def __init__(self) -> None:
        self.stored_bytes = 1024 * 1024
        self.max_files = 1000
        self.download_bytes_sent = 0
        self._files: dict[str, _File] = {}
        self._cut: CutFault | None = None
        self._rng = random.Random()

    def add(
        self,
        content: bytes | None = None,
        *,
        size: int | None = None,
        filename: str = "output.txt",
        mime_type: str = "text/plain",
        downloadable: bool = True,
    ) -> str:
        """A file as a tool would create it; its id.

        ``content``, or ``size`` bytes generated while sent: 16-byte lines each holding
        its own offset (``"000000000000016\\n"``), so any byte is known without the file.
        """
        if (content is None) == (size is None):
            raise ValueError("give content or size")
        source: Source
        if content is not None:
            source = BytesSource(content)
        else:
            assert size is not None
            count = -(-size // _LINE)
            source = LinesSource(count, lambda i: b"%015d\n" % (i * _LINE), _LINE, size)
        return self._put(filename, mime_type, downloadable, source)

    def content(self, file_id: str) -> bytes:
        """What the server kept of a file: all of an added one, the first ``stored_bytes`` of an upload."""
        source = self._get(file_id).source
        return b"".join(source.chunks(0, source.size))

    def cut_downloads(self, after: int, *, every: int = 1, times: int | None = 1) -> None:
        """Close the connection after ``after`` body bytes of every ``every``-th download, ``times`` times."""
        self._cut = CutFault(after, every, times)

    async def receive(self, body: AsyncIterator[bytes], content_type: str) -> Upload:
        """Read a whole upload, keeping what ``stored_bytes`` allows; a malformed one is read to its end too."""
        match = _BOUNDARY.search(content_type) if content_type.lower().startswith("multipart/form-data") else None
        parser = MultipartParser(match.group(1).encode(), self.stored_bytes) if match else None
        error = None if parser is not None else "the body must be multipart/form-data with a boundary"
        async for piece in body:
            if parser is not None and error is None:
                try:
                    parser.feed(piece)
                except ValueError as exc:
                    error = str(exc)
        if parser is None or error is not None:
            return Upload(None, error)
        try:
            parts = parser.close()
        except ValueError as exc:
            return Upload(None, str(exc))
        part = next((p for p in parts if p.name == "file"), None)
        return Upload(part, None if part is not None else "file: Field required")

    def answer(self, method: str, path: str, query: str, headers: Mapping[str, str], upload: Upload | None) -> Answer:
        match = _PATH.fullmatch(path)
        if match is None:
            raise ApiError(404, "not_found_error", "Not Found")
        betas = {beta.strip() for beta in headers.get("anthropic-beta", "").split(",")}
        if FILES_BETA not in betas:
            message = f"mock server: the Files API is in beta; send the header `anthropic-beta: {FILES_BETA}`"
            raise ApiError(400, "invalid_request_error", message)
        file_id, content = match.group("id"), match.group("content")
        if file_id is None:
            if method == "POST" and upload is not None:
                return json_answer(self._upload(upload).json())
            if method == "GET":
                return json_answer(page([(f.id, f.json()) for f in reversed(self._files.values())], query))
        elif method == "GET" and content is None:
            return json_answer(self._get(file_id).json())
        elif method == "DELETE" and content is None:
            self._get(file_id)
            del self._files[file_id]
            return json_answer({"id": file_id, "type": "file_deleted"})
        elif method == "GET":
            return self._download(self._get(file_id), headers.get("range"))
        raise ApiError(405, "invalid_request_error", f"method {method} is not allowed here")

    def _put(self, filename: str, mime_type: str, downloadable: bool, source: Source) -> str:
        file = _File(random_id("file_", self._rng), filename, mime_type, time.time(), downloadable, source)
        self._files[file.id] = file
        while len(self._files) > self.max_files:
            del self._files[next(iter(self._files))]
        return file.id

    def _upload(self, upload: Upload) -> _File:
        part = upload.part
        if part is None:
            raise ApiError(400, "invalid_request_error", upload.error or "file: Field required")
        # Only the first ``stored_bytes`` are kept; the size reported is the size received.
        source = _Kept(bytes(part.prefix), part.size)
        mime_type = part.content_type or "application/octet-stream"
        return self._get(self._put(part.filename or "upload", mime_type, False, source))

    def _get(self, file_id: str) -> _File:
        file = self._files.get(file_id)
        if file is None:
            raise ApiError(404, "not_found_error", f"File not found: {file_id}")
        return file

    def _download(self, file: _File, range_header: str | None) -> Answer:
        if not file.downloadable:
            # The API lets only files created by tools be downloaded; the docs do not give the status.
            message = f"File {file.id} cannot be downloaded: only files created by tools can be"
            raise ApiError(400, "invalid_request_error", message)
        span = byte_range(range_header, file.source.size)
        cut = self._cut.next_cut() if self._cut is not None else None
        disposition = [("content-disposition", f"attachment; filename*=utf-8''{quote(file.filename)}")]
        return Answer(200, file.source, file.mime_type, disposition, span, cut, self._count_sent)

    def _count_sent(self, size: int) -> None:
        self.download_bytes_sent += size


@dataclass(frozen=True)
class _Kept:
    """An upload's kept prefix, reporting the size that was received."""

    data: bytes
    size: int

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        return BytesSource(self.data).chunks(start, min(end, len(self.data)))
