"""streamkit's own httpx clients: the short way builds what httpx would, keeps no cookies; a closed pool says so."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest
from conftest import closed_port

import streamkit
from streamkit._http_client import DefaultAsyncHTTPClient, DefaultHTTPClient
from streamkit._request import RequestBuilder, RequestOptions
from streamkit.testing import MockServer, Reply

BASE = "https://api.anthropic.com"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
OPTIONS = RequestOptions(
    timeout=30.0,
    headers={"User-Agent": "mine/1.0", "X-Trace": "abc"},  # another case than streamkit's own names
    betas=["files-api-2025-04-14"],
)


def shape(request: httpx.Request) -> tuple[Any, ...]:
    return (
        request.method,
        str(request.url),
        sorted(request.headers.multi_items()),
        request.content,
        request.extensions,
    )


@pytest.mark.parametrize("make", [DefaultAsyncHTTPClient, DefaultHTTPClient])
@pytest.mark.parametrize("options", [RequestOptions(), OPTIONS], ids=["defaults", "call-options"])
def test_the_short_way_builds_what_httpx_builds(make: Any, options: RequestOptions) -> None:
    http = make()
    builder = RequestBuilder(http, BASE, "sk-test", default_headers={"Anthropic-Version": "2099-01-01"})
    built = builder.build("/v1/messages", BODY, options, stream=True)
    by_httpx = httpx.AsyncClient if isinstance(http, httpx.AsyncClient) else httpx.Client
    http.build_request = functools.partial(by_httpx.build_request, http)  # httpx's own way
    expected = builder.build("/v1/messages", BODY, options, stream=True)
    assert shape(built) == shape(expected)
    assert built.headers["user-agent"] == ("mine/1.0" if options is OPTIONS else f"streamkit/{streamkit.__version__}")
    assert built.headers["anthropic-version"] == "2099-01-01"
    assert built.extensions["timeout"] == (
        {"connect": 30.0, "read": 30.0, "write": 30.0, "pool": 30.0}
        if options is OPTIONS
        else {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}
    )
    assert [name for name, _ in built.headers.multi_items()].count("user-agent") == 1


@pytest.mark.parametrize("make", [DefaultAsyncHTTPClient, DefaultHTTPClient])
def test_a_query_string_takes_httpxs_way(make: Any) -> None:
    http = make()
    request = RequestBuilder(http, BASE, "sk-test").build(
        "/v1/messages/batches", None, RequestOptions(query={"limit": 5}), method="GET"
    )
    assert (request.method, str(request.url)) == ("GET", f"{BASE}/v1/messages/batches?limit=5")
    assert request.headers["x-api-key"] == "sk-test"


@pytest.mark.parametrize("make", [DefaultAsyncHTTPClient, DefaultHTTPClient])
def test_no_cookie_is_kept(make: Any) -> None:
    http = make()
    request = httpx.Request("GET", f"{BASE}/v1/models")
    answer = httpx.Response(
        200, headers=[("set-cookie", "session=abc; Path=/"), ("set-cookie", "b=1")], request=request
    )
    http.cookies.extract_cookies(answer)
    assert list(http.cookies.jar) == []
    assert "cookie" not in http.build_request("GET", f"{BASE}/v1/models").headers


@pytest.mark.anyio
@pytest.mark.parametrize("own_pool", [True, False], ids=["default-pool", "callers-pool"])
async def test_a_closed_client_raises_a_streamkit_error_and_sends_nothing(own_pool: bool) -> None:
    async with MockServer(Reply.text("never")) as server:
        http = None if own_pool else httpx.AsyncClient()
        client = streamkit.AsyncClient(api_key="sk-test", base_url=server.base_url, http_client=http)
        await client.aclose()
        if http is not None:
            await http.aclose()
        with pytest.raises(streamkit.ClientClosedError) as raised:
            async with client.messages.stream(**BODY) as stream:  # type: ignore[arg-type]
                await stream.get_final_text()
        assert str(raised.value) == "the client is closed: its connection pool was closed, so the request was not sent"
        assert isinstance(raised.value, RuntimeError)
        with pytest.raises(streamkit.ClientClosedError):
            await client.messages.count_tokens(model=BODY["model"], messages=BODY["messages"])  # type: ignore[arg-type]
        assert server.requests == []
        assert client.governor is not None
        assert client.governor.snapshot(BODY["model"]).admitted == 0  # refused before the governor: no turn taken


@pytest.mark.anyio
async def test_a_closed_sync_client_raises_a_streamkit_error_and_sends_nothing() -> None:
    async with MockServer(Reply.text("never")) as server:
        client = streamkit.Client(api_key="sk-test", base_url=server.base_url)
        client.close()
        with pytest.raises(streamkit.ClientClosedError):
            client.messages.create(**BODY)  # type: ignore[arg-type]
        assert server.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("own_pool", [True, False], ids=["default-pool", "callers-pool"])
async def test_a_calls_header_replaces_streamkits_own_whatever_its_case(own_pool: bool) -> None:
    async with MockServer(Reply.text("hi")) as server:
        http = None if own_pool else httpx.AsyncClient()
        async with streamkit.AsyncClient(
            api_key="sk-test", base_url=server.base_url, http_client=http, default_headers={"Anthropic-Beta": "a-1"}
        ) as client:
            headers = {"Anthropic-Version": "2099-01-01", "USER-AGENT": "mine/1.0", "anthropic-beta": "b-2"}
            async with client.messages.stream(**BODY, extra_headers=headers, betas=["c-3"]) as stream:  # type: ignore[arg-type]
                assert await stream.get_final_text() == "hi"
        if http is not None:
            await http.aclose()
    sent = server.requests[0].headers
    assert (sent["anthropic-version"], sent["user-agent"], sent["anthropic-beta"]) == (
        "2099-01-01",
        "mine/1.0",
        "b-2,c-3",
    )


class ClosingClient(httpx.AsyncClient):
    """A caller's client that another task closes between streamkit's check and the send."""

    async def send(self, request: httpx.Request, **options: Any) -> httpx.Response:
        await self.aclose()
        return await super().send(request, **options)


@pytest.mark.anyio
async def test_a_pool_closed_during_the_send_is_a_client_closed_error() -> None:
    async with MockServer(Reply.text("never")) as server:
        http = ClosingClient()
        client = streamkit.AsyncClient(api_key="sk-test", base_url=server.base_url, http_client=http, max_retries=0)
        with pytest.raises(streamkit.ClientClosedError) as raised:
            await client.messages.create(**BODY)  # type: ignore[arg-type]
        assert raised.value.__cause__ is None
        assert server.requests == []


@pytest.mark.parametrize(
    ("variables", "direct"),
    [({}, True), ({"NO_PROXY": "localhost,127.0.0.1"}, True), ({"HTTPS_PROXY": "http://proxy.internal:3128"}, False)],
    ids=["none", "no-proxy-only", "proxy"],
)
@pytest.mark.parametrize("make", [DefaultAsyncHTTPClient, DefaultHTTPClient])
def test_the_short_send_is_kept_unless_a_proxy_is_mounted(
    make: Any, variables: dict[str, str], direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    http = make()
    assert (http._direct_transport is not None, http._direct_transport is http._transport) == (direct, direct)


@pytest.mark.anyio
async def test_a_failed_short_send_carries_its_request() -> None:
    async with DefaultAsyncHTTPClient() as http:
        request = http.build_request("GET", f"http://127.0.0.1:{closed_port()}/v1/models")
        with pytest.raises(httpx.ConnectError) as raised:
            await http.send(request)
    assert raised.value.request is request


@pytest.mark.anyio
async def test_a_client_closed_between_retries_raises_a_client_closed_error() -> None:
    overloaded = Reply.error(529, "overloaded_error", "busy", headers={"retry-after": "0"})
    async with MockServer(overloaded, Reply.text("never")) as server:
        client = streamkit.AsyncClient(api_key="sk-test", base_url=server.base_url, governor=False)

        async def close(info: streamkit.RetryInfo) -> None:
            await client.aclose()

        with pytest.raises(streamkit.ClientClosedError) as raised:
            async with client.messages.stream(**BODY, on_retry=close) as stream:  # type: ignore[arg-type]
                await stream.get_final_text()
        assert raised.value.__cause__ is None
        assert [request.path for request in server.requests] == ["/v1/messages"]
