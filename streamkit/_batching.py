"""What the batch, token counting and files calls decide before and between requests, for both shells.

No I/O: the checks of a batch before it is sent, the path of each endpoint, the cursor of
the next page of a list, the schedule of ``wait()``'s polls, and the size of a file to
upload (from its metadata, never by reading it).
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import random
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import ValidationError

from ._batch_types import BatchRequest, BatchWaitTimeoutError, MessageBatch, ResultsNotReadyError
from ._errors import LocalFileError, ProtocolError, RequestBodyError, RequestTooLargeError
from ._message import APIObject
from ._params import Query, message_body

BATCHES_PATH = "/v1/messages/batches"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
FILES_PATH = "/v1/files"
FILES_BETA = "files-api-2025-04-14"
"""The ``anthropic-beta`` the Files API needs; streamkit adds it to every files call."""
MAX_BATCH_REQUESTS = 100_000
"""Requests one batch may hold."""
_O = TypeVar("_O", bound=APIObject)


def resource_path(base: str, resource_id: str, *rest: str) -> str:
    """``base/<id>/<rest...>``, the id quoted: an id with a ``/`` or ``?`` must not reach another endpoint."""
    return "/".join([base, quote(resource_id, safe=""), *rest])


def batch_body(requests: Iterable[BatchRequest]) -> dict[str, Any]:
    """The body of ``batches.create()``; refused before sending past 100,000 requests or on a repeated ``custom_id``.

    Each request's ``params`` are checked as ``messages.create()`` checks its keywords.
    """
    requests = list(requests)
    if len(requests) > MAX_BATCH_REQUESTS:
        raise RequestTooLargeError(
            f"a batch holds at most {MAX_BATCH_REQUESTS:,} requests, not {len(requests):,}: it was not sent "
            "(split the requests into several batches)",
            error_type="request_too_large",
        )
    listed: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, request in enumerate(requests):
        missing = [key for key in ("custom_id", "params") if key not in request] or [
            key for key in ("model", "max_tokens", "messages") if key not in request["params"]
        ]
        if missing:
            raise RequestBodyError(f"request {number} of the batch has no {', '.join(missing)}: nothing was sent")
        custom_id = request["custom_id"]
        if custom_id in seen:
            raise RequestBodyError(
                f"custom_id {custom_id!r} is used by two requests of the batch: results are matched to "
                "requests by custom_id, so each must be unique; nothing was sent"
            )
        seen.add(custom_id)
        params: dict[str, Any] = dict(request["params"])
        model, max_tokens, messages = params.pop("model"), params.pop("max_tokens"), params.pop("messages")
        body = message_body("batches.create", model, max_tokens, messages, params)
        listed.append({"custom_id": custom_id, "params": body})
    return {"requests": listed}


def results_path(batch: MessageBatch, base_url: str) -> str:
    """Where to read an ended batch's results, as a path on the client's own ``base_url``.

    The API key goes only to the configured host: a ``results_url`` elsewhere (a proxy in
    front of the API answers with the API's own URLs) is read at its path on ``base_url``.
    """
    url = batch.results_url
    if url is None:
        raise ResultsNotReadyError(
            f"batch {batch.id} has no results yet: it is {batch.processing_status} (wait() until it has ended)",
            batch=batch,
        )
    if url.startswith(f"{base_url}/"):
        path = url[len(base_url) :]
    else:
        try:
            parts = urlsplit(url)
        except ValueError:  # "http://[::1": refused below
            parts = urlsplit("")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
    # The path is appended to base_url as text: one not starting with "/" ("@evil.example/x",
    # ".evil.example/x") would change the host the key is sent to.
    origin = _origin(base_url)
    if not path.startswith("/") or origin is None or _origin(f"{base_url}{path}") != origin:
        raise ProtocolError(
            f"batch {batch.id}'s results_url {url!r} does not lead to a path on {base_url}: not read "
            "(the API key is sent to the configured host only)",
            data=url.encode(errors="replace"),
        )
    return path


def _origin(url: str) -> tuple[str, str | None, int | None] | None:
    """Scheme, host and port (None: unparseable).

    With the path starting with "/", the authority ends where base_url's does for any parser.
    """
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None


class Page(APIObject):
    """One page of a list: ``data``, and the cursors of its ends."""

    data: list[dict[str, Any]]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


def page_items(page: Page, model: type[_O]) -> list[_O]:
    """The items of a page as ``model``, each carrying the page's request id and headers."""
    items: list[_O] = []
    for item in page.data:
        try:
            parsed = model.model_validate(item)
        except ValidationError as exc:
            raise ProtocolError(
                f"an item of the list is not a {model.__name__}: {exc.errors()[0]['msg']}",
                data=json.dumps(item).encode()[:500],
                request_id=page.request_id,
            ) from exc
        items.append(parsed._received(page.request_id, page.headers))
    return items


def page_query(limit: int | None, after_id: str | None, before_id: str | None) -> dict[str, str | int]:
    query: dict[str, str | int] = {}
    if limit is not None:
        query["limit"] = limit
    if after_id is not None:
        query["after_id"] = after_id
    if before_id is not None:
        query["before_id"] = before_id
    return query


def next_page_query(query: Mapping[str, str | int], page: Page) -> dict[str, str | int] | None:
    """The query of the page after ``page``, or None at the end.

    A list read backwards (``before_id`` given) goes on before the page's first item, any
    other forwards after its last.
    """
    if not page.has_more:
        return None
    backwards = "before_id" in query
    cursor = page.first_id if backwards else page.last_id
    if cursor is None:
        return None
    rest = {key: value for key, value in query.items() if key not in ("after_id", "before_id")}
    return {**rest, ("before_id" if backwards else "after_id"): cursor}


def with_query(query: Query | None, extra: Mapping[str, str | int]) -> dict[str, str | int | float | bool]:
    """A call's ``extra_query`` with a list's own parameters, which win."""
    return {**(query or {}), **extra}


@dataclass(slots=True)
class PollSchedule:
    """The waits between ``wait()``'s polls: from ``interval``, growing by half each time to ``max_interval``.

    Each wait is jittered (between half and all of the current interval), so many waiters
    started together do not poll together.
    """

    interval: float
    max_interval: float

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.max_interval < self.interval:
            raise RequestBodyError(
                f"poll_interval must be > 0 and max_interval >= poll_interval "
                f"(got {self.interval}, {self.max_interval})"
            )

    def next_delay(self, remaining: float | None) -> float:
        """The wait before the next poll, never past ``remaining`` seconds (None: no deadline)."""
        delay = random.uniform(self.interval / 2, self.interval)
        self.interval = min(self.interval * 1.5, self.max_interval)
        return delay if remaining is None else max(min(delay, remaining), 0.0)


def upload_size(file: IO[bytes]) -> int:
    """The size of a binary file object, from its metadata or by seeking: it is never read here.

    httpx sends a file from its start (it seeks to 0, also on a retry), so the size is the
    whole file's.  A file that cannot seek is refused: a retry could not send it again.
    """
    if isinstance(file, io.TextIOBase):
        raise RequestBodyError("upload() needs a file opened in binary mode ('rb'), not text mode")
    try:
        status = os.fstat(file.fileno())
        if stat.S_ISREG(status.st_mode):
            return status.st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass  # no file descriptor (BytesIO): ask the object itself
    try:
        if not file.seekable():
            raise OSError("not seekable")
        here = file.tell()
        size = file.seek(0, os.SEEK_END)
        file.seek(here)
    except (AttributeError, OSError, io.UnsupportedOperation) as exc:
        raise RequestBodyError(
            "upload() needs a seekable binary file: it is sent again from its start on a retry"
        ) from exc
    return size


@dataclass(frozen=True, slots=True)
class Upload:
    """A file sent as the multipart/form-data field ``file``: streamed from ``file``, never read whole.

    ``size`` is the file's whole size (the part httpx sends: it seeks to the start, also
    on a retry); the size limit is checked on it before anything is sent.
    """

    file: IO[bytes]
    filename: str
    mime_type: str
    size: int


def open_upload(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` opened to upload; an ``OSError`` is a ``RequestBodyError``: nothing was sent."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise RequestBodyError(
            f"cannot read the file to upload {os.fspath(path)!r}: {exc.strerror or exc}; nothing was sent"
        ) from exc


def upload_for(file: IO[bytes], filename: str | None, mime_type: str | None) -> Upload:
    """The upload of ``file``: named for the file (or ``upload``), its type guessed from the name."""
    size = upload_size(file)
    if filename is None:
        name = getattr(file, "name", None)
        filename = os.path.basename(name) if isinstance(name, str) and name else "upload"
    if mime_type is None:
        mime_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return Upload(file, filename, mime_type, size)


@dataclass(slots=True)
class DownloadTarget:
    """Where a download goes: ``partial`` (a temporary file beside ``path``) until it is whole, then ``path``."""

    path: Path
    partial: Path
    max_bytes: int
    received: int = 0
    done: bool = False

    def count(self, size: int, request_id: str | None) -> None:
        """Count ``size`` more bytes; ``ProtocolError`` past ``max_bytes``."""
        self.received += size
        if self.received > self.max_bytes:
            raise ProtocolError(
                f"the file's content is over {self.max_bytes:,} bytes: refused (download(max_bytes=...) raises it)",
                request_id=request_id,
            )

    def finish(self) -> None:
        try:
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise self.error(exc, f"cannot move the downloaded file into place at {str(self.path)!r}") from exc
        self.done = True

    def discard(self) -> None:
        """Remove the temporary file, unless it became ``path``."""
        if not self.done:
            try:
                self.partial.unlink(missing_ok=True)
            except OSError as exc:
                raise self.error(exc, f"cannot remove the temporary file {str(self.partial)!r}") from exc

    def error(self, exc: OSError, doing: str | None = None) -> LocalFileError:
        """``exc`` (writing the temporary file unless ``doing`` says otherwise) as a ``LocalFileError``."""
        doing = doing or f"cannot write the download to {str(self.path)!r}"
        return LocalFileError(f"{doing}: {exc.strerror or exc}", path=str(self.path))


def download_target(path: str | os.PathLike[str], max_bytes: int) -> DownloadTarget:
    target = Path(path)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    return DownloadTarget(target, partial, max_bytes)


def wait_timeout_error(batch_id: str, timeout: float | None, last: MessageBatch | None) -> BatchWaitTimeoutError:
    state = f"it is {last.processing_status}" if last is not None else "no poll had answered"
    return BatchWaitTimeoutError(f"batch {batch_id} had not ended after {timeout} s ({state})", batch=last)
