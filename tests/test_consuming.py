"""The three ways to consume a stream, the hooks, the request sent, and closing."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

import streamkit
from streamkit.testing import Fault, MockServer, Reply, TextBlock, ThinkingBlock, ToolUseBlock

pytestmark = pytest.mark.anyio
USER = [{"role": "user", "content": "hi"}]
RID = "req_ABCDEFGHIJKLMNOPQRSTUVWX"
MIXED = Reply(
    blocks=[
        ThinkingBlock("Think first.", signature="sig_1", chunk_size=6),
        TextBlock("Hello there!", chunk_size=5),
        ToolUseBlock("lookup", {"q": "rivers"}, id="toolu_1", chunk_size=4),
    ],
    stop_reason="tool_use",
    ping_every=4,
    request_id=RID,
)


def client_for(server: MockServer, **options: Any) -> streamkit.AsyncClient:
    return streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, **options)


async def wait_closed(server: MockServer) -> None:
    with anyio.fail_after(5):
        while server.open_connections:
            await anyio.sleep(0.01)


async def test_async_iterator_yields_every_typed_event() -> None:
    async with MockServer(Reply.text("Hi there", chunk_size=4, ping_every=3)) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
            assert stream.current_message is None
            kinds = [type(event).__name__ async for event in stream]
            message = await stream.get_final_message()
    assert kinds == [
        "MessageStartEvent",
        "ContentBlockStartEvent",
        "ContentBlockDeltaEvent",
        "PingEvent",
        "ContentBlockDeltaEvent",
        "ContentBlockStopEvent",
        "MessageDeltaEvent",
        "PingEvent",
        "MessageStopEvent",
    ]
    assert message.text == "Hi there" and message.stop_reason == "end_turn"


async def test_text_stream_final_message_and_request_id() -> None:
    async with MockServer(MIXED) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
            assert stream.request_id == RID
            assert [text async for text in stream.text_stream] == ["Hello", " ther", "e!"]
            message = await stream.get_final_message()
            assert await stream.get_final_text() == "Hello there!"
            assert stream.current_message == message
    assert message.content == [
        streamkit.ThinkingBlock(thinking="Think first.", signature="sig_1"),
        streamkit.TextBlock(text="Hello there!", citations=None),
        streamkit.ToolUseBlock(id="toolu_1", name="lookup", input={"q": "rivers"}),
    ]
    assert message.stop_reason == "tool_use"


async def test_hooks_fire_in_order_sync_and_async() -> None:
    seen: list[tuple[str, Any]] = []

    async def on_text(text: str) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("text", text))

    async with MockServer(MIXED) as server, client_for(server) as sk:
        async with sk.messages.stream(
            model="m",
            max_tokens=9,
            messages=USER,
            on_text=on_text,
            on_thinking=lambda text: seen.append(("thinking", text)),
            on_tool_input=lambda piece: seen.append(("tool", piece)),
            on_message=lambda message: seen.append(("message", message.text)),
            on_event=lambda event: seen.append(("event", event.type)),
        ) as stream:
            await stream.get_final_message()  # the hooks run without iterating
    others = [item for item in seen if item[0] != "event"]
    assert others == [
        ("thinking", "Think "),
        ("thinking", "first."),
        ("text", "Hello"),
        ("text", " ther"),
        ("text", "e!"),
        ("tool", '{"q"'),
        ("tool", ': "r'),
        ("tool", "iver"),
        ("tool", 's"}'),
        ("message", "Hello there!"),
    ]
    events = [kind for name, kind in seen if name == "event"]
    assert events[0] == "message_start" and events[-1] == "message_stop" and "ping" in events
    assert len(events) == 23


async def test_a_hook_that_raises_propagates_and_leaves_the_stream_intact() -> None:
    def explode(text: str) -> None:
        if text == " ther":
            raise ValueError("ui broke")

    async with MockServer(Reply.text("Hello there!", chunk_size=5)) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER, on_text=explode) as stream:
            with pytest.raises(ValueError, match="ui broke"):
                await stream.get_final_message()
            assert stream.current_message is not None and stream.current_message.text == "Hello ther"
            assert (await stream.get_final_message()).text == "Hello there!"


async def test_switching_consumers_midway_loses_nothing() -> None:
    async with MockServer(Reply.text("abcdefghij", chunk_size=2)) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
            events = aiter(stream)
            first = [await anext(events) for _ in range(4)]
            kinds = [event.type for event in first]
            assert kinds == ["message_start", "content_block_start", "content_block_delta", "content_block_delta"]
            assert stream.current_message is not None and stream.current_message.text == "abcd"
            assert await stream.get_final_text() == "abcdefghij"


async def test_breaking_out_closes_the_connection() -> None:
    long_reply = Reply.text("word " * 2000, chunk_size=5, delay=0.001)
    async with MockServer(long_reply) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
            async for event in stream:
                if event.type == "content_block_delta":
                    break
        await wait_closed(server)
        with pytest.raises(streamkit.IncompleteStreamError, match="closed before message_stop") as caught:
            await stream.get_final_message()
        assert caught.value.partial_message is not None and caught.value.partial_message.text == "word "


async def test_cancellation_closes_the_connection() -> None:
    hanging = Reply.text("never ends", chunk_size=2, fault=Fault(kind="hang", after=3))
    async with MockServer(hanging) as server, client_for(server, stall_timeout=None) as sk:
        with anyio.move_on_after(0.2) as scope:
            async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
                await stream.get_final_message()
        assert scope.cancelled_caught
        await wait_closed(server)
        assert stream.current_message is not None and stream.current_message.text == "ne"


async def test_request_headers_and_body(monkeypatch: pytest.MonkeyPatch) -> None:
    async with MockServer(Reply.text("ok")) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        async with streamkit.AsyncClient() as sk:
            async with sk.messages.stream(
                model="claude-x",
                max_tokens=77,
                messages=USER,
                system="Be brief.",
                temperature=0.2,
                extra_headers={"x-trace": "t1"},
            ) as stream:
                assert await stream.get_final_text() == "ok"
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == "env-key"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["x-trace"] == "t1"
    assert request.json == {
        "model": "claude-x",
        "max_tokens": 77,
        "messages": USER,
        "system": "Be brief.",
        "temperature": 0.2,
        "stream": True,
    }


async def test_create_returns_the_whole_message() -> None:
    async with MockServer(MIXED) as server, client_for(server) as sk:
        message = await sk.messages.create(model="m", max_tokens=9, messages=USER)
    assert message.text == "Hello there!" and message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert server.requests[0].headers["accept"] == "application/json"
    assert "stream" not in server.requests[0].json


async def test_create_maps_errors() -> None:
    async with MockServer(Reply.error(529, request_id=RID)) as server, client_for(server, max_retries=0) as sk:
        with pytest.raises(streamkit.OverloadedError) as caught:
            await sk.messages.create(model="m", max_tokens=9, messages=USER)
    assert isinstance(caught.value, streamkit.APIStatusError) and caught.value.request_id == RID


async def test_the_client_closes_only_its_own_pool() -> None:
    async with MockServer() as server:
        async with client_for(server) as sk:
            own = sk._http
        assert own.is_closed
        async with httpx.AsyncClient() as mine:
            async with client_for(server, http_client=mine) as sk:
                async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
                    await stream.get_final_message()
            assert not mine.is_closed


def test_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(streamkit.StreamkitError, match="ANTHROPIC_API_KEY"):
        streamkit.AsyncClient()
