"""The default httpx client: sockets that survive long generations.

A generation can run for many minutes with little traffic; NAT boxes and load balancers
drop connections that look idle.  TCP keep-alive probes keep them known, and
``TCP_USER_TIMEOUT`` makes a dead peer surface as an error instead of a silent hang.
Passing a transport to httpx turns off its proxy lookup from the environment, so the
proxy mounts are rebuilt here with the same socket options.

httpcore's pool costs CPU in its queued requests times its connections at every request
and close, and a burst of requests on a warm pool all queue on its one idle connection and
retry: 1,000 paced streams on one warm 1,000-connection pool took 26 s of CPU, on ten
pools of 100, 4.5 s.  So the default transport is ten pools of 100 with admission in front.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from ._errors import APIConnectionError, APITimeoutError

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


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx's transport, as several httpcore pools of at most SHARD_CONNECTIONS connections.

    Each request goes to the least busy pool and holds a slot until its response is closed;
    beyond ``max_connections`` it waits here (counted against the pool timeout, as waiting in
    httpcore's queue would), so httpcore never queues and no pool grows past its shard.
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, **options: Any) -> None:
        total = limits.max_connections
        if total is None:
            raise ValueError("ShardedTransport needs limits with a max_connections")
        count = -(-total // SHARD_CONNECTIONS)
        keepalive = limits.max_keepalive_connections
        shard_limits = httpx.Limits(
            max_connections=-(-total // count),
            max_keepalive_connections=None if keepalive is None else -(-keepalive // count),
            keepalive_expiry=limits.keepalive_expiry,
        )
        # One TLS context for all pools: building one loads the CA bundle (about 25 ms each).
        tls = httpx.create_ssl_context(
            verify=options.pop("verify", True), cert=options.pop("cert", None), trust_env=options.pop("trust_env", True)
        )
        self._shards = [httpx.AsyncHTTPTransport(verify=tls, limits=shard_limits, **options) for _ in range(count)]
        self._busy = [0] * count
        self._slots = anyio.Semaphore(total)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            timeout = (request.extensions.get("timeout") or {}).get("pool")
            with anyio.move_on_after(timeout) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:
                raise httpx.PoolTimeout(f"no connection free within {timeout} s", request=request) from None
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
        self._slots.release()

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


def _proxy_mounts(transport_options: dict[str, Any]) -> dict[str, httpx.AsyncBaseTransport | None]:
    """Mounts for the proxies named by the environment (``HTTPS_PROXY``, ``NO_PROXY`` ...)."""
    proxies = urllib.request.getproxies()
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for scheme in ("http", "https", "all"):
        url = proxies.get(scheme)
        if url:
            if "://" not in url:
                url = f"http://{url}"
            mounts[f"{scheme}://"] = ShardedTransport(proxy=url, **transport_options)
    for host in (h.strip() for h in proxies.get("no", "").split(",")):
        if host == "*":
            return {}
        if host:
            mounts[_no_proxy_pattern(host)] = None
    return mounts


def _no_proxy_pattern(host: str) -> str:
    """An httpx mount pattern for one NO_PROXY entry: addresses exactly, names with subdomains."""
    if "://" in host:
        return host
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"all://{host}" if host == "localhost" else f"all://*{host.lstrip('.')}"
    return f"all://[{address}]" if address.version == 6 else f"all://{address}"


def default_http_client(timeout: httpx.Timeout | float | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with keep-alive sockets and timeouts for long streams."""
    options: dict[str, Any] = {"socket_options": keepalive_socket_options(), "limits": DEFAULT_LIMITS}
    return httpx.AsyncClient(
        transport=ShardedTransport(**options),
        mounts=_proxy_mounts(options),
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
    )


async def send_request(http: httpx.AsyncClient, request: httpx.Request, *, stream: bool) -> httpx.Response:
    """Send one request; a failure before the API answered becomes a retryable streamkit error.

    Redirects are never followed, whatever the client was configured with: httpx would send
    the ``x-api-key`` header on to another host (it strips only ``Authorization``).
    """
    try:
        return await http.send(request, stream=stream, follow_redirects=False)
    except httpx.TimeoutException as exc:
        raise APITimeoutError(f"the request timed out before the API answered: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise APIConnectionError(f"could not reach the API at {request.url}: {exc!r}") from exc
