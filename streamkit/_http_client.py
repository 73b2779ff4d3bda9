"""streamkit's own httpx clients: the pools the default clients make, and the short way through them.

httpx's client layer does work per request that streamkit's requests never need: it parses
the URL again, merges headers through two ``Headers`` objects, runs the auth and redirect
machinery, and reads every response's ``Set-Cookie`` into a jar.  For a short stream that was
a large share of the client's CPU.  On these clients only (never on a caller's
``http_client``), a request streamkit builds goes straight from its parts to the transport:

- the URL of each endpoint is parsed once and reused;
- the client's default headers and the call's are merged in one dict, case-insensitively;
- with no proxy mounted (``NO_PROXY`` entries alone mount none), ``send`` hands the request
  to the transport and attaches it to the response (no redirect is ever followed); with
  proxies, httpx routes it as usual.

These clients keep no cookies (the API needs none, and a request should not depend on what
an earlier one was answered): every cookie is refused, so both ways send the same headers.
A request with anything else (a query string, an upload, cookies, auth, credentials in the
URL) takes httpx's own way.  httpx's per-request INFO log line is not written on the short way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import httpx

from ._transport import DEFAULT_LIMITS, DEFAULT_TIMEOUT, DefaultTransport, keepalive_socket_options, proxy_routes
from ._wire import tls_context

USE_CLIENT_DEFAULT: Any = httpx.USE_CLIENT_DEFAULT
_T = TypeVar("_T")


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    """An endpoint's parsed URL (immutable, so one is shared by every request to it)."""
    return httpx.URL(url)


def _no_cookies() -> CookieJar:
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _direct_request(
    client: _ShortBuild,
    method: str,
    url: Any,
    content: Any,
    headers: Any,
    timeout: Any,
    others: tuple[Any, ...],
) -> httpx.Request | None:
    """The request httpx's ``build_request`` would build, built directly; None if it needs httpx's way."""
    if not isinstance(url, str) or not isinstance(headers, Mapping) or any(other is not None for other in others):
        return None
    merged = dict(client.headers.items())
    for name, value in headers.items():
        merged[name.lower()] = value
    timeouts = client.timeout if timeout is USE_CLIENT_DEFAULT else httpx.Timeout(timeout)
    return httpx.Request(method, _url(url), content=content, headers=merged, extensions={"timeout": timeouts.as_dict()})


def _direct(request: httpx.Request, auth: Any, follow_redirects: Any) -> bool:
    """Whether a request may skip httpx's client layer (nothing in it for auth or redirects to do)."""
    return (
        auth is USE_CLIENT_DEFAULT
        and follow_redirects is not True
        and "timeout" in request.extensions
        and not request.url.userinfo
    )


def _transports(make: Callable[..., _T], **options: Any) -> tuple[_T, dict[str, _T | None]]:
    """A pool's own transport, and its mounts: one transport per proxy the environment names, None where direct."""
    mounts = {pattern: None if url is None else make(proxy=url, **options) for pattern, url in proxy_routes().items()}
    return make(**options), mounts


def _direct_mounts(mounts: Mapping[str, object]) -> bool:
    """Whether every request goes to the client's own transport (``NO_PROXY`` entries mount None)."""
    return all(mount is None for mount in mounts.values())


class _ShortBuild:
    """``build_request`` of both clients: the request built directly when it can be."""

    headers: httpx.Headers
    timeout: httpx.Timeout

    def build_request(
        self,
        method: str,
        url: Any,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        timeout: Any = USE_CLIENT_DEFAULT,
        extensions: Any = None,
    ) -> httpx.Request:
        others = (data, files, json, params, cookies, extensions)
        request = _direct_request(self, method, url, content, headers, timeout, others)
        if request is not None:
            return request
        by_httpx: Any = super()
        built: httpx.Request = by_httpx.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )
        return built


class DefaultAsyncHTTPClient(_ShortBuild, httpx.AsyncClient):
    """The async client's own pool: keep-alive sockets, the environment's proxies, the short way."""

    def __init__(self, timeout: httpx.Timeout | float | None = None) -> None:
        transport, mounts = _transports(
            DefaultTransport, socket_options=keepalive_socket_options(), limits=DEFAULT_LIMITS
        )
        super().__init__(
            transport=transport,
            mounts=mounts,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            cookies=_no_cookies(),
        )
        self._direct_transport = transport if _direct_mounts(mounts) else None

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        transport = self._direct_transport
        if transport is None or self.is_closed or not _direct(request, auth, follow_redirects):
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        try:
            response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's client layer does
            raise
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


class DefaultHTTPClient(_ShortBuild, httpx.Client):
    """The sync client's own pool: one httpx pool, keep-alive sockets, the environment's proxies, the short way.

    One pool: the sharding of the async transport is for many concurrent streams on one event loop.
    """

    def __init__(self, timeout: httpx.Timeout | float | None = None) -> None:
        transport, mounts = _transports(
            httpx.HTTPTransport, socket_options=keepalive_socket_options(), limits=DEFAULT_LIMITS, verify=tls_context()
        )
        super().__init__(
            transport=transport,
            mounts=mounts,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            cookies=_no_cookies(),
        )
        self._direct_transport = transport if _direct_mounts(mounts) else None

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        transport = self._direct_transport
        if transport is None or self.is_closed or not _direct(request, auth, follow_redirects):
            return super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        try:
            response = transport.handle_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's client layer does
            raise
        response.request = request
        if not stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response
