"""What streamkit knows of the wire: the default clients' transports, and reading a stream's body.

The default async client picks its transport at its first request, by the event loop it
runs in: on asyncio with aiohttp installed (``streamkit[aiohttp]``), aiohttp's HTTP/1.1
behind httpx's interface (``_aiohttp.py``), far cheaper per chunk and per stream than
httpcore; otherwise (trio, no aiohttp, ``STREAMKIT_TRANSPORT=httpx``) httpx's own, as the
ten pools below.  Both take the same options and keep the same guarantees.

Both keep sockets alive through long generations.  A generation can run for many minutes
with little traffic; NAT boxes and load balancers drop connections that look idle.  TCP
keep-alive probes keep them known, and ``TCP_USER_TIMEOUT`` makes a dead peer surface as
an error instead of a silent hang.  Passing a transport to httpx turns off its proxy lookup
from the environment, so the environment's proxies are read here (``proxy_routes``) and mounted
with the same socket options (``_http_client.py``).

The ten pools: at every request and every close, httpcore's pool walks all its connections
and requests, so a burst of streams costs CPU in proportion to what one pool holds, idle
keep-alive connections included.  Measured on paced bursts, one pool costs several times
the CPU of ten pools of 100, whether the pool starts cold or warm, and less the fewer idle
connections it may keep: the cost is the pool's size at each operation, not a slow queue.
So httpx's transport is ten pools of 100 with admission in front.  httpx2's pool is the same.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ._wire import Admission, read_failure, stalled, tls_context

if TYPE_CHECKING:
    from ._aiohttp import AiohttpBodyReader

KEEPALIVE_IDLE = 60  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 15  # seconds between probes
KEEPALIVE_COUNT = 4  # unanswered probes before the kernel drops the connection
USER_TIMEOUT_MS = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=600.0, pool=600.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
SHARD_CONNECTIONS = 100  # connections per httpcore pool; see the module docstring


def keepalive_socket_options() -> list[tuple[int, int, int]]:
    """SO_KEEPALIVE plus whichever tuning knobs this platform has."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for name, value in (
        (idle, KEEPALIVE_IDLE),
        (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
        (getattr(socket, "TCP_USER_TIMEOUT", None), USER_TIMEOUT_MS),
    ):
        if name is not None:
            options.append((socket.IPPROTO_TCP, name, value))
    return options


class ShardedTransport(Admission, httpx.AsyncBaseTransport):
    """httpx's transport, as several httpcore pools of at most SHARD_CONNECTIONS connections.

    Each request goes to the least busy pool and holds a slot until its response is closed;
    beyond ``max_connections`` it waits here (counted against the pool timeout, as waiting in
    httpcore's queue would), so httpcore never queues and no pool grows past its shard.
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, **options: Any) -> None:
        super().__init__(limits)
        total = limits.max_connections
        assert total is not None
        count = -(-total // SHARD_CONNECTIONS)
        keepalive = limits.max_keepalive_connections
        shard_limits = httpx.Limits(
            max_connections=-(-total // count),
            max_keepalive_connections=None if keepalive is None else -(-keepalive // count),
            keepalive_expiry=limits.keepalive_expiry,
        )
        tls = tls_context(options.pop("verify", True), options.pop("cert", None), options.pop("trust_env", True))
        self._shards = [httpx.AsyncHTTPTransport(verify=tls, limits=shard_limits, **options) for _ in range(count)]
        self._busy = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.admit(request)
        busy = self._busy
        shard = busy.index(min(busy))
        busy[shard] += 1
        try:
            response = await self._shards[shard].handle_async_request(request)
        except BaseException:
            self._leave(shard)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Releasing(response.stream, self, shard)
        return response

    def _leave(self, shard: int) -> None:
        self._busy[shard] -= 1
        self.leave()

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _Releasing(httpx.AsyncByteStream):
    """A response body that gives its request's slot back when closed (iterating adds no layer)."""

    def __init__(self, stream: httpx.AsyncByteStream, transport: ShardedTransport, shard: int) -> None:
        self._stream = stream
        self._transport: ShardedTransport | None = transport
        self._shard = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        try:
            await self._stream.aclose()
        finally:
            if transport is not None:
                transport._leave(self._shard)


TRANSPORT_VARIABLE = "STREAMKIT_TRANSPORT"  # "httpx": never the aiohttp transport


