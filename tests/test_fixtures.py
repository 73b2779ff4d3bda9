"""Recorded API streams replayed byte for byte by the mock server; the exact Message rebuilt.

Each transcript comes from the official SDK's test fixtures (see fixtures/recorded/README.md).
The expected values below are read off the transcripts by hand; the generic tests at the
end compare every transcript with an independent minimal parse of the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import streamkit
from streamkit.testing import MockServer, Reply

pytestmark = pytest.mark.anyio

REQUEST: dict[str, Any] = {"model": "claude-mock-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
NAMES = sorted(path.name for path in (Path(__file__).parent / "fixtures" / "recorded").glob("*.sse"))
EVENT_CLASSES: dict[str, type] = {
    "message_start": streamkit.MessageStartEvent,
    "content_block_start": streamkit.ContentBlockStartEvent,
    "content_block_delta": streamkit.ContentBlockDeltaEvent,
    "content_block_stop": streamkit.ContentBlockStopEvent,
    "message_delta": streamkit.MessageDeltaEvent,
    "message_stop": streamkit.MessageStopEvent,
    "ping": streamkit.PingEvent,
}


@dataclass
class Replay:
    events: list[streamkit.StreamEvent]
    texts: list[str]
    message: streamkit.Message
    request_id: str | None


async def replay(path: Path) -> Replay:
    """Stream a transcript twice: once through the iterator, once through text_stream."""
    first = Reply.from_fixture(path.name, request_id="req_FIXTURE0123456789abcdef")
    async with MockServer(first, Reply.from_fixture(path.name), fixture_dirs=[path.parent]) as server:
        async with streamkit.AsyncClient(
            api_key="test-key", base_url=server.base_url, max_retries=0, resume=False
        ) as client:
            async with client.messages.stream(**REQUEST) as stream:
                events = [event async for event in stream]
                message = await stream.get_final_message()
                request_id = stream.request_id
            async with client.messages.stream(**REQUEST) as stream:
                texts = [piece async for piece in stream.text_stream]
                assert await stream.get_final_message() == message
    return Replay(events, texts, message, request_id)


def transcript(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A minimal independent parse: blocks split at blank lines, one event and one data line each."""
    events = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.strip("\n").split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def tool(block_type: type[streamkit.ToolUseBlock | streamkit.ServerToolUseBlock], raw: str, **fields: Any) -> Any:
    block = block_type(**fields)
    block._partial_json = raw
    return block


# -- one test per transcript -------------------------------------------------------


async def test_basic_response(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "basic_response.sse")
    assert result.message == streamkit.Message(
        id="msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",
        model="claude-3-opus-latest",
        content=[streamkit.TextBlock(text="Hello there!")],
        stop_reason="end_turn",
        usage=streamkit.Usage(input_tokens=11, output_tokens=6),
    )
    assert result.message.text == "Hello there!"
    assert result.message.usage.output_tokens == 6
    assert result.texts == ["Hello", " there", "!"]
    assert [type(event) for event in result.events] == [
        streamkit.MessageStartEvent,
        streamkit.ContentBlockStartEvent,
        streamkit.PingEvent,  # inside the block, yielded all the same
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockStopEvent,
        streamkit.MessageDeltaEvent,
        streamkit.MessageStopEvent,
    ]
    assert result.request_id == "req_FIXTURE0123456789abcdef"


async def test_tool_use_response(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "tool_use_response.sse")
    message = result.message
    expected_tool = tool(
        streamkit.ToolUseBlock,
        '{"location": "Paris"}',
        id="toolu_01NRLabsLyVHZPKxbKvkfSMn",
        name="get_weather",
        input={"location": "Paris"},
        caller={"type": "direct"},
    )
    assert message == streamkit.Message(
        id="msg_019Q1hrJbZG26Fb9BQhrkHEr",
        model="claude-sonnet-4-20250514",
        content=[streamkit.TextBlock(text="I'll check the current weather in Paris for you."), expected_tool],
        stop_reason="tool_use",
        usage=streamkit.Usage(
            input_tokens=377,
            output_tokens=65,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
            service_tier="standard",
        ),
    )
    block = message.content[1]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert block.input == {"location": "Paris"}
    assert block.model_extra == {"caller": {"type": "direct"}}
    assert block.input_json == '{"location": "Paris"}'
    tool_deltas = [
        event.delta.partial_json
        for event in result.events
        if isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.InputJSONDelta)
    ]
    assert tool_deltas == ["", '{"locati', 'on": "P', "ar", 'is"}']
    assert result.texts == ["I", "'ll check the current weather in Paris for you."]


