"""A loopback HTTP/1.1 server speaking the streaming Messages API, on plain anyio.

Hand-written HTTP rather than a framework so the bytes on the wire are exactly
what a test asks for: chunk boundaries, an abrupt close in the middle of a
chunked body, a stream that stalls, a connection that is never answered.
"""

from __future__ import annotations

import contextlib
import http
import ipaddress
import json
import logging
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener
from pydantic import ValidationError

from ._answers import Answer, ApiError, BytesSource
from ._batches import BatchStore
from ._cache import BoundedCache
from ._files import FileStore, Upload
from ._lorem import lorem
from ._ratelimit import RateLimiter
from ._render import (
    MALFORMED,
    PING,
    Plan,
    PrefillError,
    Rendered,
    chunk_frames,
    error_event,
    frame,
    message_json,
    message_start,
    plan_for,
    random_id,
    render,
    split_events,
)
from ._replies import Fault, Reply, default_error_message, default_error_type, fixture_filename
from ._tokens import count_tokens

__all__ = ["BUILTIN_FIXTURES", "OVERRIDE_HEADER", "SIZE_LIMITS", "MockServer", "RecordedRequest", "RefusedRequest"]

_log = logging.getLogger("streamkit.testing")

OVERRIDE_HEADER = "x-streamkit-mock-reply"
"""Request header carrying a Reply as JSON; it wins over the queue and the default."""

BUILTIN_FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""The recorded transcripts shipped with streamkit, searched after the user's fixture directories."""

_MiB = 1024 * 1024
# A head carries the override header, a whole Reply as JSON: 0.4 MB for the benchmarks'
# 100,000 deltas, 4 MB for a million.  Bodies are capped at the API's own request limits
# (SIZE_LIMITS; the client enforces Messages' too).  Header lines as many as http.client allows.
_MAX_HEAD = 8 * _MiB
SIZE_LIMITS: Mapping[str, int] = {
    "messages": 32 * _MiB,
    "count_tokens": 32 * _MiB,
    "batches": 256 * _MiB,
    "files": 500 * _MiB,
}
"""Request body limits per endpoint, as the API's CDN enforces them (413 with an HTML page above)."""
_LIMIT_BY_PATH = {"/v1/messages/count_tokens": "count_tokens", "/v1/messages/batches": "batches", "/v1/files": "files"}
# After a 413 the rest of the body is read and dropped, so the client can read the answer
# instead of a reset; at most this much, for at most this long.
_DRAIN_BYTES, _DRAIN_SECONDS = 1024 * _MiB, 30.0
_HTML_413 = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_MAX_HEADER_LINES = 100
_WRITE_SIZE = 256 * 1024  # bytes handed to the socket per send on the fast path
# Cache bounds.  A rendering is counted twice (its events, and the same bytes framed as
# chunks for the fast path): 24 MB for 100,000 deltas, 240 MB for a million, which still fits.
_RENDER_CACHE, _RENDER_CACHE_BYTES = 64, 256 * _MiB
_HEADER_CACHE, _HEADER_CACHE_BYTES = 16, 2 * _MAX_HEAD
_FIXTURE_CACHE, _FIXTURE_CACHE_BYTES = 64, 128 * _MiB
_END = b"0\r\n\r\n"  # the chunked body's terminating chunk
_DISCONNECTS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ConnectionError,
)
_REASONS = {529: "Overloaded"}
# Response headers a Reply may not override: they frame the body.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


@cache
def _builtin_default() -> Reply:
    return Reply.text(lorem(2000))


def _rendered_size(rendered: Rendered) -> int:
    """Bytes a rendering holds: its events, and the same bytes framed as chunks once sent on the fast path."""
    return 2 * sum(map(len, rendered.events))


@dataclass(frozen=True)
class RefusedRequest:
    """A request answered with an error before any reply was chosen; its body was not kept.

    ``status`` is 421 for a Host the server does not serve, 413 for a body over the cap,
    400 or 431 for a malformed one.
    """

    status: int
    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, for tests to assert on."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(frozen=True)