class DefaultTransport(httpx.AsyncBaseTransport):
    """The default client's transport, picked at its first request by the event loop it runs in.

    On asyncio with aiohttp installed (``streamkit[aiohttp]``): ``AiohttpTransport``, which
    costs a fraction of httpcore's CPU per chunk and per stream.  Otherwise (trio, no aiohttp,
    or ``STREAMKIT_TRANSPORT=httpx``): ``ShardedTransport``.  Both take the same options.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._chosen: httpx.AsyncBaseTransport | None = None

    def chosen(self) -> httpx.AsyncBaseTransport:
        """The transport for the running event loop (picked once)."""
        if self._chosen is None:
            self._chosen = _pick(self._options)
        return self._chosen

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await (self._chosen or self.chosen()).handle_async_request(request)

    async def aclose(self) -> None:
        if self._chosen is not None:
            await self._chosen.aclose()


def _pick(options: dict[str, Any]) -> httpx.AsyncBaseTransport:
    if os.environ.get(TRANSPORT_VARIABLE, "").lower() != "httpx" and _on_asyncio():
        try:
            from ._aiohttp import AiohttpTransport
        except ImportError:  # aiohttp is an optional extra
            pass
        else:
            return AiohttpTransport(**options)
    return ShardedTransport(**options)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def proxy_routes() -> dict[str, str | None]:
    """Mount patterns for the environment's proxies (``HTTPS_PROXY``, ``NO_PROXY``...): a proxy URL, None for direct."""
    proxies = urllib.request.getproxies()
    routes: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        url = proxies.get(scheme)
        if url:
            routes[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for host in (h.strip() for h in proxies.get("no", "").split(",")):
        if host == "*":
            return {}
        if host:
            routes[_no_proxy_pattern(host)] = None
    return routes


def _no_proxy_pattern(host: str) -> str:
    """An httpx mount pattern for one NO_PROXY entry: addresses exactly, names with subdomains."""
    if "://" in host:
        return host
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"all://{host}" if host == "localhost" else f"all://*{host.lstrip('.')}"
    return f"all://[{address}]" if address.version == 6 else f"all://{address}"


DEFAULT_DRAIN_TIMEOUT = 1.0  # after message_stop, how long to wait for the end of the body (to reuse the connection)


def _lower_read_timeout(response: httpx.Response, stall_timeout: float | None) -> bool:
    """Lower the response's read timeout to the stall timeout, where httpcore reads it; whether it was.

    The transport applies its read timeout to every socket read of the body, a timer each read
    pays anyway: lowered to the stall timeout, it catches silence at no cost per chunk.  httpcore
    takes it from the request when the body starts; other transports have no network stream.
    """
    if stall_timeout is None or "network_stream" not in response.extensions:
        return False
    timeouts = response.request.extensions.get("timeout") or {}
    read = timeouts.get("read")
    if read is not None and stall_timeout >= read:
        return False
    response.request.extensions["timeout"] = {**timeouts, "read": stall_timeout}
    return True


class BodyReader:
    """Reads one streamed response's body a chunk at a time, with the stall watchdog.

    The transport applies its read timeout to every socket read of the body, a timer each
    read pays anyway: lowered to the stall timeout, it catches silence at no cost per chunk.
    httpcore (the transport of httpx) takes it from the request when the body starts.  A
    cancel scope is entered only while it is needed: after chunks that held nothing but pings
    (the deadline counts from the last progress), while draining after ``message_stop``, or
    on a transport whose read timeout cannot watch for silence.
    """

    __slots__ = (
        "_asked",
        "_by_read_timeout",
        "_chunks",
        "_deadline",
        "_drain",
        "_draining",
        "_response",
        "_silence_watched",
        "_stall",
    )

    def __init__(self, response: httpx.Response, stall_timeout: float | None, drain_timeout: float) -> None:
        self._response = response
        self._chunks = response.aiter_bytes()
        self._stall = stall_timeout
        self._drain = drain_timeout
        self._deadline: float | None = None  # of the next read, when a cancel scope watches it
        self._draining = False
        self._asked = 0.0
        self._by_read_timeout = _lower_read_timeout(response, stall_timeout)
        # Silence is caught by the read timeout (lowered, or already shorter) or not watched at all.
        self._silence_watched = stall_timeout is None or "network_stream" in response.extensions

    async def read(self) -> bytes | None:
        """The next chunk, or None at the end of the body (or of the drain).

        Raises ``StallError``, or how the connection failed (``ConnectionLostError``,
        ``StreamTimeoutError``, ``ProtocolError`` for a body that cannot be decoded).
        """
        deadline = self._deadline
        self._asked = time.monotonic()
        try:
            if deadline is None and self._silence_watched:
                return await self._chunks.__anext__()
            limit = anyio.current_time() + self._stall if deadline is None else deadline  # type: ignore[operator]
            with anyio.CancelScope(deadline=limit):
                return await self._chunks.__anext__()
            if self._draining:
                return None
            raise stalled(self._stall)
        except StopAsyncIteration:
            return None
        except httpx.HTTPError as exc:
            if self._draining:
                return None
            raise read_failure(exc, self._stall, self._by_read_timeout) from exc

    def progressed(self, progress: bool) -> None:
        """After a chunk was decoded: progress stops the no-progress timer, pings alone start it.

        The timer counts from when the consumer last asked for more, so a slow consumer is no stall.
        """
        if self._draining:
            return
        if progress:
            self._deadline = None
        elif self._deadline is None and self._stall is not None:
            self._deadline = anyio.current_time() + self._stall - (time.monotonic() - self._asked)

    def drain(self) -> None:
        """The reply is whole: what follows is only read, briefly, to free the connection."""
        if not self._draining:
            self._draining = True
            self._deadline = anyio.current_time() + self._drain

    async def aclose(self) -> None:
        await self._response.aclose()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def body_reader(
    response: httpx.Response, stall_timeout: float | None, drain_timeout: float
) -> BodyReader | AiohttpBodyReader:
    """The reader of a stream's body: aiohttp's own for its responses, else httpx's."""
    if "aiohttp_response" in response.extensions:
        from ._aiohttp import aiohttp_body_reader

        reader = aiohttp_body_reader(response, stall_timeout, drain_timeout)
        if reader is not None:
            return reader
    return BodyReader(response, stall_timeout, drain_timeout)


class SyncBodyReader:
    """``BodyReader`` for the sync client: httpx's ``iter_bytes()``, with the same stall watchdog.

    Silence: the read timeout, lowered to the stall timeout as above.  Pings alone: pings
    arrive, so control comes back; after each chunk the time since the consumer last asked
    with no progress is checked against the stall timeout.  Draining after ``message_stop``:
    the time is checked after each chunk; a silent connection then is bounded by the read
    timeout.  (A transport without a network stream, such as ``httpx.MockTransport``, cannot
    be interrupted while silent: only pings are watched there.)
    """

    __slots__ = ("_asked", "_by_read_timeout", "_chunks", "_deadline", "_drain", "_draining", "_response", "_stall")

    def __init__(self, response: httpx.Response, stall_timeout: float | None, drain_timeout: float) -> None:
        self._response = response
        self._chunks = response.iter_bytes()
        self._stall = stall_timeout
        self._drain = drain_timeout
        self._deadline: float | None = None  # time.monotonic() past which a chunk is too late
        self._draining = False
        self._asked = 0.0
        self._by_read_timeout = _lower_read_timeout(response, stall_timeout)

    def read(self) -> bytes | None:
        """The next chunk, or None at the end of the body (or of the drain); raises as ``BodyReader.read``."""
        self._asked = time.monotonic()
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return None
        except httpx.HTTPError as exc:
            if self._draining:
                return None
            raise read_failure(exc, self._stall, self._by_read_timeout) from exc
        deadline = self._deadline
        if deadline is not None and time.monotonic() > deadline:
            if self._draining:
                return None
            raise stalled(self._stall)
        return chunk

    def progressed(self, progress: bool) -> None:
        """After a chunk was decoded: progress stops the no-progress clock, pings alone start it."""
        if self._draining:
            return
        if progress:
            self._deadline = None
        elif self._deadline is None and self._stall is not None:
            self._deadline = self._asked + self._stall

    def drain(self) -> None:
        """The reply is whole: what follows is only read, briefly, to free the connection."""
        if not self._draining:
            self._draining = True
            self._deadline = time.monotonic() + self._drain

    def close(self) -> None:
        self._response.close()
