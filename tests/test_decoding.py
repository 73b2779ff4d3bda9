"""The sans-I/O pieces alone: SSE framing, typed events, and the accumulator."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

import streamkit
from streamkit import MessageAccumulator, SSEDecoder, parse_event

EVENTS = (
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b": a comment\nid: 7\nretry: 100\nevent: ping\ndata: {}\n\n"
    b"data: first line\ndata: second line\n\n"
    b"event: lonely\n\n"
    b"event: content_block_delta\ndata:no-space\n\n"
)
DECODED = [
    ("message_start", b'{"type":"message_start"}'),
    ("ping", b"{}"),
    ("message", b"first line\nsecond line"),
    ("content_block_delta", b"no-space"),
]


def decode(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_endings(newline: bytes) -> None:
    assert decode([EVENTS.replace(b"\n", newline)]) == DECODED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_at_every_byte(newline: bytes) -> None:
    raw = EVENTS.replace(b"\n", newline)
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == DECODED
    for cut in range(len(raw)):
        assert decode([raw[:cut], raw[cut:]]) == DECODED, cut


def test_bom_and_buffered_tail() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb\xbfevent: ping\ndata: {}\n\nevent: message_stop\ndata: {") == [("ping", b"{}")]
    assert decoder.buffered == b"event: message_stop\ndata: {"
    assert decoder.feed(b"}\n\n") == [("message_stop", b"{}")]
    assert decoder.buffered == b""


def test_parse_event_types() -> None:
    delta = parse_event({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "hi"}})
    assert isinstance(delta, streamkit.ContentBlockDeltaEvent) and delta.index == 2
    assert isinstance(delta.delta, streamkit.TextDelta) and delta.delta.text == "hi"
    odd = parse_event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "compaction_delta", "content": "x"}}
    )
    assert isinstance(odd, streamkit.ContentBlockDeltaEvent) and isinstance(odd.delta, streamkit.UnknownDelta)
    assert odd.delta.type == "compaction_delta" and odd.delta.model_extra == {"content": "x"}
    start = parse_event({"type": "content_block_start", "index": 0, "content_block": {"type": "fallback", "to": 1}})
    assert isinstance(start, streamkit.ContentBlockStartEvent)
    assert isinstance(start.content_block, streamkit.UnknownBlock) and start.content_block.model_extra == {"to": 1}
    new = parse_event({"type": "brand_new_event", "payload": [1, 2]})
    assert new == streamkit.UnknownEvent(type="brand_new_event", data={"type": "brand_new_event", "payload": [1, 2]})
    assert parse_event({"type": "ping"}) == streamkit.PingEvent()
    error = parse_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert isinstance(error, streamkit.ErrorEvent) and error.error.type == "overloaded_error"


def start(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": []}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {**message, "usage": {"input_tokens": 5}}}]
    for index, block in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
    return events


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def feed(*events: dict[str, Any]) -> MessageAccumulator:
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.feed(event)
    return accumulator


def test_text_citations_thinking_and_usage() -> None:
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0}
    accumulator = feed(
        *start({"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""}),
        delta(0, type="thinking_delta", thinking="Let me "),
        delta(0, type="thinking_delta", thinking="think."),
        delta(0, type="signature_delta", signature="sig=="),
        delta(1, type="citations_delta", citation=citation),
        delta(1, type="text_delta", text="Hello"),
        delta(1, type="text_delta", text=" world"),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 12, "cache_read_input_tokens": None}},
        {"type": "message_stop"},
    )
    message = accumulator.message
    assert message is not None and accumulator.finished
    assert message.content == [
        streamkit.ThinkingBlock(thinking="Let me think.", signature="sig=="),
        streamkit.TextBlock(text="Hello world", citations=[citation]),
    ]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 5, 12)
    assert message.usage.cache_read_input_tokens is None


def test_tool_json_in_awkward_pieces() -> None:
    document = {"city": "Zürich é", "days": [1, 2.5, -3e2], "ok": True, "none": None}
    raw = json.dumps(document)  # ensure_ascii: "\u00fc" escapes
    cut = raw.index("\\u00fc") + 4  # split inside the escape
    pieces = ["", raw[:cut], raw[cut:-5], "", raw[-5:]]
    events = [*start({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}})]
    accumulator = feed(*events, delta(0, type="input_json_delta", partial_json=pieces[0]))
    accumulator.feed(delta(0, type="input_json_delta", partial_json=pieces[1]))
    during = accumulator.message
    assert during is not None and isinstance(during.content[0], streamkit.ToolUseBlock)
    assert during.content[0].input == {}  # "city" is still an unfinished string
    for piece in pieces[2:]:
        accumulator.feed(delta(0, type="input_json_delta", partial_json=piece))
    accumulator.feed({"type": "content_block_stop", "index": 0})
    final = accumulator.message
    assert final is not None and isinstance(final.content[0], streamkit.ToolUseBlock)
    assert final.content[0].input == document and final.content[0].input_json == raw


def test_unknown_blocks_and_deltas_are_kept() -> None:
    accumulator = feed(
        *start({"type": "compaction", "content": None, "encrypted_content": None}),
        delta(0, type="compaction_delta", content="Summary.", encrypted_content="Ep"),
        delta(0, type="compaction_delta", encrypted_content="wB"),
    )
    message = accumulator.message
    assert message is not None
    [block] = message.content
    assert isinstance(block, streamkit.UnknownBlock)
    assert block.model_dump() == {"type": "compaction", "content": "Summary.", "encrypted_content": "EpwB"}


def test_bad_events_raise_protocol_errors() -> None:
    accumulator = feed(*start({"type": "text", "text": ""}))
    with pytest.raises(streamkit.ProtocolError, match="content block 3 was never started"):
        accumulator.feed(delta(3, type="text_delta", text="x"))
    tool = feed(*start({"type": "tool_use", "id": "t", "name": "f", "input": {}}))
    tool.feed(delta(0, type="input_json_delta", partial_json='{"a": tru'))
    with pytest.raises(streamkit.ProtocolError, match="tool input of block 0 is not valid JSON") as caught:
        tool.feed({"type": "content_block_stop", "index": 0})
    assert caught.value.data == b'{"a": tru'
    with pytest.raises(streamkit.ProtocolError, match="cannot apply message_delta event"):
        MessageAccumulator().feed({"type": "message_delta", "delta": {}})


def test_typed_events_feed_too() -> None:
    accumulator = MessageAccumulator()
    for event in [*start({"type": "text", "text": ""}), delta(0, type="text_delta", text="typed")]:
        accumulator.feed(parse_event(event))
    assert accumulator.message is not None and accumulator.message.text == "typed"


@pytest.mark.parametrize("kind", ["text", "tool"])
def test_fifty_thousand_deltas_are_linear(kind: str) -> None:
    """A quadratic accumulator takes minutes here; a linear one a fraction of a second."""
    if kind == "text":
        events = start({"type": "text", "text": ""}) + [delta(0, type="text_delta", text="word ")] * 50_000
    else:
        raw = json.dumps({"values": list(range(20_000))})
        bounds = [len(raw) * i // 50_000 for i in range(50_001)]
        pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
        events = start({"type": "tool_use", "id": "t", "name": "f", "input": {}})
        events += [delta(0, type="input_json_delta", partial_json=piece) for piece in pieces]
    events.append({"type": "content_block_stop", "index": 0})
    began = time.perf_counter()
    accumulator = feed(*events)
    message = accumulator.message
    elapsed = time.perf_counter() - began
    print(f"\n{kind}: {len(events) - 3} deltas in {elapsed * 1000:.1f} ms")
    assert message is not None
    block = message.content[0]
    if isinstance(block, streamkit.TextBlock):
        assert block.text == "word " * 50_000
    else:
        assert isinstance(block, streamkit.ToolUseBlock) and block.input == {"values": list(range(20_000))}
    assert elapsed < 10.0
