"""Real recorded streams, replayed byte for byte through the mock server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import streamkit
from streamkit.testing import MockServer, Reply

pytestmark = pytest.mark.anyio


async def replay(path: Path) -> tuple[streamkit.Message, list[streamkit.StreamEvent]]:
    async with MockServer(Reply.from_fixture(path)) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url) as client:
            async with client.messages.stream(model="m", max_tokens=9, messages=[]) as stream:
                events = [event async for event in stream]
                return await stream.get_final_message(), events


async def test_basic_response(fixtures_dir: Path) -> None:
    message, events = await replay(fixtures_dir / "basic_response.sse")
    assert message.id == "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK" and message.model == "claude-3-opus-latest"
    assert message.content == [streamkit.TextBlock(text="Hello there!")]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 11, 6)
    assert sum(isinstance(event, streamkit.PingEvent) for event in events) == 1


async def test_tool_use_response(fixtures_dir: Path) -> None:
    message, _ = await replay(fixtures_dir / "tool_use_response.sse")
    text, tool = message.content
    assert text == streamkit.TextBlock(text="I'll check the current weather in Paris for you.")
    assert isinstance(tool, streamkit.ToolUseBlock)
    assert (tool.id, tool.name, tool.input) == ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})
    assert tool.model_extra == {"caller": {"type": "direct"}}
    assert tool.input_json == '{"location": "Paris"}'
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 65


async def test_incomplete_partial_json_response(fixtures_dir: Path) -> None:
    message, _ = await replay(fixtures_dir / "incomplete_partial_json_response.sse")
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 124
    assert message.usage.service_tier == "standard" and message.usage.cache_read_input_tokens == 0
    tool = message.content[1]
    assert isinstance(tool, streamkit.ToolUseBlock)
    assert tool.input == {
        "filename": "taxes.txt",
        "lines_of_text": ["# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s", "", "## INTRODUCTION", ""],
    }
    assert tool.input_json.endswith('"## INTRODUCTION",\n"",\n"Filing taxes')
    assert message.text == (
        "I'll create a comprehensive tax guide for someone with multiple W2s and save it in a file called "
        "taxes.txt. Let me do that for you now."
    )


async def test_refusal_response(fixtures_dir: Path) -> None:
    message, _ = await replay(fixtures_dir / "refusal_response.sse")
    assert message.stop_reason == "refusal" and message.text == ""
    explanation = "This request was refused due to policy."
    assert message.model_extra == {"stop_details": {"type": "refusal", "category": "cyber", "explanation": explanation}}


async def test_compaction_response(fixtures_dir: Path) -> None:
    message, events = await replay(fixtures_dir / "compaction_response.sse")
    compaction, text = message.content
    assert isinstance(compaction, streamkit.UnknownBlock)
    assert compaction.model_dump() == {
        "type": "compaction",
        "content": "Earlier conversation summarized.",
        "encrypted_content": "EpwBCioIDxgCEAEYASJALd_opaque_compaction_payload",
    }
    assert text == streamkit.TextBlock(text="Hello there!")
    deltas = [e.delta for e in events if isinstance(e, streamkit.ContentBlockDeltaEvent)]
    assert isinstance(deltas[0], streamkit.UnknownDelta) and deltas[0].type == "compaction_delta"


@pytest.mark.parametrize("name", ["fallback_response.sse", "fallback_credit_response.sse"])
async def test_fallback_responses(fixtures_dir: Path, name: str) -> None:
    message, _ = await replay(fixtures_dir / name)
    assert message.text == "Hello there!" and message.stop_reason == "end_turn"
    if name == "fallback_response.sse":
        fallback = message.content[0]
        assert isinstance(fallback, streamkit.UnknownBlock) and fallback.type == "fallback"
        assert fallback.model_extra == {
            "from": {"model": "claude-opus-4-7"},
            "to": {"model": "claude-sonnet-4-5"},
            "trigger": {"type": "refusal", "category": None},
        }
    else:
        assert message.usage.model_extra == {"fallback_credit": {"status": {"type": "redeemed"}}}


async def test_thinking_with_signature(fixtures_dir: Path) -> None:
    message, _ = await replay(fixtures_dir / "stream-a-refusal.sse")
    thinking, text = message.content
    assert isinstance(thinking, streamkit.ThinkingBlock)
    assert thinking.thinking.startswith("Simple educational question") and thinking.thinking.endswith("politely.")
    assert thinking.signature == "c3ludGhldGljLXNpZ25hdHVyZS1maXh0dXJlLWEtbm90LWEtcmVhbC1zaWduYXR1cmU="
    assert text == streamkit.TextBlock(text="Hi")
    assert message.stop_reason == "refusal" and message.usage.output_tokens == 106


async def test_server_tool_use_and_its_result(fixtures_dir: Path) -> None:
    message, _ = await replay(fixtures_dir / "stream-a-toolrefusal.sse")
    search, result, text = message.content
    assert isinstance(search, streamkit.ServerToolUseBlock)
    assert search.input == {"query": "solar eclipse viewing safety news 2026"}
    assert isinstance(result, streamkit.UnknownBlock) and result.type == "web_search_tool_result"
    assert [item["title"] for item in result.model_extra["content"]] == [  # type: ignore[index]
        "How to Watch a Solar Eclipse Safely | Example Observatory",
        "Upcoming Solar Eclipses in 2026 | Example Astronomy News",
    ]
    assert text == streamkit.TextBlock(text="Here's a summary of this year's solar eclipses and how")


async def test_fallback_continuation_text(fixtures_dir: Path) -> None:
    path = fixtures_dir / "stream-b-fallback.sse"
    message, _ = await replay(path)
    lines = [json.loads(line[6:]) for line in path.read_text().splitlines() if line.startswith("data: ")]
    expected = "".join(d["delta"]["text"] for d in lines if d["type"] == "content_block_delta")
    assert message.text == expected and len(expected) == 1312
    assert message.text.startswith(" there! Happy to explain.\n\n**Solar eclipses** happen")
    assert message.usage.output_tokens == 547
