"""The default httpx client: sockets that survive long generations.

A generation can run for many minutes with little traffic; NAT boxes and load balancers
drop connections that look idle.  TCP keep-alive probes keep them known, and
``TCP_USER_TIMEOUT`` makes a dead peer surface as an error instead of a silent hang.
Passing a transport to httpx turns off its proxy lookup from the environment, so the
proxy mounts are rebuilt here with the same socket options.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from typing import Any

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


def _proxy_mounts(transport_options: dict[str, Any]) -> dict[str, httpx.AsyncBaseTransport | None]:
    """Mounts for the proxies named by the environment (``HTTPS_PROXY``, ``NO_PROXY`` ...)."""
    proxies = urllib.request.getproxies()
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for scheme in ("http", "https", "all"):
        url = proxies.get(scheme)
        if url:
            if "://" not in url:
                url = f"http://{url}"
            mounts[f"{scheme}://"] = httpx.AsyncHTTPTransport(proxy=url, **transport_options)
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
        transport=httpx.AsyncHTTPTransport(**options),
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
