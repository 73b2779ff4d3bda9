"""The aiohttp transport: httpx's request and response objects, aiohttp's HTTP/1.1 on asyncio.

httpx stays the interface (the request layer builds ``httpx.Request`` objects and reads
``httpx.Response`` objects), so everything above the transport is the same on both; only
the bytes move through aiohttp, whose C parser and protocol callbacks cost a fraction of
httpcore's per-chunk work.  Imported only when the default transport picks it (asyncio, with
aiohttp installed: ``streamkit[aiohttp]``).

Kept from the httpx transport: the keep-alive socket options, admission up to
``max_connections`` (waiting counts against the pool timeout), per-request connect and read
timeouts, the environment's proxies (one transport per proxy mount), no redirects, no cookies,
decompression left to httpx (so ``read_capped`` still counts bytes after it).  aiohttp's
failures become the httpx exceptions httpcore would raise, so the request layer maps them as
before.  The write timeout has no counterpart: the small request body goes into the socket
buffer at once, and a peer that stops acknowledging it fails at ``TCP_USER_TIMEOUT``.  One
difference: a response whose whole body has arrived gives its connection back to the pool
even if it was not read to the end (httpcore closes it), which is sound HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
from yarl import URL

from ._wire import Admission, read_failure, stalled, tls_context

READ_SIZE = 16 * 1024  # at most per read: a backlog is handed out (and a gzip chunk inflated) in pieces


def _mapped(exc: Exception) -> httpx.TransportError:
    """The httpx exception httpcore raises for the same failure."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc))
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout("")
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(str(exc))
    return httpx.ReadError(str(exc))


async def _read(content: aiohttp.StreamReader) -> bytes:
    """At most ``READ_SIZE`` bytes; what arrived before a failure is handed out before the failure.

    aiohttp's reads raise a failure (a cut body) ahead of the bytes still buffered; a resume
    then starts from the last byte handed out, so those bytes would be fetched again.
    """
    try:
        return await content.read(READ_SIZE)
    except Exception:
        if content._buffer:  # aiohttp's own buffer: no public read bypasses the failure
            return content._read_nowait(READ_SIZE)
        raise


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, OSError, RuntimeError) as exc:  # RuntimeError: a read on a closed connection
        raise _mapped(exc) from exc


class _UploadSource:
    """An upload's stream, for aiohttp, which reports a failure to read it as a network one.

    The file's ``OSError`` is kept, and raised as it is, so the request layer refuses the
    upload instead of retrying it as a broken connection.
    """

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream
        self.failure: OSError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except OSError as exc:
            self.failure = exc
            raise


class AiohttpBody(httpx.AsyncByteStream):
    """One response body; closing it returns a fully read connection to the pool, else closes it."""

    def __init__(self, response: aiohttp.ClientResponse, admission: Admission) -> None:
        self.response = response
        self._admission: Admission | None = admission

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self.response.content
        with _httpx_errors():
            while chunk := await _read(content):  # bounded: httpx inflates a gzip chunk whole
                yield chunk

    async def aclose(self) -> None:
        admission, self._admission = self._admission, None
        if admission is None:
            return
        if self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()
        admission.leave()


class AiohttpTransport(Admission, httpx.AsyncBaseTransport):
    """An ``httpx`` transport over one ``aiohttp`` session, created on the first request (in the running loop)."""

    def __init__(
        self,
        *,
        limits: httpx.Limits,
        socket_options: list[tuple[int, int, int]],
        proxy: str | None = None,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
    ) -> None:
        super().__init__(limits)
        self._tls = tls_context(verify, cert, trust_env)
        self._keepalive = limits.keepalive_expiry
        self._socket_options = socket_options
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _socket(self, address: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, _ = address
        sock = socket.socket(family, kind, proto)
        for level, name, value in self._socket_options:
            sock.setsockopt(level, name, value)
        return sock

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # admission is ours
            keepalive_timeout=self._keepalive,
            ssl=self._tls,
            socket_factory=self._socket,
        )
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False
        )

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        timeouts = request.extensions.get("timeout") or {}
        key = (timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.admit(request)
        try:
            session = self._session
            if session is None:
                session = self._session = self._new_session()
            headers = list(request.headers.multi_items())
            source: _UploadSource | None = None
            try:
                data: bytes | AsyncIterator[bytes] | None = request.content or None
            except httpx.RequestNotRead:  # an upload, streamed: aiohttp frames it (chunked without a length)
                source = _UploadSource(request.stream)  # type: ignore[arg-type]
                data = source.chunks()
                headers = [(name, value) for name, value in headers if name.lower() != "transfer-encoding"]
            try:
                with _httpx_errors():
                    response = await session.request(
                        request.method,
                        URL(str(request.url), encoded=True),
                        headers=headers,
                        data=data,
                        allow_redirects=False,
                        timeout=self._timeout(request),
                        proxy=self._proxy,
                    )
            except httpx.TransportError:
                if source is not None and source.failure is not None:
                    raise source.failure from None
                raise
        except BaseException:
            self.leave()
            raise
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=AiohttpBody(response, self),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "aiohttp_response": response},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Watchdog(Exception):
    """Set on the body's stream by the watchdog's timer, to end the read it waits in."""