class _Head:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    keep_alive: bool


@dataclass(frozen=True)
class _Request:
    recorded: RecordedRequest
    keep_alive: bool
    upload: Upload | None = None  # POST /v1/files: the parsed upload, its body not kept


class _Connection:
    """Reads HTTP/1.1 requests off one TCP stream, keeping bytes that arrive early."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def _fill(self) -> None:
        self._buf += await self.stream.receive(65536)

    async def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def _read_line(self) -> bytes:
        start = 0
        while (end := self._buf.find(b"\r\n", start)) < 0:
            if len(self._buf) > 65536:
                raise _BadRequest(400, "chunk size line too long")
            start = max(0, len(self._buf) - 1)
            await self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    async def _read_head(self) -> bytes | None:
        start = 0
        while True:
            # Tolerate blank lines before a request line (RFC 9112, 2.2).
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            end = self._buf.find(b"\r\n\r\n", start)
            if end > _MAX_HEAD or (end < 0 and len(self._buf) > _MAX_HEAD):
                raise _BadRequest(431, f"request head over the mock server's limit of {_MAX_HEAD:,} bytes")
            if end >= 0:
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                return head
            start = max(0, len(self._buf) - 3)
            try:
                await self._fill()
            except anyio.EndOfStream:
                if self._buf:
                    raise
                return None  # the client closed an idle keep-alive connection

    async def _read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes, at least one: what has arrived, without waiting for all ``n``."""
        if not self._buf:
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def _read_chunked(self, limit: int) -> AsyncIterator[bytes]:
        total = 0
        while True:
            line = await self._read_line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "invalid chunk size") from None
            if size == 0:
                for _ in range(_MAX_HEADER_LINES + 1):
                    if not await self._read_line():  # trailer fields, ignored
                        return
                raise _BadRequest(431, f"more than {_MAX_HEADER_LINES} trailer fields")
            total += size
            if total > limit:
                raise _too_large(total, limit)
            while size:
                piece = await self._read_some(size)
                size -= len(piece)
                yield piece
            if await self._read_exact(2) != b"\r\n":
                raise _BadRequest(400, "invalid chunk")

    async def _read_length(self, length: int) -> AsyncIterator[bytes]:
        while length:
            piece = await self._read_some(length)
            length -= len(piece)
            yield piece

    async def read_head(self) -> _Head | None:
        """The next request's head, or None when the client closed the connection between requests."""
        head = await self._read_head()
        if head is None:
            return None
        lines = head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        if len(lines) > _MAX_HEADER_LINES + 1:
            raise _BadRequest(431, f"more than {_MAX_HEADER_LINES} header fields")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            key = name.decode("latin-1").lower()
            try:
                text = value.strip().decode()
            except UnicodeDecodeError:
                text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        path, _, query = target.partition("?")
        return _Head(method, path, query, headers, keep_alive)

    async def read_body(self, head: _Head, limit: int) -> bytes:
        """The body of the request ``head`` begins; a body over ``limit`` is refused before any of it is read."""
        return b"".join([piece async for piece in self.body(head, limit)])

    def body(self, head: _Head, limit: int) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive (``_BadRequest`` 413 once it passes ``limit``), for bodies not to hold."""
        headers = head.headers
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = 0
        if not chunked and "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _BadRequest(400, "invalid content-length") from None
            if length < 0:
                raise _BadRequest(400, "invalid content-length")
            if length > limit:
                raise _too_large(length, limit)
        return self._continue_then(self._read_chunked(limit) if chunked else self._read_length(length), headers)

    async def _continue_then(self, pieces: AsyncIterator[bytes], headers: dict[str, str]) -> AsyncIterator[bytes]:
        if headers.get("expect", "").lower() == "100-continue":
            await self.stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        async for piece in pieces:
            yield piece

    async def drain(self) -> None:
        """Read and drop what the client still sends (after a 413), within bounds, so it can read the answer."""
        dropped = len(self._buf)
        self._buf.clear()
        with anyio.move_on_after(_DRAIN_SECONDS):
            with contextlib.suppress(*_DISCONNECTS):
                await self.stream.send_eof()
                while dropped < _DRAIN_BYTES:
                    dropped += len(await self.stream.receive(65536))


def _too_large(size: int, limit: int) -> _BadRequest:
    message = f"request body of {size:,} bytes is over the mock server's limit of {limit:,}"
    return _BadRequest(413, message, "request_too_large")


_MISDIRECTED = (
    "mock server: the Host header must name this machine's loopback (localhost, 127.0.0.1, [::1])"
    " or a host allowed with allowed_hosts / --allow-host"
)


def _host_name(value: str) -> str | None:
    """The host in a Host header value, lowercased, without port or brackets; None if malformed."""
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    if not name or (port and not (port.isascii() and port.isdigit())):
        return None
    return name.lower()


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _head(status: int, headers: Iterable[tuple[str, str]], extra: dict[str, str]) -> bytes:
    """Status line and headers; ``extra`` (the Reply's headers) replaces same-named ones."""
    override = {k.lower() for k in extra} - _FRAMING
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines += [f"{k}: {v}" for k, v in headers if k not in override]
    lines += [f"{k}: {v}" for k, v in extra.items() if k.lower() in override]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _REASONS.get(status, "Unknown")


async def _send_parts(stream: SocketStream, parts: Iterable[bytes | memoryview]) -> None:
    """Send many small byte strings as few large writes."""
    batch: list[bytes | memoryview] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= _WRITE_SIZE:
            await stream.send(b"".join(batch))
            batch.clear()
            size = 0
    if batch:
        await stream.send(b"".join(batch))


async def _wait_closed(stream: SocketStream) -> None:
    """Wait until the client goes away, discarding anything it sends meanwhile."""
    try:
        while True:
            await stream.receive(65536)
    except _DISCONNECTS:
        return


class MockServer:
    """A real loopback server answering ``POST /v1/messages`` with queued Replies.

    Use as ``async with MockServer(*replies) as server:``.  It owns one task
    group: every connection task is a child of it and every socket is closed
    when the block exits.

    ``fixture_dirs`` are searched, in order and before ``BUILTIN_FIXTURES``, for the
    transcripts Replies name.  Only requests whose Host is a loopback name, the bound
    host, or one of ``allowed_hosts`` are answered: a web page cannot reach the server
    through a DNS name rebound to 127.0.0.1.

    ``server.batches`` (BatchStore) and ``server.files`` (FileStore) hold the state of the
    batches and files endpoints; ``size_limits`` overrides ``SIZE_LIMITS`` per endpoint.
    ``limits`` (a ``RateLimiter``) decides before each reply whether to refuse it with a
    429 or 529, and adds the ``anthropic-ratelimit-*`` headers to every Messages answer (and to
    the answers of the endpoints it limits, see ``RateLimiter(endpoints=...)``).
    """

    def __init__(
        self,
        *replies: Reply,
        default: Reply | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        fixture_dirs: Iterable[str | os.PathLike[str]] = (),
        allowed_hosts: Iterable[str] = (),
        size_limits: Mapping[str, int] | None = None,
        limits: RateLimiter | None = None,
    ) -> None:
        unknown = set(size_limits or ()) - set(SIZE_LIMITS)
        if unknown:
            raise ValueError(f"size_limits: unknown endpoints {sorted(unknown)}; they are {sorted(SIZE_LIMITS)}")
        self.size_limits = {**SIZE_LIMITS, **(size_limits or {})}
        self.batches = BatchStore(self._batch_message, lambda: self._default or _builtin_default())
        self.files = FileStore()
        self.requests: list[RecordedRequest] = []
        self.limits = limits
        self.refused: list[RefusedRequest] = []
        # Off only for the long-running `python -m` server, whose memory must not grow per request.
        self._record = True
        self._queue: deque[Reply] = deque(replies)
        self._default = default
        self._host = host
        self._port = port
        self._fixture_dirs = (*map(_fixture_dir, fixture_dirs), BUILTIN_FIXTURES)
        allowed = {(_host_name(name) or name).lower() for name in allowed_hosts}  # "[::2]:80", "::2": "::2"
        if host not in ("", "0.0.0.0", "::"):  # the bound address answers to its own name
            allowed.add(host.lower())
        self._allowed_hosts = frozenset(allowed)
        self._open_connections = 0
        self._connections_changed: anyio.Event | None = None
        self._base_url: str | None = None
        self._stack: AsyncExitStack | None = None
        self._rng = random.Random()
        # Caches for replies used many times (the default, header overrides):
        # rendering a long reply once per request would make the server the bottleneck.
        self._rendered: BoundedCache[tuple[int, Plan], tuple[Reply, Rendered]]
        self._rendered = BoundedCache(_RENDER_CACHE, _RENDER_CACHE_BYTES)
        self._header_replies: BoundedCache[str, Reply] = BoundedCache(_HEADER_CACHE, _HEADER_CACHE_BYTES)
        self._fixtures: BoundedCache[Path, Rendered] = BoundedCache(_FIXTURE_CACHE, _FIXTURE_CACHE_BYTES)

    @property
    def base_url(self) -> str:
        """``http://host:port`` without a trailing slash; only while the server runs."""
        if self._base_url is None:
            raise RuntimeError("MockServer is not running; use `async with MockServer() as server`")
        return self._base_url

    @property
    def open_connections(self) -> int:
        """Client TCP connections currently open, to prove a client leaks none."""
        return self._open_connections

    # The timeout is a parameter (not the caller's fail_after) so that the error can say how many were open.
    async def wait_connections(self, count: int, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Return once exactly ``count`` client connections are open; TimeoutError after ``timeout`` s.

        Woken by each connect and disconnect, so a test needs no polling loop to see a close.
        """
        with anyio.move_on_after(timeout):
            while self._open_connections != count:
                if self._connections_changed is None:
                    self._connections_changed = anyio.Event()
                await self._connections_changed.wait()
            return
        now = self._open_connections
        raise TimeoutError(f"MockServer: waited {timeout:g} s for the open connections to be {count}; they are {now}")

    def _count_connection(self, change: int) -> None:
        self._open_connections += change
        changed, self._connections_changed = self._connections_changed, None
        if changed is not None:
            changed.set()

    def push(self, *replies: Reply) -> None:
        """Queue more replies, answered in order before the default."""
        self._queue.extend(replies)

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("MockServer is already running")
        async with AsyncExitStack() as stack:
            listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
            stack.push_async_callback(listener.aclose)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)  # runs first on exit
            port = listener.extra(SocketAttribute.local_port)
            host = f"[{self._host}]" if ":" in self._host else self._host
            self._base_url = f"http://{host}:{port}"
            task_group.start_soon(self._serve, listener, task_group)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._base_url = None
        if stack is None:
            return
        try:
            await stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The task group wraps an exception raised in the ``async with`` body;
            # let it propagate unwrapped so ``pytest.raises`` and tracebacks read naturally.
            if exc is None or group.exceptions != (exc,):
                raise

    async def _serve(self, listener: MultiListener[SocketStream], task_group: TaskGroup) -> None:
        await listener.serve(self._serve_connection, task_group)

    async def _serve_connection(self, stream: SocketStream) -> None:
        self._count_connection(+1)
        try:
            conn = _Connection(stream)
            while True:
                try:
                    request = await self._read_request(conn)
                except _BadRequest as exc:
                    if exc.status == 413:  # from the CDN: an HTML page, no request-id
                        head = _head(413, _base_headers("text/html", None, False, len(_HTML_413)), {})
                        await stream.send(head + _HTML_413)
                        await conn.drain()
                        break
                    # The connection closes, so whatever else the client sends is never read.
                    rid = random_id("req_", self._rng)
                    body = _error_body(exc.error_type, exc.message, rid)
                    await self._send_json(stream, exc.status, body, rid, False)
                    break
                if request is None:
                    break
                if self._record:
                    self.requests.append(request.recorded)
                if not await self._respond(stream, request):
                    break
        except _DISCONNECTS:
            pass
        finally:
            try:
                await anyio.aclose_forcefully(stream)  # raises Cancelled when the server exits
            finally:
                self._count_connection(-1)

    async def _read_request(self, conn: _Connection) -> _Request | None:
        """The next request, its Host checked before its body is read; None at a clean close."""
        head = await conn.read_head()
        if head is None:
            return None
        name = _host_name(head.headers.get("host", ""))
        try:
            if name is None or not (_is_loopback(name) or name in self._allowed_hosts):
                raise _BadRequest(421, _MISDIRECTED)
            limit = self.size_limits[_LIMIT_BY_PATH.get(head.path, "messages")]
            if head.method == "POST" and head.path == "/v1/files":
                upload = await self.files.receive(conn.body(head, limit), head.headers.get("content-type", ""))
                body = b""
            else:
                upload = None
                body = await conn.read_body(head, limit)
        except _BadRequest as exc:
            host = head.headers.get("host")
            _log.warning("mock server refused %s %s (Host %r): %s", head.method, head.path, host, exc.message)
            if self._record:
                self.refused.append(RefusedRequest(exc.status, head.method, head.path, head.headers))
            raise
        recorded = RecordedRequest(head.method, head.path, head.headers, body, head.query)
        return _Request(recorded, head.keep_alive, upload)

    async def _respond(self, stream: SocketStream, request: _Request) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        try:
            return await self._answer(stream, request)
        except _DISCONNECTS:
            return False
        except Exception as exc:
            _log.exception(
                "mock server failed to answer %s %s",
                request.recorded.method,
                request.recorded.path,
            )
            rid = random_id("req_", self._rng)
            body = _error_body("api_error", f"mock server error: {exc!r}", rid)
            await self._send_json(stream, 500, body, rid, False)
            return False

    def _select(self, request: RecordedRequest) -> tuple[Reply, bool]:
        """The reply for a request, and whether it may be reused (worth caching)."""
        override = request.headers.get(OVERRIDE_HEADER)
        if override is not None:
            reply = self._header_replies.get(override)
            if reply is None:
                try:
                    reply = Reply.model_validate_json(override)
                except ValidationError as exc:
                    raise _BadRequest(400, f"invalid {OVERRIDE_HEADER} header: {_problems(exc)}") from None
                self._header_replies.put(override, reply, len(override))
            return reply, True
        if self._queue:
            return self._queue.popleft(), False
        return (self._default or _builtin_default()), True

    def _render(self, reply: Reply, plan: Plan, reused: bool) -> Rendered:
        if not reused:
            return render(reply, plan)
        key = (id(reply), plan)
        hit = self._rendered.get(key)
        if hit is not None and hit[0] is reply:
            return hit[1]
        rendered = render(reply, plan)
        return self._rendered.put(key, (reply, rendered), _rendered_size(rendered))[1]

    def _fixture(self, name: str) -> Rendered:
        """The transcript a fixture name stands for; LookupError (naming no other file) if none."""
        filename = fixture_filename(name)  # again: model_copy and model_construct skip validation
        for directory in self._fixture_dirs:
            path = (directory / filename).resolve()
            if path.parent == directory and path.is_file():  # a symlink may not lead out
                break
        else:
            raise LookupError(f"mock server: no fixture named {name!r}")
        rendered = self._fixtures.get(path)
        if rendered is None:
            try:
                raw = path.read_bytes()
            except OSError:
                raise LookupError(f"mock server: fixture {name!r} could not be read") from None
            # The recorded files were stored trimmed: without a final blank line
            # a client would never dispatch the last event (message_stop).
            if not raw.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
                raw += b"\n\n"
            rendered = self._fixtures.put(path, Rendered(split_events(raw), 0), 2 * len(raw))
        return rendered

    async def _answer(self, stream: SocketStream, request: _Request) -> bool:
        recorded = request.recorded
        keep_alive = request.keep_alive
        rid = random_id("req_", self._rng)
        if recorded.path != "/v1/messages":
            return await self._answer_endpoint(stream, recorded, request.upload, rid, keep_alive)
        if recorded.method != "POST":
            body = _error_body("not_found_error", "Not Found", rid)
            return await self._send_json(stream, 404, body, rid, keep_alive)
        try:
            payload = json.loads(recorded.body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            message = "mock server: the request body must be a JSON object"
            body = _error_body("invalid_request_error", message, rid)
            return await self._send_json(stream, 400, body, rid, keep_alive)
        try:
            reply, reused = self._select(recorded)
        except _BadRequest as exc:
            body = _error_body("invalid_request_error", exc.message, rid)
            return await self._send_json(stream, 400, body, rid, keep_alive)
        if self.limits is None:
            return await self._serve_reply(stream, reply, reused, payload, rid, keep_alive)
        with self.limits.admit(payload, reply, replaceable=reply is _builtin_default()) as admission:
            return await self._serve_reply(stream, admission.reply, False, payload, rid, keep_alive)

    async def _serve_reply(
        self, stream: SocketStream, reply: Reply, reused: bool, payload: dict[str, Any], rid: str, keep_alive: bool
    ) -> bool:
        request_id = reply.request_id or rid
        # None: send no request-id header.
        header_id = request_id if reply.request_id_header else None

        content = reply.raw_body if reply.body is None else reply.body.encode()
        if content is not None:
            content_type = reply.content_type or "text/plain; charset=utf-8"
            head = _head(reply.status, _base_headers(content_type, header_id, keep_alive, len(content)), reply.headers)
            view = memoryview(content)  # slices of a large body are sent without copying it whole
            await _send_parts(stream, [head, *(view[i : i + _WRITE_SIZE] for i in range(0, len(view), _WRITE_SIZE))])
            return keep_alive
        if reply.status != 200:
            error_type = reply.error_type or default_error_type(reply.status)
            message = reply.error_message or default_error_message(error_type)
            body = _error_body(error_type, message, request_id)
            return await self._send_json(stream, reply.status, body, header_id, keep_alive, reply.headers)
        try:
            plan = plan_for(reply, payload)
        except PrefillError as exc:
            body = _error_body("invalid_request_error", str(exc), request_id)
            return await self._send_json(stream, 400, body, header_id, keep_alive, reply.headers)

        if reply.fixture is not None:
            try:
                transcript = self._fixture(reply.fixture)
            except (LookupError, ValueError) as exc:
                body = _error_body("api_error", str(exc), request_id)
                return await self._send_json(stream, 500, body, header_id, keep_alive)
            return await self._stream(stream, reply, b"", transcript, header_id, keep_alive)
        rendered = self._render(reply, plan, reused)
        message_id = reply.message_id or random_id("msg_", self._rng)
        if payload.get("stream") is True:
            first = message_start(reply, message_id)
            return await self._stream(stream, reply, first, rendered, header_id, keep_alive)
        body = message_json(reply, plan, message_id, rendered.n_deltas)
        n_events = len(rendered.events)
        return await self._message(stream, reply, body, n_events, request_id, header_id, keep_alive)

    def _batch_message(self, reply: Reply, params: dict[str, Any], message_id: str) -> bytes:
        """The Message a batch request that succeeded with ``reply`` holds (PrefillError if the API would refuse it)."""
        plan = plan_for(reply, params)
        return message_json(reply, plan, message_id, self._render(reply, plan, True).n_deltas)

    async def _answer_endpoint(
        self, stream: SocketStream, recorded: RecordedRequest, upload: Upload | None, rid: str, keep_alive: bool
    ) -> bool:
        """Batches, token counting, files: the handlers' Answer or ApiError, sent."""
        method, path, query, headers = recorded.method, recorded.path, recorded.query, recorded.headers
        try:
            if path.startswith("/v1/messages/batches"):
                limited = self._endpoint_limit("batches")
                answer = self.batches.answer(method, path, query, headers, recorded.body, self.base_url)
            elif path.startswith("/v1/files"):
                limited = self._endpoint_limit("files")
                answer = self.files.answer(method, path, query, headers, upload)
            elif path == "/v1/messages/count_tokens" and method == "POST":
                limited = self._endpoint_limit("count_tokens")
                answer = count_tokens(recorded.body)
            else:
                raise ApiError(404, "not_found_error", "Not Found")
        except ApiError as exc:
            body = _error_body(exc.error_type, exc.message, rid)
            return await self._send_json(stream, exc.status, body, rid, keep_alive, dict(exc.headers))
        if limited:
            answer = replace(answer, headers=[*answer.headers, *limited])
        return await self._send_answer(stream, answer, rid, keep_alive)

    def _endpoint_limit(self, name: str) -> list[tuple[str, str]]:
        """The rate-limit headers of a request to endpoint ``name``; ``ApiError`` 429 when over its limit."""
        return [] if self.limits is None else self.limits.endpoint(name)

    async def _send_answer(self, stream: SocketStream, answer: Answer, rid: str, keep_alive: bool) -> bool:
        """An Answer's body, generated while it is sent; 206 for a range, cut short for a fault."""
        source = BytesSource(answer.body) if isinstance(answer.body, bytes) else answer.body
        size = source.size
        start, end = answer.span or (0, size)
        keep = keep_alive and answer.cut_after is None
        fields = _base_headers(answer.content_type, rid, keep, end - start)
        if answer.span is not None:
            fields.append(("content-range", f"bytes {start}-{end - 1}/{size}"))
        await stream.send(_head(206 if answer.span else answer.status, [*fields, *answer.headers], {}))
        stop = end if answer.cut_after is None else min(end, start + answer.cut_after)
        sent = 0
        try:
            for piece in source.chunks(start, stop):
                await stream.send(piece)
                sent += len(piece)
        finally:
            if answer.sent is not None:
                answer.sent(sent)
        return keep

    async def _send_json(
        self,
        stream: SocketStream,
        status: int,
        body: bytes,
        request_id: str | None,
        keep_alive: bool,
        extra: dict[str, str] | None = None,
    ) -> bool:
        headers = _base_headers("application/json", request_id, keep_alive, len(body))
        await stream.send(_head(status, headers, extra or {}) + body)
        return keep_alive

    async def _message(
        self,
        stream: SocketStream,
        reply: Reply,
        body: bytes,
        n_events: int,
        request_id: str,
        header_id: str | None,
        keep_alive: bool,
    ) -> bool:
        """A non-streaming answer; a fault cuts the body or withholds it (see package docs)."""
        fault = reply.fault
        if reply.delay:
            await anyio.sleep(reply.delay * n_events)
        if fault is not None and fault.kind == "error":
            status = 529 if fault.error_type == "overloaded_error" else 500
            error = _error_body(fault.error_type, fault.message, request_id)
            return await self._send_json(stream, status, error, header_id, keep_alive, reply.headers)
        if fault is not None and fault.kind == "hang":
            await _wait_closed(stream)
            return False
        keep = keep_alive and fault is None
        head = _head(
            200,
            _base_headers("application/json", header_id, keep, len(body)),
            reply.headers,
        )
        if fault is None:
            await stream.send(head + body)
            return keep_alive
        if fault.kind == "stall":
            await stream.send(head)
            await _wait_closed(stream)
        else:  # cut, truncate, malformed: half the promised body (or at_byte bytes), then close
            end = len(body) // 2 if fault.at_byte is None else fault.at_byte
            await stream.send(head + body[:end])
        return False

    async def _stream(
        self,
        stream: SocketStream,
        reply: Reply,
        first: bytes,
        rendered: Rendered,
        request_id: str | None,
        keep_alive: bool,
    ) -> bool:
        """An SSE answer: ``first`` (message_start, or empty) then the rendered events."""
        fault = reply.fault
        if fault is not None and fault.kind not in ("truncate", "malformed"):
            keep_alive = False
        head_fields = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("transfer-encoding", "chunked"),
            ("cache-control", "no-cache"),
            *_common_headers(request_id, keep_alive),
        ]
        head = _head(200, head_fields, reply.headers)

        per_event = reply.chunk_per_event or reply.delay > 0
        if fault is None and not per_event:  # the fast path: pre-framed 64 KiB chunks
            parts = [head, frame(first)] if first else [head]
            await _send_parts(stream, [*parts, *rendered.frames, _END])
            return keep_alive

        events = [first, *rendered.events] if first else rendered.events
        if fault is not None and fault.at_byte is not None:
            cut = b"".join(events)[: fault.at_byte]
            await _send_parts(stream, [head, *chunk_frames(cut)])
            return False  # the caller closes the socket without the terminating chunk
        count = len(events) if fault is None else min(fault.after, len(events))
        if not per_event:
            await _send_parts(stream, [head, *chunk_frames(b"".join(events[:count]))])
        else:
            await stream.send(head)
            for index in range(count):
                if index and reply.delay:
                    await anyio.sleep(reply.delay)
                await stream.send(frame(events[index]))
            if count and fault is not None and reply.delay:
                await anyio.sleep(reply.delay)
        if fault is None:
            await stream.send(_END)
            return keep_alive
        return await self._fault(stream, fault, events[count] if count < len(events) else b"", keep_alive)

    async def _fault(self, stream: SocketStream, fault: Fault, following: bytes, keep_alive: bool) -> bool:
        if fault.kind == "error":
            await stream.send(frame(error_event(fault.error_type, fault.message)) + _END)
            return False
        if fault.kind == "cut":
            half = following[: len(following) // 2]
            if half:
                await stream.send(frame(half))
            return False  # the caller closes the socket without the terminating chunk
        if fault.kind == "truncate":
            await stream.send(_END)
            return keep_alive
        if fault.kind == "malformed":
            await stream.send(frame(MALFORMED) + _END)
            return keep_alive
        if fault.kind == "stall":
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_ping_forever, stream, fault.ping_interval, task_group)
                await _wait_closed(stream)
                task_group.cancel_scope.cancel()
            return False
        await _wait_closed(stream)  # hang
        return False


async def _ping_forever(stream: SocketStream, interval: float, task_group: TaskGroup) -> None:
    try:
        while True:
            await anyio.sleep(interval)
            await stream.send(frame(PING))
    except _DISCONNECTS:
        task_group.cancel_scope.cancel()


def _common_headers(request_id: str | None, keep_alive: bool) -> list[tuple[str, str]]:
    headers = [("request-id", request_id)] if request_id is not None else []
    headers.append(("connection", "keep-alive" if keep_alive else "close"))
    return headers


def _base_headers(content_type: str, request_id: str | None, keep_alive: bool, length: int) -> list[tuple[str, str]]:
    return [
        ("content-type", content_type),
        ("content-length", str(length)),
        *_common_headers(request_id, keep_alive),
    ]


def _fixture_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory).resolve()
    if not path.is_dir():
        raise ValueError(f"fixture directory {os.fspath(directory)!r} is not a directory")
    return path


def _problems(exc: ValidationError) -> str:
    """A ValidationError in one line, without pydantic's dump of the input and its version-specific links."""
    return "; ".join(
        ".".join(map(str, error["loc"])) + ": " + error["msg"] if error["loc"] else error["msg"]
        for error in exc.errors()
    )


def _error_body(error_type: str, message: str, request_id: str | None) -> bytes:
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type, "message": message},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body).encode()
