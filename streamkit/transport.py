"""The default httpx client: sockets that survive long generations.

A generation can run for many minutes with little traffic; NAT boxes and load balancers
drop connections that look idle.  TCP keep-alive probes keep them known, and
``TCP_USER_TIMEOUT`` makes a dead peer surface as an error instead of a silent hang.
Passing a transport to httpx turns off its proxy lookup from the environment, so the
proxy mounts are rebuilt here with the same socket options.

Requests beyond the pool's ``max_connections`` wait here, not in httpcore's queue: httpcore
rescans its whole queue against every connection each time a request arrives or a response
closes, so a few hundred queued requests cost more CPU than the streams themselves (2,000
paced streams on one 1,000-connection pool took over 5 minutes; admitted here, 10 s).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from .errors import APIConnectionError, APITimeoutError

KEEPALIVE_IDLE = 60  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 15  # seconds between probes
KEEPALIVE_COUNT = 4  # unanswered probes before the kernel drops the connection
USER_TIMEOUT_MS = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=600.0, pool=600.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


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


class AdmittingTransport(httpx.AsyncHTTPTransport):
    """httpx's transport that lets at most ``max_connections`` requests into its pool at once.

    A request holds its slot until its response is closed, so httpcore never queues; waiting
    for a slot counts against the pool timeout, as waiting in httpcore's queue would.
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, **options: Any) -> None:
        super().__init__(limits=limits, **options)
        slots = limits.max_connections
        self._slots = anyio.Semaphore(slots) if slots is not None else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        slots = self._slots
        if slots is None:
            return await super().handle_async_request(request)
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            timeout = (request.extensions.get("timeout") or {}).get("pool")
            with anyio.move_on_after(timeout) as scope:
                await slots.acquire()
            if scope.cancelled_caught:
                raise httpx.PoolTimeout(f"no connection free within {timeout} s", request=request) from None
        try:
            response = await super().handle_async_request(request)
        except BaseException:
            slots.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Releasing(response.stream, slots)
        return response


class _Releasing(httpx.AsyncByteStream):
    """A response body that gives its request's slot back when closed (iterating adds no layer)."""

    def __init__(self, stream: httpx.AsyncByteStream, slots: anyio.Semaphore) -> None:
        self._stream = stream
        self._slots: anyio.Semaphore | None = slots

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        slots, self._slots = self._slots, None
        try:
            await self._stream.aclose()
        finally:
            if slots is not None:
                slots.release()


def _proxy_mounts(transport_options: dict[str, Any]) -> dict[str, httpx.AsyncBaseTransport | None]:
    """Mounts for the proxies named by the environment (``HTTPS_PROXY``, ``NO_PROXY`` ...)."""
    proxies = urllib.request.getproxies()
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for scheme in ("http", "https", "all"):
        url = proxies.get(scheme)
        if url:
            if "://" not in url:
                url = f"http://{url}"
            mounts[f"{scheme}://"] = AdmittingTransport(proxy=url, **transport_options)
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
        transport=AdmittingTransport(**options),
        mounts=_proxy_mounts(options),
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
    )


async def send_request(http: httpx.AsyncClient, request: httpx.Request, *, stream: bool) -> httpx.Response:
    """Send one request; a failure before the API answered becomes a retryable streamkit error."""
    try:
        return await http.send(request, stream=stream)
    except httpx.TimeoutException as exc:
        raise APITimeoutError(f"the request timed out before the API answered: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise APIConnectionError(f"could not reach the API at {request.url}: {exc!r}") from exc
