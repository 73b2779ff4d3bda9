"""What both transports share: admission, the TLS context, how a failed read of a started stream is raised."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import anyio
import httpx

from ._errors import (
    ConnectionLostError,
    IncompleteStreamError,
    ProtocolError,
    StallError,
    StreamkitError,
    StreamTimeoutError,
)


class Admission:
    """Admission of requests up to ``max_connections``: beyond it a request waits here, against the pool timeout."""

    def __init__(self, limits: httpx.Limits) -> None:
        if limits.max_connections is None:
            raise ValueError(f"{type(self).__name__} needs limits with a max_connections")
        self._limit = limits.max_connections
        self._slots = anyio.Semaphore(limits.max_connections)

    @property
    def admitted(self) -> int:
        """Requests whose response is not closed yet."""
        return self._limit - self._slots.value

    async def admit(self, request: httpx.Request) -> None:
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            timeout = (request.extensions.get("timeout") or {}).get("pool")
            with anyio.move_on_after(timeout) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:
                raise httpx.PoolTimeout(f"no connection free within {timeout} s", request=request) from None

    def leave(self) -> None:
        self._slots.release()


def transport_error(exc: httpx.HTTPError) -> type[IncompleteStreamError | ProtocolError]:
    if isinstance(exc, httpx.TimeoutException):
        return StreamTimeoutError
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError
    return ConnectionLostError


def stalled(stall_timeout: float | None) -> StallError:
    return StallError(f"no progress for {stall_timeout} s (only pings or silence): the stream stalled")


def read_failure(exc: httpx.HTTPError, stall_timeout: float | None, by_read_timeout: bool) -> StreamkitError:
    """How a failed read of a started stream is raised: a lowered read timeout is a stall."""
    if by_read_timeout and isinstance(exc, httpx.ReadTimeout):
        return stalled(stall_timeout)
    return transport_error(exc)(f"the connection failed after the stream started: {exc!r}")


@functools.cache
def _default_tls(trust_env: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=trust_env)


def tls_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    """A transport's TLS context; the default one is built once per process and shared by every client.

    Building one loads the whole CA bundle, which would otherwise be most of the cost of making
    a client.  The environment's ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are read when it is built.
    """
    if verify is True and cert is None:
        return _default_tls(trust_env)
    return httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
