"""MessageStream over a real loopback socket: the ways to consume it, hooks, lifecycle, the request."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest

import streamkit
from streamkit.testing import Fault, MockServer, RawBlock, Reply, TextBlock, ThinkingBlock, ToolUseBlock, lorem

pytestmark = pytest.mark.anyio

FaultKind = Literal["error", "cut", "truncate", "malformed", "stall", "hang"]
REQUEST: dict[str, Any] = {"model": "claude-mock-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
RID = "req_STREAM0123456789abcdefg"
MSG_ID = "msg_STREAM0123456789abcdefg"
HELLO = "Hello, world"  # Reply.text(HELLO, chunk_size=5): "Hello", ", wor", "ld"
HELLO_PIECES = ["Hello", ", wor", "ld"]

THINKING = "Let me think about it"
ANSWER = "Hi there, friend"
TOOL_INPUT = {"city": "Paris", "days": 3}
TOOL_JSON = json.dumps(TOOL_INPUT)


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def mixed_reply(**fields: Any) -> Reply:
    """Thinking, text, then a tool call: every kind of delta a hook can see."""
    return Reply(
        blocks=[
            ThinkingBlock(THINKING, chunk_size=6, signature="sig_abc"),
            TextBlock(ANSWER, chunk_size=4),
            ToolUseBlock("get_weather", TOOL_INPUT, id="toolu_fixed", chunk_size=5),
        ],
        stop_reason="tool_use",
        message_id=MSG_ID,
        request_id=RID,
        **fields,
    )


def mixed_message() -> streamkit.Message:
    n_deltas = len(pieces(THINKING, 6)) + 1 + len(pieces(ANSWER, 4)) + len(pieces(TOOL_JSON, 5))
    tool = streamkit.ToolUseBlock(id="toolu_fixed", name="get_weather", input=TOOL_INPUT)
    tool._partial_json = TOOL_JSON
    return streamkit.Message(
        id=MSG_ID,
        model="claude-mock-1",
        content=[
            streamkit.ThinkingBlock(thinking=THINKING, signature="sig_abc"),
            streamkit.TextBlock(text=ANSWER),
            tool,
        ],
        stop_reason="tool_use",
        usage=streamkit.Usage(input_tokens=10, output_tokens=n_deltas),
    )


@asynccontextmanager
async def serve(*replies: Reply, **options: Any) -> AsyncIterator[tuple[MockServer, streamkit.AsyncClient]]:
    settings: dict[str, Any] = {"max_retries": 0, "resume": False, **options}
    async with MockServer(*replies) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, **settings) as client:
            yield server, client


async def wait_closed(server: MockServer, limit: float = 3.0) -> None:
    """Wait until the server has no open connection; fail after ``limit`` seconds."""
    await server.wait_connections(0, timeout=limit)
    assert server.open_connections == 0


# -- the three ways to consume -----------------------------------------------------


async def test_event_iterator_yields_exact_typed_events() -> None:
    async with serve(Reply.text(HELLO, chunk_size=5, message_id=MSG_ID)) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            events = [event async for event in stream]
    assert [type(event) for event in events] == [
        streamkit.MessageStartEvent,
        streamkit.ContentBlockStartEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockStopEvent,
        streamkit.MessageDeltaEvent,
        streamkit.MessageStopEvent,
    ]
    start, block_start, *deltas, stop, message_delta, _ = events
    assert isinstance(start, streamkit.MessageStartEvent)
    assert start.message == streamkit.Message(
        id=MSG_ID, model="claude-mock-1", usage=streamkit.Usage(input_tokens=10, output_tokens=1)
    )
    assert isinstance(block_start, streamkit.ContentBlockStartEvent)
    assert (block_start.index, block_start.content_block) == (0, streamkit.TextBlock(text=""))
    assert [(d.index, d.delta) for d in deltas if isinstance(d, streamkit.ContentBlockDeltaEvent)] == [
        (0, streamkit.TextDelta(text=piece)) for piece in HELLO_PIECES
    ]
    assert isinstance(stop, streamkit.ContentBlockStopEvent) and stop.index == 0
    assert isinstance(message_delta, streamkit.MessageDeltaEvent)
    assert (message_delta.delta.stop_reason, message_delta.delta.stop_sequence) == ("end_turn", None)
    assert message_delta.usage == {"output_tokens": 3}


async def test_text_stream_gives_the_text_pieces() -> None:
    async with serve(mixed_reply()) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            got = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()  # already consumed: returns at once
    assert got == pieces(ANSWER, 4)  # no thinking, no tool JSON
    assert final == mixed_message()


async def test_get_final_message_and_text() -> None:
    async with serve(mixed_reply()) as (server, client):
        async with client.messages.stream(**REQUEST) as stream:
            message = await stream.get_final_message()
            assert await stream.get_final_text() == ANSWER
            assert stream.current_message == message
        assert len(server.requests) == 1
    assert message == mixed_message()
    tool = message.content[2]
    assert isinstance(tool, streamkit.ToolUseBlock) and tool.input_json == TOOL_JSON
    assert message.text == ANSWER


async def test_get_final_text_alone() -> None:
    text = lorem(1500, seed=5)
    async with serve(Reply.text(text, chunk_size=3)) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            assert await stream.get_final_text() == text


async def test_text_stream_of_a_long_reply_with_pings() -> None:
    text = lorem(3000, seed=2)
    async with serve(Reply.text(text, chunk_size=11, ping_every=3)) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            got = [piece async for piece in stream.text_stream]
    assert got == pieces(text, 11)


# -- hooks -------------------------------------------------------------------------


async def test_sync_hooks_see_every_piece() -> None:
    texts: list[str] = []
    thoughts: list[str] = []
    tool_parts: list[str] = []
    events: list[Any] = []
    finals: list[streamkit.Message] = []
    errors: list[BaseException] = []
    async with serve(mixed_reply(ping_every=4)) as (_, client):
        async with client.messages.stream(
            **REQUEST,
            on_text=texts.append,
            on_thinking=thoughts.append,
            on_tool_input=tool_parts.append,
            on_event=events.append,
            on_message=finals.append,
            on_error=errors.append,
        ) as stream:
            seen = [event async for event in stream]
            final = await stream.get_final_message()
    assert texts == pieces(ANSWER, 4)
    assert thoughts == pieces(THINKING, 6)
    assert tool_parts == pieces(TOOL_JSON, 5)
    assert events == seen  # the same typed events, pings included
    assert sum(isinstance(event, streamkit.PingEvent) for event in events) > 0
    n_blocks = 3
    n_deltas = len(thoughts) + 1 + len(texts) + len(tool_parts)
    pings = sum(isinstance(event, streamkit.PingEvent) for event in events)
    assert len(events) == 1 + n_blocks * 2 + n_deltas + 2 + pings
    assert finals == [final] == [mixed_message()]
    assert errors == []


async def test_async_hooks_are_awaited() -> None:
    texts: list[str] = []
    thoughts: list[str] = []
    tool_parts: list[str] = []
    kinds: list[str] = []
    finals: list[streamkit.Message] = []

    async def on_text(piece: str) -> None:
        await anyio.lowlevel.checkpoint()
        texts.append(piece)

    async def on_thinking(piece: str) -> None:
        await anyio.lowlevel.checkpoint()
        thoughts.append(piece)

    async def on_tool_input(piece: str) -> None:
        await anyio.lowlevel.checkpoint()
        tool_parts.append(piece)

    async def on_event(event: Any) -> None:
        await anyio.lowlevel.checkpoint()
        kinds.append(event.type)

    async def on_message(message: streamkit.Message) -> None:
        await anyio.lowlevel.checkpoint()
        finals.append(message)

    async with serve(mixed_reply()) as (_, client):
        async with client.messages.stream(
            **REQUEST,
            on_text=on_text,
            on_thinking=on_thinking,
            on_tool_input=on_tool_input,
            on_event=on_event,
            on_message=on_message,
        ) as stream:
            final = await stream.get_final_message()
    assert texts == pieces(ANSWER, 4)
    assert thoughts == pieces(THINKING, 6)
    assert tool_parts == pieces(TOOL_JSON, 5)
    deltas = len(texts) + len(thoughts) + 1 + len(tool_parts)
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * (len(thoughts) + 1),
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * len(texts),
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * len(tool_parts),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert kinds.count("content_block_delta") == deltas
    assert finals == [final] == [mixed_message()]


async def test_hooks_fire_when_only_get_final_message_is_awaited() -> None:
    texts: list[str] = []
    finals: list[streamkit.Message] = []
    count = 0

    def on_event(event: Any) -> None:
        nonlocal count
        count += 1

    async with serve(Reply.text(HELLO, chunk_size=5)) as (_, client):
        async with client.messages.stream(
            **REQUEST, on_text=texts.append, on_event=on_event, on_message=finals.append
        ) as stream:
            final = await stream.get_final_message()
    assert texts == HELLO_PIECES
    assert count == 8
    assert finals == [final] and final.text == HELLO


async def test_hooks_fire_with_text_stream() -> None:
    texts: list[str] = []
    thoughts: list[str] = []
    async with serve(mixed_reply()) as (_, client):
        async with client.messages.stream(**REQUEST, on_text=texts.append, on_thinking=thoughts.append) as stream:
            got = [piece async for piece in stream.text_stream]
    assert texts == got == pieces(ANSWER, 4)
    assert thoughts == pieces(THINKING, 6)


async def test_a_raising_hook_propagates_and_the_snapshot_stays_consistent() -> None:
    received: list[str] = []
    boom = ValueError("hook failed")

    def on_text(piece: str) -> None:
        received.append(piece)
        if len(received) == 3:
            raise boom

    text = "abcdefghijklmnop"
    async with serve(Reply.text(text, chunk_size=2)) as (server, client):
        with pytest.raises(ValueError) as caught:
            async with client.messages.stream(**REQUEST, on_text=on_text) as stream:
                await stream.get_final_message()
        assert caught.value is boom
        assert received == ["ab", "cd", "ef"]
        snapshot = stream.current_message
        assert snapshot is not None
        assert snapshot.text == "abcdef" == "".join(received)
        assert snapshot.stop_reason is None
        assert client._http._transport.chosen().admitted == 0  # type: ignore[attr-defined]  # the response closed
        await client.aclose()  # (aiohttp pools a connection whose whole body has arrived, read or not)
        await wait_closed(server)


async def test_a_raising_async_hook_propagates_from_the_iterator() -> None:
    class Stop(Exception):
        pass

    async def on_event(event: Any) -> None:
        await anyio.lowlevel.checkpoint()
        if isinstance(event, streamkit.ContentBlockStopEvent):
            raise Stop

    seen: list[str] = []
    async with serve(Reply.text(HELLO, chunk_size=5)) as (_, client):
        with pytest.raises(Stop):
            async with client.messages.stream(**REQUEST, on_event=on_event) as stream:
                async for event in stream:
                    seen.append(event.type)
        assert stream.current_message is not None and stream.current_message.text == HELLO
    # The event whose hook raised is not handed to the loop.
    assert seen == ["message_start", "content_block_start", *["content_block_delta"] * 3]


# -- pings, the snapshot, request ids ----------------------------------------------


async def test_pings_reach_the_iterator_but_not_text_stream() -> None:
    reply = Reply.text(HELLO, chunk_size=5, ping_every=1)
    async with serve(reply, reply) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            events = [event async for event in stream]
        async with client.messages.stream(**REQUEST) as stream:
            texts = [piece async for piece in stream.text_stream]
            assert await stream.get_final_text() == HELLO
    kinds = [event.type for event in events]
    # ping_every=1: a ping before and after each event from content_block_start on.
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        "ping",
        "content_block_delta",
        "ping",
        "content_block_delta",
        "ping",
        "content_block_delta",
        "ping",
        "content_block_stop",
        "ping",
        "message_delta",
        "ping",
        "message_stop",
    ]
    assert all(type(event) is streamkit.PingEvent for event in events if event.type == "ping")
    assert texts == HELLO_PIECES


async def test_current_message_follows_the_events_handed_out() -> None:
    async with serve(Reply.text(HELLO, chunk_size=5, message_id=MSG_ID)) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            assert stream.current_message is None  # nothing consumed yet
            events = stream.__aiter__()
            first = await events.__anext__()
            assert isinstance(first, streamkit.MessageStartEvent)
            snapshot = stream.current_message
            assert snapshot == streamkit.Message(
                id=MSG_ID, model="claude-mock-1", usage=streamkit.Usage(input_tokens=10, output_tokens=1)
            )
            await events.__anext__()  # content_block_start
            assert stream.current_message is not None
            assert stream.current_message.content == [streamkit.TextBlock(text="")]
            text = ""
            for piece in HELLO_PIECES:
                event = await events.__anext__()
                assert isinstance(event, streamkit.ContentBlockDeltaEvent)
                text += piece
                assert stream.current_message is not None and stream.current_message.text == text
                assert stream.current_message.stop_reason is None
            await events.__anext__()  # content_block_stop
            message_delta = await events.__anext__()
            assert isinstance(message_delta, streamkit.MessageDeltaEvent)
            assert stream.current_message is not None
            assert stream.current_message.stop_reason == "end_turn"
            assert stream.current_message.usage == streamkit.Usage(input_tokens=10, output_tokens=3)
            assert isinstance(await events.__anext__(), streamkit.MessageStopEvent)
            with pytest.raises(StopAsyncIteration):
                await events.__anext__()
            assert snapshot is not None and snapshot.content == []  # an earlier snapshot is not changed
            assert await stream.get_final_message() == stream.current_message


async def test_request_id_from_the_response_header() -> None:
    async with serve(Reply.text("x", request_id=RID), Reply.text("y"), Reply.text("z", request_id_header=False)) as (
        _,
        client,
    ):
        async with client.messages.stream(**REQUEST) as stream:
            assert stream.request_id == RID
            await stream.get_final_message()
        async with client.messages.stream(**REQUEST) as stream:
            assert re.fullmatch(r"req_[0-9A-Za-z]{24}", stream.request_id or "")
            assert stream.request_id != RID
        async with client.messages.stream(**REQUEST) as stream:
            assert stream.request_id is None
            assert await stream.get_final_text() == "z"


# -- leaving early, cancellation ---------------------------------------------------


async def test_break_out_of_the_iterator_closes_the_connection() -> None:
    text = lorem(4000, seed=9)
    reply = Reply.text(text, chunk_size=8, delay=0.005)  # 500 deltas: still streaming for seconds
    async with serve(reply, Reply.text(text)) as (server, client):
        started = anyio.current_time()
        async with client.messages.stream(**REQUEST) as stream:
            count = 0
            async for _ in stream:
                count += 1
                if count == 5:
                    break
            assert server.open_connections == 1
            assert stream.current_message is not None and stream.current_message.text == text[:24]
        await wait_closed(server)  # closed by leaving the stream, with the client still open
        assert anyio.current_time() - started < 2.0
        # The client still works after the early exit.
        async with client.messages.stream(**REQUEST) as stream:
            assert await stream.get_final_text() == text
    assert server.open_connections == 0


async def test_leaving_without_reading_closes_the_connection() -> None:
    async with serve(Reply.text(lorem(4000), chunk_size=8, delay=0.005)) as (server, client):
        async with client.messages.stream(**REQUEST) as stream:
            assert stream.current_message is None
        await wait_closed(server)
        with pytest.raises(streamkit.IncompleteStreamError) as caught:
            await stream.get_final_message()  # closed before message_stop: never a final message
        assert caught.value.message == "the stream was closed before message_stop: the reply is incomplete"


async def test_cancelling_a_hanging_stream_closes_the_connection() -> None:
    text = lorem(200, seed=4)
    reply = Reply.text(text, chunk_size=8, fault=Fault("hang", after=5))
    async with serve(reply) as (server, client):
        with anyio.move_on_after(0.3) as scope:
            async with client.messages.stream(**REQUEST) as stream:
                await stream.get_final_message()
        assert scope.cancelled_caught
        assert stream.current_message is not None and stream.current_message.text == text[:24]
        await wait_closed(server)


async def test_cancelling_from_another_task() -> None:
    reply = Reply.text("abcdefgh", chunk_size=2, fault=Fault("hang", after=3))
    pieces_seen: list[str] = []
    first_piece = anyio.Event()

    def on_text(piece: str) -> None:
        pieces_seen.append(piece)
        first_piece.set()

    async with serve(reply) as (server, client):
        async with anyio.create_task_group() as group:

            async def consume() -> None:
                async with client.messages.stream(**REQUEST, on_text=on_text) as stream:
                    await stream.get_final_message()

            group.start_soon(consume)
            with anyio.fail_after(3):
                await first_piece.wait()
            group.cancel_scope.cancel()
        await wait_closed(server)
    assert pieces_seen == ["ab"]


# -- what is sent ------------------------------------------------------------------


async def test_request_headers_and_body() -> None:
    async with serve(Reply.text("ok")) as (server, client):
        async with client.messages.stream(
            **REQUEST,
            system="Be brief.",
            temperature=0.5,
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
            extra_headers={"anthropic-beta": "some-beta-2025-01-01"},
        ) as stream:
            await stream.get_final_message()
    [request] = server.requests
    assert (request.method, request.path, request.query) == ("POST", "/v1/messages", "")
    assert request.headers["x-api-key"] == "test-key"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["anthropic-beta"] == "some-beta-2025-01-01"
    assert request.json == {
        "model": "claude-mock-1",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "system": "Be brief.",
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


async def test_environment_variables_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    async with MockServer(Reply.text("env"), Reply.text("args")) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url + "/")
        async with streamkit.AsyncClient(max_retries=0, resume=False) as client:
            assert (client.api_key, client.base_url) == ("env-key", server.base_url)
            async with client.messages.stream(**REQUEST) as stream:
                assert await stream.get_final_text() == "env"
        async with streamkit.AsyncClient(api_key="arg-key", base_url=server.base_url, max_retries=0) as client:
            async with client.messages.stream(**REQUEST) as stream:
                assert await stream.get_final_text() == "args"
    assert [r.headers["x-api-key"] for r in server.requests] == ["env-key", "arg-key"]


# -- switching consumers -----------------------------------------------------------


async def test_iterate_then_get_final_message() -> None:
    text = lorem(500, seed=6)
    async with serve(Reply.text(text, chunk_size=9)) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 4:
                    break
            assert stream.current_message is not None and stream.current_message.text == text[:18]
            final = await stream.get_final_message()
    assert final.text == text
    assert final.stop_reason == "end_turn"


async def test_text_stream_then_iterator_then_final_text() -> None:
    text = lorem(300, seed=8)
    expected = pieces(text, 10)
    async with serve(Reply.text(text, chunk_size=10)) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            first: list[str] = []
            async for piece in stream.text_stream:
                first.append(piece)
                if len(first) == 3:
                    break
            middle: list[str] = []
            async for event in stream:
                if isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.TextDelta):
                    middle.append(event.delta.text)
                    if len(middle) == 5:
                        break
            assert first + middle == expected[:8]
            assert await stream.get_final_text() == text
            assert [piece async for piece in stream.text_stream] == []  # nothing left, nothing repeated


async def test_unknown_events_and_blocks_reach_the_iterator() -> None:
    reply = Reply(
        blocks=[
            RawBlock(
                {"type": "mystery", "payload": ""},
                [{"type": "mystery_delta", "payload": "ab"}, {"type": "mystery_delta", "payload": "cd"}],
            ),
            TextBlock("done"),
        ]
    )
    async with serve(reply) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_message()
    deltas = [event.delta for event in events if isinstance(event, streamkit.ContentBlockDeltaEvent)]
    assert deltas[:2] == [
        streamkit.UnknownDelta(type="mystery_delta", payload="ab"),  # type: ignore[call-arg]
        streamkit.UnknownDelta(type="mystery_delta", payload="cd"),  # type: ignore[call-arg]
    ]
    assert final.content[0].model_dump() == {"type": "mystery", "payload": "abcd"}
    assert final.text == "done"


async def test_tool_with_only_an_empty_input_fragment() -> None:
    """A tool without arguments streams one empty input_json_delta; its input stays {}."""
    reply = Reply(
        blocks=[
            RawBlock(
                {"type": "tool_use", "id": "toolu_noargs", "name": "get_time", "input": {}},
                [{"type": "input_json_delta", "partial_json": ""}],
            )
        ],
        stop_reason="tool_use",
    )
    async with serve(reply) as (_, client):
        async with client.messages.stream(**REQUEST) as stream:
            final = await stream.get_final_message()
    assert final.content == [streamkit.ToolUseBlock(id="toolu_noargs", name="get_time", input={})]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("kind", ["cut", "stall", "hang"])
async def test_trouble_after_message_stop_keeps_the_finished_reply(kind: FaultKind) -> None:
    """message_stop arrived: the reply is whole.  A broken or idle connection after it changes nothing."""
    reply = Reply.text(HELLO, chunk_size=5, fault=Fault(kind, after=8, ping_interval=0.02))  # all 8 events first
    async with serve(reply, stall_timeout=0.3, timeout=0.5, drain_timeout=0.05) as (_, client):
        with anyio.fail_after(3):
            async with client.messages.stream(**REQUEST) as stream:
                final = await stream.get_final_message()
    assert final.text == HELLO
    assert final.stop_reason == "end_turn"


async def test_a_settlement_that_fails_still_closes_the_connection() -> None:
    """close() settles the attempt first; a failure there must not leave the response open."""

    async def failing(*args: Any, **kwargs: Any) -> bool:
        raise streamkit.StreamkitError("settlement failed")

    def failing_sync(*args: Any, **kwargs: Any) -> bool:
        raise streamkit.StreamkitError("settlement failed")

    hanging = Reply.text(HELLO, chunk_size=5, fault=Fault("hang", after=2))  # the connection stays open
    async with serve(hanging, hanging) as (server, client):
        stream = await client.messages.stream(**REQUEST).__aenter__()
        stream._open.ended = failing  # type: ignore[method-assign]
        with pytest.raises(streamkit.StreamkitError) as caught:
            await stream.close()
        assert caught.value.message == "settlement failed"
        await wait_closed(server)
        with streamkit.Client(api_key="test-key", base_url=server.base_url, max_retries=0, resume=False) as sync:

            def run() -> None:
                sync_stream = sync.messages.stream(**REQUEST).__enter__()
                sync_stream._open.ended = failing_sync  # type: ignore[method-assign]
                with pytest.raises(streamkit.StreamkitError):
                    sync_stream.close()

            await anyio.to_thread.run_sync(run)
            await wait_closed(server)
