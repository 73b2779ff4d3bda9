"""AsyncClient: create(), configuration and the lifetime of the connection pool."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import streamkit
from streamkit.testing import MockServer, Reply, TextBlock, ThinkingBlock, ToolUseBlock

pytestmark = pytest.mark.anyio

REQUEST: dict[str, Any] = {"model": "claude-mock-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
MSG_ID = "msg_CLIENT0123456789abcdefg"


async def test_create_returns_the_exact_message() -> None:
    reply = Reply.text("Hello from create", chunk_size=4, message_id=MSG_ID, input_tokens=12, output_tokens=5)
    async with MockServer(reply) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, max_retries=0) as client:
            message = await client.messages.create(**REQUEST, system="Be brief.")
    assert message == streamkit.Message(
        id=MSG_ID,
        model="claude-mock-1",
        content=[streamkit.TextBlock(text="Hello from create")],
        stop_reason="end_turn",
        usage=streamkit.Usage(input_tokens=12, output_tokens=5),
    )
    [request] = server.requests
    assert request.json == {**REQUEST, "system": "Be brief."}  # no "stream" field
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-api-key"] == "test-key"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"


async def test_create_with_every_block_kind() -> None:
    reply = Reply(
        blocks=[
            ThinkingBlock("hmm", signature="sig_1"),
            TextBlock("Checking.", citations=[{"type": "char_location", "cited_text": "c"}]),
            ToolUseBlock("get_weather", {"city": "Paris"}, id="toolu_1"),
        ],
        stop_reason="tool_use",
        message_id=MSG_ID,
        output_tokens=20,
    )
    async with MockServer(reply) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, max_retries=0) as client:
            message = await client.messages.create(**REQUEST)
    assert message.content == [
        streamkit.ThinkingBlock(thinking="hmm", signature="sig_1"),
        streamkit.TextBlock(text="Checking.", citations=[{"type": "char_location", "cited_text": "c"}]),
        streamkit.ToolUseBlock(id="toolu_1", name="get_weather", input={"city": "Paris"}),
    ]
    assert (message.stop_reason, message.usage.output_tokens, message.text) == ("tool_use", 20, "Checking.")


async def test_create_and_stream_agree() -> None:
    reply = Reply.text("Same answer either way.", chunk_size=3, message_id=MSG_ID)
    async with MockServer(default=reply) as server:
        async with streamkit.AsyncClient(
            api_key="test-key", base_url=server.base_url, max_retries=0, resume=False
        ) as client:
            created = await client.messages.create(**REQUEST)
            async with client.messages.stream(**REQUEST) as stream:
                streamed = await stream.get_final_message()
    assert created == streamed


async def test_create_refuses_requests_that_may_outlast_ten_minutes() -> None:
    async with MockServer(Reply.text("x")) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(streamkit.StreamingRequiredError) as caught:
                await client.messages.create(**{**REQUEST, "max_tokens": 21_334})
            assert (await client.messages.create(**{**REQUEST, "max_tokens": 21_333})).text == "x"
        assert len(server.requests) == 1  # the refused request was never sent
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, streamkit.StreamkitError)
    assert "max_tokens=21334" in caught.value.message
    assert "client.messages.stream(...)" in caught.value.message


async def test_create_with_a_200_that_is_not_a_message() -> None:
    reply = Reply(body="<html>maintenance</html>", content_type="text/html", request_id="req_NOTAMESSAGE0123456789ab")
    async with MockServer(reply) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(streamkit.ProtocolError) as caught:
                await client.messages.create(**REQUEST)
    assert type(caught.value) is streamkit.ProtocolError
    assert caught.value.message.startswith("the response is not a Message: ")
    assert caught.value.data == b"<html>maintenance</html>"
    assert caught.value.request_id == "req_NOTAMESSAGE0123456789ab"


# -- the pool ------------------------------------------------------------------------


async def test_context_manager_closes_its_own_pool() -> None:
    async with MockServer(Reply.text("one")) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, max_retries=0) as client:
            assert not client._http.is_closed
            assert (await client.messages.create(**REQUEST)).text == "one"
            assert server.open_connections == 1  # kept alive in the pool
        assert client._http.is_closed
        # Closing the pool closed its keep-alive socket.
        await server.wait_connections(0, timeout=3)
        assert server.open_connections == 0


async def test_aclose_without_a_context_manager() -> None:
    client = streamkit.AsyncClient(api_key="test-key", base_url="http://127.0.0.1:9")
    assert not client._http.is_closed
    await client.aclose()
    assert client._http.is_closed
    await client.aclose()  # twice is harmless
    assert client._http.is_closed


async def test_a_callers_http_client_is_left_open() -> None:
    async with MockServer(default=Reply.text("shared")) as server:
        async with httpx.AsyncClient() as http:
            async with streamkit.AsyncClient(
                api_key="test-key", base_url=server.base_url, http_client=http, max_retries=0, resume=False
            ) as client:
                assert client._http is http
                async with client.messages.stream(**REQUEST) as stream:
                    assert await stream.get_final_text() == "shared"
            assert not http.is_closed
            # Still usable by its owner.
            response = await http.post(
                f"{server.base_url}/v1/messages",
                content=json.dumps(REQUEST),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200
            assert response.json()["content"] == [{"type": "text", "text": "shared"}]
        assert http.is_closed


# -- configuration -------------------------------------------------------------------


async def test_missing_api_key_with_the_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(streamkit.StreamkitError) as caught:
        streamkit.AsyncClient()
    assert type(caught.value) is streamkit.StreamkitError
    assert caught.value.message == "no API key: pass api_key=... or set ANTHROPIC_API_KEY"
    assert "ANTHROPIC_API_KEY" in str(caught.value)


async def test_missing_api_key_is_allowed_with_another_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    async with MockServer(Reply.text("no key needed")) as server:
        async with streamkit.AsyncClient(base_url=server.base_url, max_retries=0) as client:
            assert client.api_key is None
            assert (await client.messages.create(**REQUEST)).text == "no key needed"
    assert "x-api-key" not in server.requests[0].headers


async def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    async with streamkit.AsyncClient() as client:
        assert (client.api_key, client.base_url) == ("env-key", "https://api.anthropic.com")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy.internal:8080/")
    async with streamkit.AsyncClient(api_key="arg-key") as client:
        assert (client.api_key, client.base_url) == ("arg-key", "http://proxy.internal:8080")
    async with streamkit.AsyncClient(api_key="arg-key", base_url="http://other:1") as client:
        assert client.base_url == "http://other:1"


async def test_extra_headers_on_create() -> None:
    async with MockServer(Reply.text("ok")) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, max_retries=0) as client:
            await client.messages.create(**REQUEST, extra_headers={"anthropic-beta": "b-1"})
    assert server.requests[0].headers["anthropic-beta"] == "b-1"