async def test_incomplete_partial_json_response(fixtures_dir: Path) -> None:
    """Cut by max_tokens mid tool input: the input as far as it parses, the raw text kept whole."""
    result = await replay(fixtures_dir / "incomplete_partial_json_response.sse")
    message = result.message
    assert message.stop_reason == "max_tokens"
    assert message.text == (
        "I'll create a comprehensive tax guide for someone with multiple W2s and save it in a file "
        "called taxes.txt. Let me do that for you now."
    )
    raw = (
        '{"filename": "taxes.txt", "lines_of_text": [\n'
        '"# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s",\n"",\n"## INTRODUCTION",\n"",'
        '\n"Filing taxes'
    )
    block = message.content[1]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert (block.id, block.name) == ("toolu_01EKqbqmZrGRXy18eN7m9kvY", "make_file")
    assert block.input == {
        "filename": "taxes.txt",
        "lines_of_text": ["# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s", "", "## INTRODUCTION", ""],
    }
    assert block.input_json == raw
    assert len(message.content) == 2
    assert message.usage == streamkit.Usage(
        input_tokens=450,
        output_tokens=124,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        service_tier="standard",
    )
    assert (message.id, message.model) == ("msg_01UdjYBBipA9omjYhicnevgq", "claude-3-7-sonnet-20250219")
    # The tool block never got its content_block_stop.
    assert [type(event) for event in result.events][-4:] == [
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.MessageDeltaEvent,
        streamkit.MessageStopEvent,
    ]


async def test_refusal_response(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "refusal_response.sse")
    message = result.message
    assert message.stop_reason == "refusal"
    assert message.model_extra == {
        "stop_details": {
            "type": "refusal",
            "category": "cyber",
            "explanation": "This request was refused due to policy.",
        }
    }
    assert message.content == [streamkit.TextBlock(text="")]
    assert message.usage == streamkit.Usage(input_tokens=20, output_tokens=0)
    assert result.texts == []
    message_delta = [event for event in result.events if isinstance(event, streamkit.MessageDeltaEvent)]
    assert len(message_delta) == 1
    assert message_delta[0].delta.stop_reason == "refusal"
    assert message_delta[0].delta.model_extra == {
        "stop_details": {
            "type": "refusal",
            "category": "cyber",
            "explanation": "This request was refused due to policy.",
        }
    }


async def test_compaction_response(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "compaction_response.sse")
    message = result.message
    compaction = message.content[0]
    assert isinstance(compaction, streamkit.UnknownBlock)
    assert compaction.model_dump() == {
        "type": "compaction",
        "content": "Earlier conversation summarized.",
        "encrypted_content": "EpwBCioIDxgCEAEYASJALd_opaque_compaction_payload",
    }
    assert message.content[1] == streamkit.TextBlock(text="Hello there!")
    assert message.text == "Hello there!"
    assert (message.stop_reason, message.usage) == ("end_turn", streamkit.Usage(input_tokens=30, output_tokens=8))
    start = result.events[1]
    assert isinstance(start, streamkit.ContentBlockStartEvent)
    assert isinstance(start.content_block, streamkit.UnknownBlock)
    assert start.content_block.model_dump() == {"type": "compaction", "content": None, "encrypted_content": None}
    assert isinstance(result.events[2], streamkit.PingEvent)
    delta = result.events[3]
    assert isinstance(delta, streamkit.ContentBlockDeltaEvent)
    assert delta.index == 0
    assert isinstance(delta.delta, streamkit.UnknownDelta)
    assert delta.delta.model_dump() == {
        "type": "compaction_delta",
        "content": "Earlier conversation summarized.",
        "encrypted_content": "EpwBCioIDxgCEAEYASJALd_opaque_compaction_payload",
    }


async def test_fallback_response(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "fallback_response.sse")
    message = result.message
    fallback = message.content[0]
    assert isinstance(fallback, streamkit.UnknownBlock)
    assert fallback.model_dump() == {
        "type": "fallback",
        "from": {"model": "claude-opus-4-7"},
        "to": {"model": "claude-sonnet-4-5"},
        "trigger": {"type": "refusal", "category": None},
    }
    assert message.content[1:] == [streamkit.TextBlock(text="Hello there!")]
    # message_start said claude-opus-4-7; the fallback block says who wrote the reply.
    assert (message.id, message.model, message.stop_reason) == (
        "msg_01FallbackModelRelabel000001",
        "claude-sonnet-4-5",
        "end_turn",
    )
    assert result.texts == ["Hello there!"]


async def test_fallback_credit_response(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "fallback_credit_response.sse")
    message = result.message
    assert message.text == "Hello there!"
    assert message.model == "claude-sonnet-4-5"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (25, 8)
    assert message.usage.model_extra == {"fallback_credit": {"status": {"type": "redeemed"}}}


