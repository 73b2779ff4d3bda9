"""Issue 3, done-when: a generation that fails halfway reaches the user whole.

Each scenario compares, character for character, with the same reply delivered
without a fault, on asyncio and trio, over the loopback mock server.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import httpx
import pytest

import streamkit
from streamkit.resume import CONTINUE_PROMPT
from streamkit.testing import Fault, MockServer, Reply, ToolUseBlock, lorem
from streamkit.transport import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, USER_TIMEOUT_MS

pytestmark = pytest.mark.anyio
TEXT = lorem(3000, seed=5)
CHUNK = 7  # cuts fall mid-word
USER = [{"role": "user", "content": "Write."}]
FAST = {"retry_initial_delay": 0.001, "retry_max_delay": 0.01}


def client_for(server: MockServer, **options: Any) -> streamkit.AsyncClient:
    return streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, **{**FAST, **options})


async def run(
    *replies: Reply, client: dict[str, Any] | None = None, **call: Any
) -> tuple[streamkit.MessageStream, streamkit.Message, str, list[str], MockServer]:
    """Stream through ``replies``; return the stream, final message, text_stream text, on_text pieces."""
    pieces: list[str] = []
    async with MockServer(*replies) as server, client_for(server, **(client or {})) as sk:
        async with sk.messages.stream(model="m", max_tokens=4096, messages=USER, on_text=pieces.append, **call) as s:
            streamed = "".join([text async for text in s.text_stream])
            message = await s.get_final_message()
    return s, message, streamed, pieces, server


def faulty(kind: str, after: int, **fault: Any) -> Reply:
    return Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind=kind, after=after, **fault))  # type: ignore[arg-type]


CLEAN = Reply.text(TEXT, chunk_size=CHUNK)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="error", after=40),
        Fault(kind="error", after=40, error_type="api_error", message="Internal"),
        Fault(kind="error", after=40, error_type="rate_limit_error", message="slow"),
        Fault(kind="cut", after=40),
        Fault(kind="truncate", after=40),
        Fault(kind="stall", after=40, ping_interval=0.05),
    ],
    ids=["overloaded", "api_error", "rate_limit", "cut", "truncate", "stall"],
)
async def test_resumed_reply_equals_the_uninterrupted_one(fault: Fault) -> None:
    first = Reply.text(TEXT, chunk_size=CHUNK, fault=fault)
    stream, message, streamed, pieces, server = await run(first, CLEAN, stall_timeout=0.3)
    assert streamed == TEXT and "".join(pieces) == TEXT and message.text == TEXT
    assert len(message.content) == 1 and message.stop_reason == "end_turn"
    [info] = stream.resumes
    assert info.strategy == "prefill" and info.attempt == 1 and info.dropped_block is None
    assert info.kept_chars == (40 - 2) * CHUNK
    assert info.failed_request_id != info.request_id == stream.request_id
    assert stream.retries == []
    kept = TEXT[: (40 - 2) * CHUNK]
    assert server.requests[1].json["messages"] == [*USER, {"role": "assistant", "content": kept.rstrip()}]
    # usage sums both attempts: input tokens twice; output 1 (start of the broken attempt) + the second
    assert message.usage.input_tokens == 20


async def test_stall_is_a_timer_not_a_check_on_pings() -> None:
    stream, message, *_ = await run(faulty("hang", 10), CLEAN, stall_timeout=0.3)
    assert message.text == TEXT
    assert type(stream.resumes[0].cause) is streamkit.StallError


@pytest.mark.parametrize("after", [3, 4, 5, 10, 37, 100, 250])
@pytest.mark.parametrize("strategy", ["prefill", "continue"])
async def test_every_seam(after: int, strategy: str) -> None:
    repeat = {"repeat_words": 3} if strategy == "continue" else {}
    second = Reply.text(TEXT, chunk_size=CHUNK, **repeat)
    stream, message, streamed, pieces, _ = await run(faulty("cut", after), second, resume=strategy)
    assert streamed == TEXT and "".join(pieces) == TEXT and message.text == TEXT
    assert [info.strategy for info in stream.resumes] == [strategy]
    # the seam holds back only the few pieces that could repeat the kept text, not the rest
    assert len(pieces) >= len(TEXT) // CHUNK - 5


async def test_auto_falls_back_to_continue_when_prefill_is_rejected() -> None:
    first = Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind="error", after=50), reject_prefill=True)
    rejecting = Reply.text(TEXT, chunk_size=CHUNK, reject_prefill=True, repeat_words=4)
    pieces: list[str] = []
    async with MockServer(first, rejecting, rejecting, first, rejecting) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER, on_text=pieces.append) as stream:
            message = await stream.get_final_message()
        assert message.text == TEXT == "".join(pieces)
        assert [info.strategy for info in stream.resumes] == ["continue"]
        kept = TEXT[: 48 * CHUNK].rstrip()
        prefill, cont = server.requests[1].json["messages"], server.requests[2].json["messages"]
        assert prefill == [*USER, {"role": "assistant", "content": kept}]
        assert cont == [*USER, {"role": "assistant", "content": kept}, {"role": "user", "content": CONTINUE_PROMPT}]
        # the client remembers: the next stream's resume goes straight to continue
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
            assert (await stream.get_final_text()) == TEXT
        assert len(server.requests) == 5
        assert server.requests[4].json["messages"][-1] == {"role": "user", "content": CONTINUE_PROMPT}


async def test_thinking_never_uses_prefill() -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    stream, message, *_ = await run(faulty("cut", 30), CLEAN, **thinking)
    assert message.text == TEXT
    assert [info.strategy for info in stream.resumes] == ["continue"]


async def test_failure_inside_a_tool_use_block() -> None:
    tool_input = {"city": "Paris", "days": [1, 2, 3], "note": lorem(200, seed=2)}
    blocks = Reply.tool_use("get_weather", tool_input, text="Let me check the weather.", tool_id="toolu_X").blocks
    tool = ToolUseBlock("get_weather", tool_input, id="toolu_X", chunk_size=5)
    first = Reply(blocks=[blocks[0], tool], stop_reason="tool_use", fault=Fault(kind="cut", after=12))
    second = Reply(blocks=[blocks[0], tool], stop_reason="tool_use")
    events: list[streamkit.StreamEvent] = []
    async with MockServer(first, second) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER, on_event=events.append) as stream:
            message = await stream.get_final_message()
    [info] = stream.resumes
    assert info.dropped_block == "tool_use" and info.kept_chars == len("Let me check the weather.")
    assert message.text == "Let me check the weather."
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool_block = message.content[1]
    assert isinstance(tool_block, streamkit.ToolUseBlock)
    assert (tool_block.id, tool_block.name, tool_block.input) == ("toolu_X", "get_weather", tool_input)
    assert message.stop_reason == "tool_use"
    starts = [e.index for e in events if isinstance(e, streamkit.ContentBlockStartEvent)]
    assert starts == [0, 1, 1]  # the dropped tool block starts again at the same index


async def test_no_content_yet_is_a_plain_retry() -> None:
    stream, message, *_ = await run(faulty("error", 2), CLEAN)
    assert message.text == TEXT
    assert stream.resumes == []
    assert [(r.attempt, type(r.error)) for r in stream.retries] == [
        (1, streamkit.errors._STREAM_CLASSES["overloaded_error"])
    ]


async def test_max_resumes_exhausted_raises_with_the_merged_text() -> None:
    replies = [faulty("cut", 20), faulty("cut", 10), faulty("cut", 10)]
    async with MockServer(*replies) as server, client_for(server, max_resumes=2) as sk:
        with pytest.raises(streamkit.ConnectionLostError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
    assert len(stream.resumes) == 2
    partial = caught.value.partial_message
    assert partial is not None
    # the last continuation started where the last prefill ended and sent 8 deltas
    last_prefill = server.requests[2].json["messages"][-1]["content"]
    assert TEXT.startswith(last_prefill) and len(last_prefill) > 18 * CHUNK
    assert partial.text == TEXT[: len(last_prefill) + 8 * CHUNK]


async def test_resume_disabled_raises_the_raw_error() -> None:
    with pytest.raises(streamkit.OverloadedError) as caught:
        await run(faulty("error", 30), CLEAN, resume=False)
    assert isinstance(caught.value, streamkit.StreamError)
    assert caught.value.partial_message is not None
    assert caught.value.partial_message.text == TEXT[: 28 * CHUNK]


async def test_retries_honour_retry_after_and_should_retry() -> None:
    delays: list[float] = []
    replies = [
        Reply.error(529, headers={"retry-after": "0"}),
        Reply.error(429, headers={"retry-after-ms": "20"}),
        CLEAN,
    ]
    async with MockServer(*replies) as server, client_for(server) as sk:
        async with sk.messages.stream(
            model="m", max_tokens=9, messages=USER, on_retry=lambda info: delays.append(info.delay)
        ) as stream:
            assert await stream.get_final_text() == TEXT
    assert delays == [0.0, 0.02] and [r.attempt for r in stream.retries] == [1, 2]
    assert len(server.requests) == 3

    async with MockServer(Reply.error(529, headers={"x-should-retry": "false"}), CLEAN) as server:
        async with client_for(server) as sk:
            with pytest.raises(streamkit.OverloadedError):
                async with sk.messages.stream(model="m", max_tokens=9, messages=USER):
                    pass
        assert len(server.requests) == 1

    async with MockServer(Reply.error(400, headers={"x-should-retry": "true"}), CLEAN) as server:
        async with client_for(server) as sk:
            async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
                assert await stream.get_final_text() == TEXT
        assert len(server.requests) == 2

    async with MockServer(Reply.error(400), CLEAN) as server:
        async with client_for(server) as sk:
            with pytest.raises(streamkit.InvalidRequestError):
                await sk.messages.create(model="m", max_tokens=9, messages=USER)
        assert len(server.requests) == 1


async def test_a_resumed_stream_leaks_no_connection() -> None:
    async with MockServer(faulty("cut", 30), faulty("error", 30), CLEAN) as server:
        async with client_for(server) as sk:
            async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
                assert await stream.get_final_text() == TEXT
            pool = sk._http._transport._pool  # type: ignore[attr-defined]
            assert [c for c in pool.connections if not c.is_idle()] == []
            assert len(stream.resumes) == 2
        with anyio.fail_after(5):
            while server.open_connections:
                await anyio.sleep(0.01)


async def test_keepalive_options_on_the_live_socket() -> None:
    async with MockServer(CLEAN) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
            assert stream._response is not None
            sock = stream._response.extensions["network_stream"].get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_MS
            await stream.get_final_message()


async def test_proxy_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    http = streamkit.transport.default_http_client()
    patterns = {pattern.pattern: transport for pattern, transport in http._mounts.items()}
    assert isinstance(patterns["http://"], httpx.AsyncHTTPTransport)
    assert patterns["all://*127.0.0.1"] is None
    await http.aclose()
    async with MockServer(CLEAN) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=9, messages=USER) as stream:
            assert await stream.get_final_text() == TEXT


async def test_create_refuses_requests_that_must_stream() -> None:
    async with MockServer(CLEAN) as server, client_for(server) as sk:
        with pytest.raises(streamkit.StreamingRequiredError, match=r"max_tokens=21334 .* use client\.messages\.stream"):
            await sk.messages.create(model="m", max_tokens=21_334, messages=USER)
        assert server.requests == []
        message = await sk.messages.create(model="m", max_tokens=21_333, messages=USER)
        assert message.text == TEXT


async def test_request_size_guard() -> None:
    huge = [{"role": "user", "content": "x" * (32 * 1024 * 1024)}]
    async with MockServer(CLEAN) as server, client_for(server) as sk:
        with pytest.raises(streamkit.RequestTooLargeError) as caught:
            async with sk.messages.stream(model="m", max_tokens=9, messages=huge):
                pass
        size = (
            len(b'{"model":"m","max_tokens":9,"messages":[{"role":"user","content":""}],"stream":true}')
            + 32 * 1024 * 1024
        )
        assert caught.value.message.startswith(
            f"the request body is {size:,} bytes, over the API's limit of 33,554,432"
        )
        assert caught.value.status_code is None and caught.value.error_type == "request_too_large"
        with pytest.raises(streamkit.RequestTooLargeError):
            await sk.messages.create(model="m", max_tokens=9, messages=huge)
        assert server.requests == []
