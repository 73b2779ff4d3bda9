"""Tests of streamkit.testing.MockServer: the bytes it sends, its faults, continuation and lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pydantic
import pytest

from streamkit.testing import (
    Fault,
    MockServer,
    RawBlock,
    RecordedRequest,
    Reply,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    lorem,
)

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"
REQUEST_ID = re.compile(r"^req_[0-9A-Za-z]{24}$")
ANSWER = "The quick brown fox jumps over the lazy dog."
STREAM = {"model": "m", "max_tokens": 100, "stream": True}


# --- helpers ----------------------------------------------------------------------


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """(event name, parsed data) for each event of a well-formed transcript."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def names(events: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in events]


def deltas(events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [data["delta"] for name, data in events if name == "content_block_delta"]


def streamed_text(events: list[tuple[str, Any]]) -> str:
    return "".join(d["text"] for d in deltas(events) if d["type"] == "text_delta")


def stream_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {**STREAM, "messages": messages}


async def post(client: httpx.AsyncClient, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    return await client.post("/v1/messages", json=STREAM if body is None else body, **kwargs)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition the server has no event for (its connection count has: wait_connections)."""
    for _ in range(400):
        if predicate():
            return
        await anyio.sleep(0.005)
    raise AssertionError("condition not met within 2 s")


def port_of(server: MockServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


# --- the happy path ---------------------------------------------------------------

EXPECTED_HELLO = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_test","type":"message","role":"assistant",'
    b'"model":"claude-mock-1","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":10,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" worl"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"d!"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":3}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


async def test_small_text_reply_exact_bytes() -> None:
    rid = "req_" + "a1B2" * 6
    async with (
        MockServer(Reply.text("Hello world!", chunk_size=5, message_id="msg_test", request_id=rid)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        response = await post(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["request-id"] == rid
    assert response.content == EXPECTED_HELLO


async def test_request_ids_are_generated_unique_and_optional() -> None:
    async with (
        MockServer(Reply.text("a"), Reply.text("b"), Reply.text("c", request_id_header=False)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        first, second, third = [await post(client) for _ in range(3)]
    assert REQUEST_ID.match(first.headers["request-id"])
    assert REQUEST_ID.match(second.headers["request-id"])
    assert first.headers["request-id"] != second.headers["request-id"]
    assert "request-id" not in third.headers
    message_id = parse_sse(first.content)[0][1]["message"]["id"]
    assert re.fullmatch(r"msg_[0-9A-Za-z]{24}", message_id)


async def test_non_streaming_message_has_the_same_content() -> None:
    reply = Reply.tool_use(
        "get_weather", {"city": "Paris"}, text="Let me check.", tool_id="toolu_1", message_id="msg_1"
    )
    async with MockServer(reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert REQUEST_ID.match(response.headers["request-id"])
    assert response.json() == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-mock-1",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # 2 text deltas of 8 characters + 3 input_json_delta fragments of '{"city": "Paris"}'
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


async def test_every_block_kind_streams_its_deltas() -> None:
    citation = {"type": "char_location", "cited_text": "sky", "document_index": 0}
    tool_input = {"query": "solar eclipse", "n": 12345}
    reply = Reply(
        blocks=[
            ThinkingBlock("abcdefghij", chunk_size=4, signature="sig_x"),
            TextBlock("Hi", citations=[citation]),
            ToolUseBlock("web_search", tool_input, server=True, pieces=4),
            RawBlock({"type": "compaction", "content": None}, [{"type": "compaction_delta", "content": "sum"}]),
        ],
        input_tokens=42,
        stop_reason="pause_turn",
    )
    async with MockServer(reply, reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        events = parse_sse((await post(client)).content)
        again = parse_sse((await post(client)).content)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    tool_id = starts[2]["id"]
    assert re.fullmatch(r"srvtoolu_[0-9A-Za-z]{24}", tool_id)
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
        {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {}},
        {"type": "compaction", "content": None},
    ]
    fragments = [d["partial_json"] for d in deltas(events) if d["type"] == "input_json_delta"]
    assert len(fragments) == 4
    assert "".join(fragments) == json.dumps(tool_input)
    assert deltas(events) == [
        {"type": "thinking_delta", "thinking": "abcd"},
        {"type": "thinking_delta", "thinking": "efgh"},
        {"type": "thinking_delta", "thinking": "ij"},
        {"type": "signature_delta", "signature": "sig_x"},
        {"type": "citations_delta", "citation": citation},
        {"type": "text_delta", "text": "Hi"},
        *({"type": "input_json_delta", "partial_json": f} for f in fragments),
        {"type": "compaction_delta", "content": "sum"},
    ]
    assert [data["index"] for name, data in events if name == "content_block_stop"] == [0, 1, 2, 3]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 42, "output_tokens": 1}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "pause_turn", "stop_sequence": None},
        "usage": {"output_tokens": 11},
    }
    assert events[-1] == ("message_stop", {"type": "message_stop"})
    # The generated tool id is stable, so a retried reply names the same call.
    assert [d for n, d in again if n == "content_block_start"][2]["content_block"]["id"] == tool_id


async def test_ping_every_and_fixed_output_tokens() -> None:
    reply = Reply.text("abcd", chunk_size=2, ping_every=2, output_tokens=7)
    async with MockServer(reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        events = parse_sse((await post(client)).content)
    assert names(events) == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "ping",
        "content_block_stop",
        "message_delta",
        "ping",
        "message_stop",
    ]
    assert events[2][1] == {"type": "ping"}
    assert events[7][1]["usage"] == {"output_tokens": 7}


async def test_delay_spaces_the_events() -> None:
    reply = Reply.text("abcdef", chunk_size=2, delay=0.01)  # 8 events, 7 gaps
    async with MockServer(reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        started = time.monotonic()
        async with client.stream("POST", "/v1/messages", json=STREAM) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert time.monotonic() - started >= 0.06
    assert streamed_text(parse_sse(raw)) == "abcdef"


async def _raw_chunks(server: MockServer, reply: Reply) -> list[bytes]:
    """The HTTP chunks of a streamed reply, as framed on the wire (read off a raw socket)."""
    body = json.dumps(STREAM).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-streamkit-mock-reply: {reply.header_value()}\r\n\r\n"
    ).encode()
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    async with await anyio.connect_tcp(host, int(port)) as sock:
        await sock.send(head + body)
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            raw += await sock.receive()
    rest = raw.partition(b"\r\n\r\n")[2]
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


async def test_chunk_per_event_sends_each_event_as_its_own_http_chunk() -> None:
    async with MockServer() as server:
        chunks = await _raw_chunks(server, Reply.text("abcdef", chunk_size=2, message_id="m", chunk_per_event=True))
        packed = await _raw_chunks(server, Reply.text("abcdef", chunk_size=2, message_id="m"))
    assert [parse_sse(chunk)[0][0] for chunk in chunks] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(len(parse_sse(chunk)) == 1 for chunk in chunks)
    assert packed == [chunks[0], b"".join(chunks[1:])]  # message_start, then the rest in one write


# --- errors before the stream -----------------------------------------------------


async def test_error_replies_have_the_api_shape() -> None:
    statuses = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
        418: "api_error",
    }
    retry = {"retry-after": "2", "retry-after-ms": "1500", "x-should-retry": "true"}
    replies = [Reply.error(529, headers=retry), *(Reply.error(s) for s in statuses)]
    replies.append(Reply.error(400, "invalid_request_error", "max_tokens: too big", request_id="req_fixed"))
    async with MockServer(*replies) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        first = await post(client)
        others = [await post(client) for _ in statuses]
        custom = await post(client)
    assert first.status_code == 529
    assert first.headers["content-type"] == "application/json"
    assert {k: first.headers[k] for k in retry} == retry
    rid = first.headers["request-id"]
    assert REQUEST_ID.match(rid)
    assert first.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": rid,
    }
    assert [(r.status_code, r.json()["error"]["type"]) for r in others] == list(statuses.items())
    assert custom.headers["request-id"] == "req_fixed"
    assert custom.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: too big"},
        "request_id": "req_fixed",
    }


async def test_raw_bodies_are_sent_as_is() -> None:
    html = "<html><body>413 Request Entity Too Large</body></html>"
    async with (
        MockServer(Reply.html(413, html), Reply(body="<p>not sse</p>", content_type="text/html")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        too_large = await post(client)
        not_sse = await post(client)
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == "text/html"
    assert "request-id" not in too_large.headers
    assert too_large.text == html
    assert not_sse.status_code == 200
    assert not_sse.headers["content-type"] == "text/html"
    assert REQUEST_ID.match(not_sse.headers["request-id"])
    assert not_sse.text == "<p>not sse</p>"


async def test_unknown_paths_get_404_and_keep_the_queue() -> None:
    async with MockServer(Reply.text("queued")) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        missing = await client.get("/v1/models")
        answered = await post(client)
    assert missing.status_code == 404
    assert REQUEST_ID.match(missing.headers["request-id"])
    assert missing.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not Found"},
        "request_id": missing.headers["request-id"],
    }
    assert streamed_text(parse_sse(answered.content)) == "queued"
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models"), ("POST", "/v1/messages")]


# --- which reply answers ----------------------------------------------------------


async def test_queue_then_default_then_builtin_default() -> None:
    async with (
        MockServer(Reply.text("one"), default=Reply.text("fallback")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        texts = [streamed_text(parse_sse((await post(client)).content)) for _ in range(3)]
        server.push(Reply.text("pushed"), Reply.text("pushed again"))
        texts += [streamed_text(parse_sse((await post(client)).content)) for _ in range(3)]
    assert texts == ["one", "fallback", "fallback", "pushed", "pushed again", "fallback"]
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        assert streamed_text(parse_sse((await post(client)).content)) == lorem(2000)


async def test_header_override_wins_and_does_not_consume_the_queue() -> None:
    override = Reply.text("from the header: ünïcode", chunk_size=100).header_value()
    async with MockServer(Reply.text("queued")) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        headed = await post(client, headers={"x-streamkit-mock-reply": override})
        queued = await post(client)
        bad = await post(client, headers={"x-streamkit-mock-reply": '{"status": "nope"}'})
    assert streamed_text(parse_sse(headed.content)) == "from the header: ünïcode"
    assert streamed_text(parse_sse(queued.content)) == "queued"
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert "x-streamkit-mock-reply" in bad.json()["error"]["message"]


async def test_requests_are_recorded() -> None:
    async with MockServer(Reply.text("x")) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        await client.post("/v1/messages?beta=true", json=STREAM, headers={"X-Api-Key": "sk-test"})
    [request] = server.requests
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path, request.query) == ("POST", "/v1/messages", "beta=true")
    assert request.headers["x-api-key"] == "sk-test"
    assert request.headers["content-type"] == "application/json"
    assert request.json == STREAM
    assert json.loads(request.body) == STREAM


# --- continuation -----------------------------------------------------------------


async def test_prefill_gets_the_rest_of_the_answer() -> None:
    async with (
        MockServer(default=Reply.text(ANSWER)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        as_string = await post(
            client, stream_body([{"role": "user", "content": "q"}, {"role": "assistant", "content": "The quick brown"}])
        )
        as_blocks = await post(
            client,
            stream_body(
                [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "The quick"}, {"type": "text", "text": " brown"}],
                    },
                ]
            ),
        )
        whole = await post(client, stream_body([{"role": "assistant", "content": ANSWER}]))
    assert streamed_text(parse_sse(as_string.content)) == " fox jumps over the lazy dog."
    assert streamed_text(parse_sse(as_blocks.content)) == " fox jumps over the lazy dog."
    assert names(parse_sse(whole.content)) == ["message_start", "message_delta", "message_stop"]
    assert parse_sse(whole.content)[1][1]["usage"] == {"output_tokens": 0}


async def test_prefill_walks_over_non_text_blocks() -> None:
    tool = ToolUseBlock("lookup", {"k": 1}, id="toolu_x")
    reply = Reply(blocks=[TextBlock("Hello there. "), tool, TextBlock("Done now.")])
    async with MockServer(default=reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        past_tool = parse_sse(
            (await post(client, stream_body([{"role": "assistant", "content": "Hello there. Done"}]))).content
        )
        before_tool = parse_sse(
            (await post(client, stream_body([{"role": "assistant", "content": "Hello there."}]))).content
        )
    assert [d["content_block"]["type"] for n, d in past_tool if n == "content_block_start"] == ["text"]
    assert streamed_text(past_tool) == " now."
    starts = [(d["index"], d["content_block"]["type"]) for n, d in before_tool if n == "content_block_start"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "text")]
    assert streamed_text(before_tool) == " Done now."


async def test_prefill_refusals() -> None:
    replies = [
        Reply.text(ANSWER),
        Reply.text(ANSWER, reject_prefill=True),
        Reply.text(ANSWER),
    ]
    async with MockServer(*replies) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        trailing = await post(client, stream_body([{"role": "assistant", "content": "The quick "}]))
        rejected = await post(client, stream_body([{"role": "assistant", "content": "The quick"}]))
        mismatch = await post(client, stream_body([{"role": "assistant", "content": "A slow"}]))
    for response in (trailing, rejected, mismatch):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["request_id"] == response.headers["request-id"]
    assert trailing.json()["error"]["message"] == "final assistant content cannot end with trailing whitespace"
    assert rejected.json()["error"]["message"] == (
        "This model does not support assistant message prefill. The conversation must end with a user message."
    )
    assert "does not match" in mismatch.json()["error"]["message"]


async def test_continue_turn_repeats_words() -> None:
    def turn(previous: str) -> dict[str, Any]:
        return stream_body(
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "text", "text": previous}]},
                {"role": "user", "content": "Please continue."},
            ]
        )

    replies = [
        Reply.text(ANSWER, repeat_words=2),
        Reply.text(ANSWER),
        Reply.text(ANSWER, repeat_words=2, reject_prefill=True),
        Reply.text(ANSWER, repeat_words=50),
        Reply.text(ANSWER, repeat_words=2),
        Reply.text(ANSWER, repeat_words=2),
    ]
    async with MockServer(*replies) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        texts = [
            streamed_text(parse_sse((await post(client, body)).content))
            for body in (
                turn("The quick brown"),
                turn("The quick brown"),
                turn("The quick brown fox "),  # trailing whitespace is fine here
                turn("The quick brown"),
                turn("Something else entirely"),  # not a prefix: a new question
                turn(ANSWER),  # the whole answer: the earlier turn was complete
            )
        ]
    assert texts == [
        "quick brown fox jumps over the lazy dog.",
        " fox jumps over the lazy dog.",
        "brown fox jumps over the lazy dog.",
        ANSWER,
        ANSWER,
        ANSWER,
    ]


# --- faults -----------------------------------------------------------------------


def hello_events() -> list[bytes]:
    return [event + b"\n\n" for event in EXPECTED_HELLO.split(b"\n\n")[:-1]]


def hello(fault: Fault) -> Reply:
    return Reply.text("Hello world!", chunk_size=5, message_id="msg_test", fault=fault)


async def test_fault_error_event_then_clean_end() -> None:
    async with (
        MockServer(hello(Fault("error", after=3, error_type="api_error", message="boom"))) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        response = await post(client)
    assert response.headers["connection"] == "close"
    assert response.content == b"".join(hello_events()[:3]) + (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n'
    )


async def test_fault_cut_breaks_the_chunked_body() -> None:
    received = bytearray()
    async with (
        MockServer(hello(Fault("cut", after=2)), hello(Fault("cut", after=2)), Reply.text("ok")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/v1/messages", json=STREAM) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, {"model": "m", "messages": []})  # non-streaming: half the JSON
        retried = await post(client)  # only the first attempts fail
    third = hello_events()[2]
    assert bytes(received) == b"".join(hello_events()[:2]) + third[: len(third) // 2]
    assert streamed_text(parse_sse(retried.content)) == "ok"


@pytest.mark.parametrize("at_byte", [0, 1, 57, 183, 10_000])
async def test_fault_cut_at_a_byte_offset(at_byte: int) -> None:
    """The body is cut exactly there (``after`` is ignored), and the chunked body never ends."""
    received = bytearray()
    whole = b"".join(hello_events())
    async with MockServer(hello(Fault("cut", after=1, at_byte=at_byte)), Reply.text("ok")) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream("POST", "/v1/messages", json=STREAM) as response:
                    assert response.headers["connection"] == "close"
                    async for chunk in response.aiter_raw():
                        received += chunk
            assert streamed_text(parse_sse((await post(client)).content)) == "ok"
        await server.wait_connections(0, timeout=2)
    assert bytes(received) == whole[:at_byte]


async def test_fault_cut_at_a_byte_inside_a_utf8_character() -> None:
    text = "a\u00e9\u4e2d\U0001f600"  # 1-, 2-, 3- and 4-byte characters
    reply = Reply.text(text, chunk_size=10, message_id="msg_test")
    async with MockServer(reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        whole = (await post(client)).content
    emoji = whole.index("\U0001f600".encode())
    received = bytearray()
    async with MockServer(reply.model_copy(update={"fault": Fault("cut", at_byte=emoji + 2)})) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream("POST", "/v1/messages", json=STREAM) as response:
                    async for chunk in response.aiter_raw():
                        received += chunk
    assert bytes(received) == whole[: emoji + 2]
    assert received.endswith(b"\xf0\x9f")  # half of the emoji's four bytes


async def test_fault_cut_at_a_byte_of_a_non_streaming_body() -> None:
    async with MockServer(hello(Fault("cut", at_byte=12))) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await post(client, {"model": "m", "messages": []})


@pytest.mark.parametrize("kind", ["error", "truncate", "malformed", "stall", "hang"])
def test_at_byte_is_only_for_cut(kind: Any) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"at_byte applies to a cut, not to '{kind}'"):
        Fault(kind, at_byte=3)


async def test_fault_truncate_ends_cleanly_and_keeps_the_connection() -> None:
    async with (
        MockServer(hello(Fault("truncate", after=4)), Reply.text("next")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        truncated = await post(client)
        following = await post(client)
        assert server.open_connections == 1
    assert truncated.content == b"".join(hello_events()[:4])
    assert "message_stop" not in names(parse_sse(truncated.content))
    assert streamed_text(parse_sse(following.content)) == "next"


async def test_fault_malformed_event() -> None:
    async with (
        MockServer(hello(Fault("malformed", after=2))) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        response = await post(client)
    assert response.content == b"".join(hello_events()[:2]) + (
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_del\n\n'
    )


async def test_fault_stall_pings_until_the_client_leaves() -> None:
    # A raw socket: breaking out of an httpx stream leaves its generators to the GC on trio.
    body = json.dumps(STREAM).encode()
    request = b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    async with MockServer(hello(Fault("stall", after=1, ping_interval=0.01))) as server:
        async with await anyio.connect_tcp("127.0.0.1", port_of(server)) as stream:
            await stream.send(request)
            received = b""
            with anyio.fail_after(2):
                while received.count(b"event: ping") < 3:
                    received += await stream.receive()
        head, _, chunks = received.partition(b"\r\n\r\n")
        assert b"connection: close" in head
        first = hello_events()[0]
        assert chunks.startswith(b"%x\r\n%b\r\n" % (len(first), first))
        assert chunks.count(b'event: ping\ndata: {"type": "ping"}\n\n') >= 3
        await server.wait_connections(0, timeout=2)


async def test_fault_hang_sends_nothing_until_the_client_leaves() -> None:
    async with MockServer(hello(Fault("hang", after=0)), hello(Fault("hang", after=2))) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=httpx.Timeout(5, read=0.1)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await post(client)
            received = b""
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("POST", "/v1/messages", json=STREAM) as response:
                    async for chunk in response.aiter_raw():
                        received += chunk
        assert received == b"".join(hello_events()[:2])
        await server.wait_connections(0, timeout=2)


async def test_non_streaming_error_fault() -> None:
    async with MockServer(hello(Fault("error"))) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        response = await post(client, {"model": "m", "messages": []})
    assert response.status_code == 529
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}


# --- fixtures ---------------------------------------------------------------------


async def test_fixture_replayed_byte_for_byte() -> None:
    replies = [
        Reply.from_fixture("basic_response.sse"),
        Reply.from_fixture("stream-a-refusal.sse"),
        Reply.from_fixture("tool_use_response"),  # ".sse" may be left out
        Reply.from_fixture("no_such_fixture.sse"),
    ]
    async with (
        MockServer(*replies, fixture_dirs=[FIXTURES]) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        basic, refusal, by_name, missing = [await post(client) for _ in replies]
    raw = (FIXTURES / "basic_response.sse").read_bytes()
    assert not raw.endswith(b"\n\n")
    assert basic.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert basic.content == raw + b"\n\n"  # the only change: a final blank line
    assert names(parse_sse(basic.content))[-1] == "message_stop"
    assert refusal.content == (FIXTURES / "stream-a-refusal.sse").read_bytes()  # already ends in a blank line
    assert by_name.content == (FIXTURES / "tool_use_response.sse").read_bytes() + b"\n\n"
    assert missing.status_code == 500
    message = "mock server: no fixture named 'no_such_fixture.sse'"
    assert missing.json()["error"] == {"type": "api_error", "message": message}


async def test_fixture_with_a_fault() -> None:
    reply = Reply.from_fixture("basic_response", fault=Fault("truncate", after=3))  # shipped with streamkit
    async with MockServer(reply) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        response = await post(client)
    assert names(parse_sse(response.content)) == ["message_start", "content_block_start", "ping"]


# --- HTTP and lifecycle -----------------------------------------------------------


async def test_keep_alive_serves_pipelined_requests_on_one_connection() -> None:
    body = json.dumps(STREAM).encode()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    )
    async with (
        MockServer(Reply.text("first"), Reply.text("second")) as server,
        await anyio.connect_tcp("127.0.0.1", port_of(server)) as stream,
    ):
        await stream.send(request + b"\r\n" + body + request + b"connection: close\r\n\r\n" + body)
        received = b""
        with anyio.fail_after(2):
            while True:
                try:
                    received += await stream.receive()
                except anyio.EndOfStream:
                    break
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert received.count(b"\r\n0\r\n\r\n") == 2
    assert b"connection: keep-alive" in received
    assert b"connection: close" in received
    assert b'"text":"first"' in received
    assert b'"text":"second"' in received
    assert len(server.requests) == 2


async def test_open_connections_returns_to_zero() -> None:
    async with MockServer(default=Reply.text("x")) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            await post(client)
            await post(client)
            assert server.open_connections == 1  # pooled and reused
            async with anyio.create_task_group() as task_group:
                for _ in range(5):
                    task_group.start_soon(post, client)
            assert server.open_connections >= 2
        await server.wait_connections(0, timeout=2)
        assert len(server.requests) == 7


async def test_exit_closes_connections_still_open() -> None:
    failures: list[Exception] = []

    async def call(client: httpx.AsyncClient) -> None:
        try:
            await post(client)
        except httpx.HTTPError as exc:
            failures.append(exc)

    async with httpx.AsyncClient() as client, anyio.create_task_group() as task_group:
        async with MockServer(hello(Fault("hang"))) as server:
            client.base_url = httpx.URL(server.base_url)
            task_group.start_soon(call, client)
            await wait_until(lambda: len(server.requests) == 1)
        assert server.open_connections == 0
    assert len(failures) == 1
    assert isinstance(failures[0], httpx.RemoteProtocolError)


async def test_base_url_and_lifecycle() -> None:
    server = MockServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    async with server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
        with pytest.raises(RuntimeError):
            await server.__aenter__()
    with pytest.raises(RuntimeError):
        _ = server.base_url


# --- models and lorem (no server) -------------------------------------------------


def test_reply_round_trips_through_json() -> None:
    reply = Reply(
        blocks=[
            TextBlock("hé", citations=[{"type": "x"}]),
            ThinkingBlock("hm"),
            ToolUseBlock("t", {"a": [1, 2]}, pieces=3),
            RawBlock({"type": "odd"}),
        ],
        fault=Fault("cut", after=5),
        headers={"retry-after": "1"},
        repeat_words=3,
    )
    value = reply.header_value()
    assert value.isascii()
    assert Reply.model_validate_json(value) == reply
    assert Reply.tool_use("t", {}).stop_reason == "tool_use"
    with pytest.raises(ValueError):
        Reply(staus=500)  # type: ignore[call-arg]


def test_lorem_is_deterministic_prose() -> None:
    text = lorem(5000)
    assert len(text) == 5000
    assert text == lorem(5000)
    assert text != lorem(5000, seed=1)
    assert lorem(100) == text[:100] or len(lorem(100)) == 100
    assert "\n\n" in text
    assert "  " not in text
    assert "." in text and "," in text
    assert not text[-1].isspace()
    assert all(len(lorem(n, seed)) == n for n in (0, 1, 2, 7, 99) for seed in range(5))
    assert re.fullmatch(r"[A-Za-z,.\n ]+", text)


# --- python -m streamkit.testing --------------------------------------------------


def test_module_entry_point_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "streamkit.testing", "--port", "0", "--text-length", "40"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"streamkit mock server listening on (http://127\.0\.0\.1:(\d+))\n", line)
            assert match, line
            assert match.group(2) != "0"
            response = httpx.post(match.group(1) + "/v1/messages", json=STREAM)
            assert streamed_text(parse_sse(response.content)) == lorem(40)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()