async def test_stream_a_refusal_thinking_and_signature(fixtures_dir: Path) -> None:
    result = await replay(fixtures_dir / "stream-a-refusal.sse")
    message = result.message
    assert message.content == [
        streamkit.ThinkingBlock(
            thinking=(
                "Simple educational question about what a solar eclipse is. This is benign general knowledge"
                ' \u2014 definitions are fine. Also the user called me "claudius" \u2014 I\'m Claude. Minor'
                " correction or just roll with it politely."
            ),
            signature="c3ludGhldGljLXNpZ25hdHVyZS1maXh0dXJlLWEtbm90LWEtcmVhbC1zaWduYXR1cmU=",
        ),
        streamkit.TextBlock(text="Hi"),
    ]
    assert message.stop_reason == "refusal"
    assert message.model_extra == {
        "stop_details": {
            "type": "refusal",
            "category": None,
            "explanation": None,
            "fallback_credit_token": "tok_synthetic_fixture_a",
            "fallback_has_prefill_claim": True,
        }
    }
    assert (message.usage.input_tokens, message.usage.output_tokens) == (28, 106)
    assert message.usage.model_extra is not None
    assert message.usage.model_extra["output_tokens_details"] == {"thinking_tokens": 67}
    assert message.usage.model_extra["inference_geo"] == "global"
    assert result.texts == ["Hi"]  # thinking never reaches text_stream
    signature = [
        event.delta
        for event in result.events
        if isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.SignatureDelta)
    ]
    assert signature == [
        streamkit.SignatureDelta(signature="c3ludGhldGljLXNpZ25hdHVyZS1maXh0dXJlLWEtbm90LWEtcmVhbC1zaWduYXR1cmU=")
    ]


async def test_stream_a_toolrefusal_server_tool_and_result(fixtures_dir: Path) -> None:
    path = fixtures_dir / "stream-a-toolrefusal.sse"
    result = await replay(path)
    message = result.message
    raw = '{"query": "solar eclipse viewing safety news 2026"}'
    assert message.content[0] == tool(
        streamkit.ServerToolUseBlock,
        raw,
        id="srvtoolu_fixture_a_0001",
        name="web_search",
        input={"query": "solar eclipse viewing safety news 2026"},
    )
    search = message.content[1]
    assert isinstance(search, streamkit.UnknownBlock)
    recorded = next(
        data["content_block"]
        for name, data in transcript(path)
        if name == "content_block_start" and data["content_block"]["type"] == "web_search_tool_result"
    )
    assert search.model_dump() == recorded
    assert search.model_dump()["tool_use_id"] == "srvtoolu_fixture_a_0001"
    assert len(search.model_dump()["content"]) == 2
    assert message.content[2] == streamkit.TextBlock(text="Here's a summary of this year's solar eclipses and how")
    assert message.stop_reason == "refusal"
    assert result.texts == ["Here's a summary of this year's solar eclipses and how"]


async def test_stream_b_fallback_text(fixtures_dir: Path) -> None:
    path = fixtures_dir / "stream-b-fallback.sse"
    result = await replay(path)
    message = result.message
    expected = "".join(data["delta"]["text"] for name, data in transcript(path) if name == "content_block_delta")
    assert message.text == expected
    assert message.text.startswith(" there! Happy to explain.\n\n**Solar eclipses** happen when the Moon")
    assert message.text.endswith("Just let me know what's sparking your interest!")
    assert len(result.texts) == 15
    assert (message.id, message.model, message.stop_reason) == ("msg_fixture_b_0001", "claude-opus-4-8", "end_turn")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (31, 547)
    assert message.model_extra == {"stop_details": None}


# -- every transcript against an independent parse ---------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_every_event_reaches_the_iterator(fixtures_dir: Path, name: str) -> None:
    path = fixtures_dir / name
    recorded = transcript(path)
    result = await replay(path)
    assert [type(event) for event in result.events] == [EVENT_CLASSES[kind] for kind, _ in recorded]
    assert [event.type for event in result.events] == [data["type"] for _, data in recorded]
    assert result.texts == [
        data["delta"]["text"]
        for kind, data in recorded
        if kind == "content_block_delta" and data["delta"]["type"] == "text_delta"
    ]
    # Every typed event round-trips to what was sent, unknown fields included.
    for event, (_, data) in zip(result.events, recorded, strict=True):
        dumped = event.model_dump(exclude_unset=True)
        assert dumped == data


@pytest.mark.parametrize("name", NAMES)
async def test_final_message_matches_the_transcript(fixtures_dir: Path, name: str) -> None:
    recorded = transcript(fixtures_dir / name)
    result = await replay(fixtures_dir / name)
    start = recorded[0][1]["message"]
    message = result.message
    fallbacks = [
        data["content_block"]["to"]["model"]
        for kind, data in recorded
        if kind == "content_block_start" and data["content_block"]["type"] == "fallback"
    ]
    model = fallbacks[-1] if fallbacks else start["model"]  # the model that wrote the reply
    assert (message.id, message.model, message.role) == (start["id"], model, "assistant")
    last_delta = [data for kind, data in recorded if kind == "message_delta"][-1]
    assert message.stop_reason == last_delta["delta"]["stop_reason"]
    assert message.usage.output_tokens == last_delta["usage"]["output_tokens"]
    starts = [data["content_block"] for kind, data in recorded if kind == "content_block_start"]
    assert [block.type for block in message.content] == [block["type"] for block in starts]
