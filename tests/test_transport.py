"""The default transport: keep-alive sockets, long-request timeouts, proxies from the environment."""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from conftest import client_for, closed_port

import streamkit
from streamkit import ResumeInfo
from streamkit._aiohttp import AiohttpBodyReader, AiohttpTransport
from streamkit._http_client import DefaultAsyncHTTPClient
from streamkit._transport import (
    DEFAULT_LIMITS,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    SHARD_CONNECTIONS,
    TRANSPORT_VARIABLE,
    USER_TIMEOUT_MS,
    DefaultTransport,
    ShardedTransport,
    keepalive_socket_options,
)
from streamkit.testing import Fault, MockServer, Reply, lorem

pytestmark = pytest.mark.anyio
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT and friends are Linux")

TEXT = lorem(1500, seed=9)
USER = [{"role": "user", "content": "Hi"}]
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def keepalive_of(sock: Any) -> dict[str, int]:
    return {
        "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "TCP_KEEPINTVL": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "TCP_KEEPCNT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


EXPECTED_KEEPALIVE = {
    "SO_KEEPALIVE": 1,
    "TCP_KEEPIDLE": KEEPALIVE_IDLE,
    "TCP_KEEPINTVL": KEEPALIVE_INTERVAL,
    "TCP_KEEPCNT": KEEPALIVE_COUNT,
    "TCP_USER_TIMEOUT": USER_TIMEOUT_MS,
}


def live_socket(stream: streamkit.MessageStream) -> Any:
    """The socket under the stream's current response (asyncio's TransportSocket or trio's socket)."""
    response = stream._reader._response  # type: ignore[union-attr]
    assert response is not None
    if "aiohttp_response" in response.extensions:
        sock = response.extensions["aiohttp_response"]._protocol.transport.get_extra_info("socket")
    else:
        sock = response.extensions["network_stream"].get_extra_info("socket")
    assert sock is not None and sock.type == socket.SOCK_STREAM
    return sock


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each transport the default client can pick: httpx's everywhere, aiohttp's on asyncio only."""
    if request.param == "aiohttp":  # on asyncio only: conftest deselects it on trio
        monkeypatch.delenv(TRANSPORT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(TRANSPORT_VARIABLE, "httpx")
    return str(request.param)


def chosen(http: httpx.AsyncClient, transport: str) -> Any:
    """The transport the default client picked; the one asked for."""
    assert isinstance(http._transport, DefaultTransport)
    picked = http._transport.chosen()
    assert type(picked) is {"httpx": ShardedTransport, "aiohttp": AiohttpTransport}[transport]
    return picked


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No proxy variable from the machine running the tests leaks in."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    yield monkeypatch


def mounts_of(http: httpx.AsyncClient) -> dict[str, httpx.AsyncBaseTransport | None]:
    return {pattern.pattern: transport for pattern, transport in http._mounts.items()}


def pools_of(transport: httpx.AsyncBaseTransport | None) -> list[Any]:
    """The httpcore pools under one of streamkit's transports."""
    if isinstance(transport, DefaultTransport):
        transport = transport.chosen()
    assert isinstance(transport, ShardedTransport)
    return [shard._pool for shard in transport._shards]


def proxy_of(transport: httpx.AsyncBaseTransport | None) -> tuple[bytes, bytes, int | None]:
    if isinstance(transport, DefaultTransport):
        transport = transport.chosen()
    if isinstance(transport, AiohttpTransport):
        url = httpx.URL(transport._proxy or "")
        return url.raw_scheme, url.raw_host, url.port
    urls = {(url.scheme, url.host, url.port) for url in (pool._proxy_url for pool in pools_of(transport))}
    assert len(urls) == 1
    return urls.pop()


# -- keep-alive ---------------------------------------------------------------------------


@linux_only
def test_keepalive_option_values() -> None:
    assert (KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) == (60, 15, 4)
    assert USER_TIMEOUT_MS == (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000 == 120_000
    assert keepalive_socket_options() == [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS),
    ]


@linux_only
async def test_keepalive_on_the_live_socket(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    async with MockServer(Reply.text(TEXT)) as server, client_for(server.base_url) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
            sock = live_socket(stream)
            assert sock.getpeername()[1] == int(server.base_url.rsplit(":", 1)[1])
            assert keepalive_of(sock) == EXPECTED_KEEPALIVE
            assert await stream.get_final_text() == TEXT


@linux_only
async def test_keepalive_on_the_socket_of_a_resumed_stream(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    seen: list[tuple[int, dict[str, int]]] = []
    first = Reply.text(TEXT, chunk_size=7, fault=Fault("cut", after=30))
    async with MockServer(first, Reply.text(TEXT, chunk_size=7)) as server, client_for(server.base_url) as sk:
        stream = sk.messages.stream(
            model="m",
            max_tokens=99,
            messages=USER,
            on_resume=lambda info: seen.append(
                (live_socket(stream).getsockname()[1], keepalive_of(live_socket(stream)))
            ),
        )
        async with stream:
            first_port = live_socket(stream).getsockname()[1]
            assert await stream.get_final_text() == TEXT
    assert len(stream.resumes) == 1 and isinstance(stream.resumes[0], ResumeInfo)
    [(second_port, options)] = seen
    assert second_port != first_port  # a new connection: the broken one was not reused
    assert options == EXPECTED_KEEPALIVE


async def test_the_default_pool_uses_the_options_and_long_timeouts(
    no_proxy_env: pytest.MonkeyPatch, transport: str
) -> None:
    async with client_for("http://127.0.0.1:1") as sk:
        http = sk._http
        picked = chosen(http, transport)
        if transport == "httpx":
            pools = pools_of(picked)
            assert [pool._socket_options for pool in pools] == [keepalive_socket_options()] * 10
            assert {
                (pool._max_connections, pool._max_keepalive_connections, pool._keepalive_expiry) for pool in pools
            } == {(SHARD_CONNECTIONS, 10, 5.0)}
            assert len({id(pool._ssl_context) for pool in pools}) == 1  # one TLS context, built once
        else:
            assert (picked._socket_options, picked._keepalive, picked._proxy) == (keepalive_socket_options(), 5.0, None)
        assert (http.timeout.connect, http.timeout.read) == (5.0, 600.0)
        assert mounts_of(http) == {}
    async with client_for("http://127.0.0.1:1", timeout=3.0) as sk:
        assert sk._http.timeout == httpx.Timeout(3.0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp's transport exists on asyncio only
async def test_the_aiohttp_transport_watches_a_stream_with_one_timer(no_proxy_env: pytest.MonkeyPatch) -> None:
    """aiohttp's timer restarted at every chunk is off while the stream's reader watches it; other reads keep it."""
    no_proxy_env.delenv(TRANSPORT_VARIABLE, raising=False)
    async with MockServer(Reply.text(TEXT, chunk_size=10, delay=0.001)) as server:
        async with client_for(server.base_url, stall_timeout=30.0) as sk:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                reader = stream._reader
                assert isinstance(reader, AiohttpBodyReader)
                response = reader._response.extensions["aiohttp_response"]
                assert response._protocol.read_timeout is None
                assert (reader._quiet, reader._quiet_is_stall) == (30.0, True)  # the stall timeout, under 600 s
                async for event in stream:  # one timer, set for the stall timeout, not one per chunk
                    assert event.type == "message_start"
                    assert reader._timer is not None and reader._timer.when() > anyio.current_time() + 10
                    break
                assert await stream.get_final_text() == TEXT
            assert reader._timer is None  # cancelled on close


async def test_a_callers_http_client_is_used_as_given_and_left_open(no_proxy_env: pytest.MonkeyPatch) -> None:
    async with MockServer(Reply.text(TEXT)) as server, httpx.AsyncClient() as http:
        async with client_for(server.base_url, http_client=http) as sk:
            assert sk._http is http
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                assert await stream.get_final_text() == TEXT
        assert not http.is_closed


# -- admission to the pool --------------------------------------------------------------------


def two_slot_client(kind: str = "httpx", pool_timeout: float = 5.0) -> tuple[Any, httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    transport: ShardedTransport | AiohttpTransport = (
        ShardedTransport(limits=limits)
        if kind == "httpx"
        else AiohttpTransport(limits=limits, socket_options=keepalive_socket_options())
    )
    return transport, httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=pool_timeout))


def held(sk: streamkit.AsyncClient) -> streamkit.MessageStream:
    return sk.messages.stream(model="m", max_tokens=99, messages=USER)


async def test_the_default_pool_admits_up_to_max_connections(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    async with client_for("http://127.0.0.1:1") as sk:
        picked = chosen(sk._http, transport)
        assert (picked._slots.value, picked.admitted, DEFAULT_LIMITS.max_connections) == (1000, 0, 1000)
        if transport == "httpx":
            assert (len(picked._shards), SHARD_CONNECTIONS) == (10, 100)


def test_a_pool_without_a_connection_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="ShardedTransport needs limits with a max_connections"):
        ShardedTransport(limits=httpx.Limits(max_connections=None))


async def test_each_request_goes_to_the_least_busy_pool(no_proxy_env: pytest.MonkeyPatch) -> None:
    """250 connections make three pools: three streams at once use all three; one at a time reuses the first."""
    transport = ShardedTransport(limits=httpx.Limits(max_connections=3, max_keepalive_connections=3))
    assert len(transport._shards) == 1  # 3 connections fit one pool of SHARD_CONNECTIONS
    transport = ShardedTransport(limits=httpx.Limits(max_connections=250, max_keepalive_connections=30))
    assert [pool._max_connections for pool in pools_of(transport)] == [84, 84, 84]
    assert [pool._max_keepalive_connections for pool in pools_of(transport)] == [10, 10, 10]
    async with MockServer(default=Reply.text(TEXT, chunk_size=50)) as server:
        async with httpx.AsyncClient(transport=transport) as http, client_for(server.base_url, http_client=http) as sk:
            async with held(sk) as one, held(sk) as two, held(sk) as three:
                assert transport._busy == [1, 1, 1]
                texts = [await one.get_final_text(), await two.get_final_text(), await three.get_final_text()]
            assert texts == [TEXT] * 3 and transport._busy == [0, 0, 0]
            for _ in range(2):
                async with held(sk) as again:
                    assert transport._busy == [1, 0, 0]
                    assert await again.get_final_text() == TEXT
            assert [len(pool.connections) for pool in pools_of(transport)] == [1, 1, 1]
            assert transport._slots.value == 250


async def test_a_request_over_the_limit_waits_outside_httpcores_queue(no_proxy_env: pytest.MonkeyPatch) -> None:
    """httpcore rescans its queue for every request and close; the third request waits here instead."""
    third: list[str] = []
    async with MockServer(default=Reply.text(TEXT, chunk_size=50)) as server:
        transport, http = two_slot_client()
        async with http, client_for(server.base_url, http_client=http) as sk:
            slots = transport._slots

            async def third_stream() -> None:
                async with held(sk) as stream:
                    third.append(await stream.get_final_text())

            async with held(sk) as two:
                async with anyio.create_task_group() as group:
                    async with held(sk) as one:
                        group.start_soon(third_stream)
                        while slots.statistics().tasks_waiting != 1:  # noqa: ASYNC110 - a semaphore has no such event
                            await anyio.sleep(0.01)
                        assert slots.value == 0
                        assert len(transport._shards[0]._pool._requests) == 2  # nothing queued inside httpcore
                        assert await one.get_final_text() == TEXT
                assert third == [TEXT]
                assert await two.get_final_text() == TEXT
            assert slots.value == 2
        assert len(server.requests) == 3


async def test_waiting_for_a_slot_counts_against_the_pool_timeout(
    no_proxy_env: pytest.MonkeyPatch, transport: str
) -> None:
    async with MockServer(default=Reply.text(TEXT)) as server:
        transport, http = two_slot_client(transport, pool_timeout=0.2)
        async with http, client_for(server.base_url, http_client=http, max_retries=0) as sk:
            async with held(sk) as one, held(sk) as two:
                with pytest.raises(streamkit.APITimeoutError) as caught:
                    async with held(sk):
                        pass
                assert "PoolTimeout('no connection free within 0.2 s')" in str(caught.value)
                assert transport._slots.value == 0
                assert [await one.get_final_text(), await two.get_final_text()] == [TEXT, TEXT]
            assert transport._slots.value == 2
        assert len(server.requests) == 2


async def test_early_exit_and_cancelled_waits_give_slots_back(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    async with MockServer(default=Reply.text(TEXT, chunk_size=5)) as server:
        transport, http = two_slot_client(transport)
        async with http, client_for(server.base_url, http_client=http) as sk:
            slots = transport._slots
            async with held(sk) as one, held(sk):
                with anyio.move_on_after(0.1) as scope:
                    async with held(sk):
                        pass
                assert scope.cancelled_caught
                assert (slots.value, slots.statistics().tasks_waiting) == (0, 0)
                async for event in one:  # leave after the first event, the body unread
                    assert event.type == "message_start"
                    break
            assert slots.value == 2
            async with held(sk) as again:
                assert await again.get_final_text() == TEXT
            assert slots.value == 2


# -- proxies from the environment ---------------------------------------------------------------


async def test_proxies_from_the_environment_are_mounted(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    no_proxy_env.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    no_proxy_env.setenv("HTTPS_PROXY", "secure-proxy.internal:8443")  # no scheme: http:// is meant
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1,.corp.example")
    http = DefaultAsyncHTTPClient()
    mounts = mounts_of(http)
    proxied = {pattern for pattern, transport in mounts.items() if transport is not None}
    assert proxied == {"http://", "https://"}
    assert len(mounts) == 4  # and one direct mount per NO_PROXY entry
    assert proxy_of(mounts["http://"]) == (b"http", b"proxy.internal", 3128)
    assert proxy_of(mounts["https://"]) == (b"http", b"secure-proxy.internal", 8443)
    for scheme in ("http://", "https://"):
        mount = mounts[scheme]
        assert isinstance(mount, DefaultTransport)
        if transport == "httpx":
            assert [pool._socket_options for pool in pools_of(mount)] == [keepalive_socket_options()] * 10
        else:
            assert mount.chosen()._socket_options == keepalive_socket_options()  # type: ignore[attr-defined]
    # the routing httpx does with these mounts
    assert http._transport_for_url(httpx.URL("http://api.example.com/v1/messages")) is mounts["http://"]
    assert http._transport_for_url(httpx.URL("https://api.anthropic.com/v1/messages")) is mounts["https://"]
    assert http._transport_for_url(httpx.URL("http://127.0.0.1:8080/v1/messages")) is http._transport
    assert http._transport_for_url(httpx.URL("https://api.corp.example/v1")) is http._transport
    assert http._transport_for_url(httpx.URL("https://corp.example/v1")) is http._transport
    assert http._transport_for_url(httpx.URL("https://notcorp.example/v1")) is mounts["https://"]


async def test_all_proxy_and_lowercase_variables(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    no_proxy_env.setenv("all_proxy", "http://everything.internal:9000")
    mounts = mounts_of(DefaultAsyncHTTPClient())
    assert set(mounts) == {"all://"}
    assert proxy_of(mounts["all://"]) == (b"http", b"everything.internal", 9000)


def test_no_proxy_star_turns_proxies_off(no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    no_proxy_env.setenv("NO_PROXY", "*")
    assert mounts_of(DefaultAsyncHTTPClient()) == {}


async def test_no_proxy_keeps_loopback_direct(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # a proxy that is down
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    async with MockServer(Reply.text(TEXT)) as server, client_for(server.base_url) as sk:
        assert proxy_of(mounts_of(sk._http)["http://"])[1] == b"127.0.0.1"
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
            assert await stream.get_final_text() == TEXT
        assert [(r.method, r.path) for r in server.requests] == [("POST", "/v1/messages")]
        assert stream.retries == []


async def test_requests_go_through_the_proxy(no_proxy_env: pytest.MonkeyPatch, transport: str) -> None:
    """The mock server plays the proxy: it receives the absolute URL, so it answers 404."""
    async with MockServer(allowed_hosts=["api.example.test"]) as proxy:  # a proxy is asked for other hosts
        no_proxy_env.setenv("HTTP_PROXY", proxy.base_url)
        async with client_for("http://api.example.test") as sk:
            with pytest.raises(streamkit.NotFoundError) as caught:
                async with sk.messages.stream(model="m", max_tokens=99, messages=USER):
                    pass
        [request] = proxy.requests
    assert (request.method, request.path) == ("POST", "http://api.example.test/v1/messages")
    assert request.headers["host"] == "api.example.test"
    assert request.headers["x-api-key"] == "test-key"
    assert request.json["messages"] == USER
    assert isinstance(caught.value, streamkit.APIStatusError) and caught.value.status_code == 404


@pytest.mark.parametrize(("no_proxy", "ipv6"), [("localhost,127.0.0.1,::1", "::1"), ("127.0.0.1,fe80::1", "fe80::1")])
async def test_an_ipv6_no_proxy_entry_does_not_break_the_client(
    no_proxy_env: pytest.MonkeyPatch, no_proxy: str, ipv6: str, transport: str
) -> None:
    """``NO_PROXY=localhost,127.0.0.1,::1`` is a common default; the client must still work."""
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    no_proxy_env.setenv("NO_PROXY", no_proxy)
    async with MockServer(Reply.text(TEXT)) as server, client_for(server.base_url) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
            assert await stream.get_final_text() == TEXT
        assert len(server.requests) == 1
        http = sk._http
        assert http._transport_for_url(httpx.URL(f"http://[{ipv6}]:8080/v1/messages")) is http._transport
        assert http._transport_for_url(httpx.URL("http://api.example.com/v1/messages")) is mounts_of(http)["http://"]


def test_the_default_tls_context_is_built_once_and_shared_while_a_custom_one_is_its_own() -> None:
    from streamkit._wire import tls_context

    shared = tls_context()
    assert tls_context() is shared and tls_context(True, None, True) is shared
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname is True
    unverified = tls_context(verify=False)
    assert unverified is not shared and unverified.verify_mode == ssl.CERT_NONE
    assert tls_context(trust_env=False) is not shared