class AiohttpBodyReader:
    """``BodyReader`` for the aiohttp transport: the same contract, one timer per stream instead of one per read.

    aiohttp would restart its read timer at every chunk; here it is off and a single timer
    watches the stream.  A read takes at most ``READ_SIZE`` bytes of what has arrived, so a
    consumer that fell behind gets its next event without the whole backlog parsed first.
    The timer checks the read in progress when it fires, and sets itself
    again for the next deadline if there is still time: the deadline of the read in progress
    (the read timeout, or the stall timeout if shorter, from when it started), the no-progress
    deadline after pings alone, the drain deadline.  A deadline passed ends the read with an
    exception set on aiohttp's stream; the connection is then closed, not reused.
    """

    __slots__ = (
        "_asked",
        "_content",
        "_deadline",
        "_drain",
        "_draining",
        "_loop",
        "_quiet",
        "_quiet_is_stall",
        "_response",
        "_stall",
        "_timer",
        "_timer_at",
        "_waiting",
    )

    def __init__(
        self, response: httpx.Response, body: aiohttp.ClientResponse, stall_timeout: float | None, drain_timeout: float
    ) -> None:
        self._response = response
        self._content = body.content
        self._stall = stall_timeout
        self._drain = drain_timeout
        self._loop = asyncio.get_running_loop()
        read = (response.request.extensions.get("timeout") or {}).get("read")
        if body.connection is not None:  # None once the whole body has arrived
            body.connection.protocol.read_timeout = None  # type: ignore[union-attr]  # watched here instead
        self._quiet_is_stall = stall_timeout is not None and (read is None or stall_timeout < read)
        self._quiet: float | None = stall_timeout if self._quiet_is_stall else read  # longest silence in one read
        self._deadline: float | None = None  # no progress, or the drain, must end by then
        self._draining = False
        self._waiting = False
        self._asked = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self._loop.time()
        due = self._due()
        if due is None:
            return
        if now < due:
            self._arm(due)
        elif self._waiting:
            self._content.set_exception(_Watchdog())
        else:  # the consumer has the stream: nothing is overdue until it reads again
            self._arm(now + (self._quiet or self._drain))

    def _due(self) -> float | None:
        quiet, deadline = self._quiet, self._deadline
        due = None if quiet is None else self._asked + quiet
        if deadline is not None and (due is None or deadline < due):
            return deadline
        return due

    async def read(self) -> bytes | None:
        """The next chunk, or None at the end of the body (or of the drain); raises as ``BodyReader.read``."""
        self._asked = now = self._loop.time()
        if self._timer is None:
            due = self._due()
            if due is not None:
                self._arm(due if due > now else now)
        self._waiting = True
        try:
            return await _read(self._content) or None
        except _Watchdog:
            if self._draining:
                return None
            if self._deadline is not None or self._quiet_is_stall:
                raise stalled(self._stall) from None
            raise read_failure(httpx.ReadTimeout(""), self._stall, False) from None
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            if self._draining:
                return None
            raise read_failure(_mapped(exc), self._stall, False) from exc
        finally:
            self._waiting = False

    def progressed(self, progress: bool) -> None:
        """After a chunk was decoded: progress stops the no-progress clock, pings alone start it."""
        if self._draining:
            return
        if progress:
            self._deadline = None
        elif self._deadline is None and self._stall is not None:
            self._deadline = self._asked + self._stall
            if self._timer is None or self._deadline < self._timer_at:
                self._arm(self._deadline)

    def drain(self) -> None:
        """The reply is whole: what follows is only read, briefly, to free the connection."""
        if not self._draining:
            self._draining = True
            self._deadline = self._loop.time() + self._drain
            if self._timer is None or self._deadline < self._timer_at:
                self._arm(self._deadline)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._response.aclose()


def aiohttp_body_reader(
    response: httpx.Response, stall_timeout: float | None, drain_timeout: float
) -> AiohttpBodyReader | None:
    """The aiohttp reader for a response of this transport whose body needs no decoding; else None."""
    body = response.extensions.get("aiohttp_response")
    if body is None or response.headers.get("content-encoding", "identity") != "identity":
        return None
    return AiohttpBodyReader(response, body, stall_timeout, drain_timeout)
