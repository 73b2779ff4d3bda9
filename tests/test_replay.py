"""A resume that regenerates a tool call never makes the UI stream repeat itself.

A reply of a text block, a finished tool call and a second text block is cut at every
event position.  A client tool call (or a server tool call without its result) cannot be
sent back, so the resume regenerates it and the text after it; the part of that text
already handed out is not handed out again.  A server tool call with its result is sent
back in the prefill, so only the rest of the text is generated.  Where the regenerated
text departs from what was shown, a ``Rewind`` says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import client_for

import streamkit
from streamkit.testing import Fault, MockServer, RawBlock, Reply, TextBlock, ToolUseBlock

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
FIRST = "Let me look that up for you. "
SECOND = "The weather in Paris is sunny, 24 \u00b0C, with a light breeze \u2014 a fine day."
INPUT = {"city": "Paris", "units": "celsius"}
CALL_ID = "srvtoolu_01Search"
RESULT = {
    "type": "web_search_tool_result",
    "tool_use_id": CALL_ID,
    "content": [{"type": "web_search_result", "url": "https://weather.example/paris", "title": "Paris"}],
}


def blocks(kind: str, second: str = SECOND) -> list[Any]:
    """The reply: text, a finished tool call (with its result for a server search), text."""
    if kind == "client":
        call: list[Any] = [ToolUseBlock("get_weather", INPUT, id="toolu_01Weather")]
    elif kind == "server":
        call = [ToolUseBlock("web_search", INPUT, id=CALL_ID, server=True)]
    else:
        call = [ToolUseBlock("web_search", INPUT, id=CALL_ID, server=True), RawBlock(RESULT)]
    return [TextBlock(FIRST), *call, TextBlock(second, chunk_size=5)]


@dataclass
class Seen:
    texts: list[str] = field(default_factory=list)
    hooked: list[str] = field(default_factory=list)
    tool_input: list[str] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    rewinds: list[streamkit.Rewind] = field(default_factory=list)


async def watch(
    client: streamkit.AsyncClient, server: MockServer, *replies: Reply
) -> tuple[Seen, streamkit.MessageStream, streamkit.Message]:
    """Stream the replies, collecting what every kind of consumer was handed."""
    server.push(*replies)
    seen = Seen()
    async with client.messages.stream(
        model="m",
        max_tokens=500,
        messages=USER,
        on_text=seen.hooked.append,
        on_tool_input=seen.tool_input.append,
        on_rewind=seen.rewinds.append,
    ) as stream:
        async for event in stream:
            seen.events.append(event)
            if isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.TextDelta):
                seen.texts.append(event.delta.text)
        message = await stream.get_final_message()
    return seen, stream, message


def event_count(kind: str) -> int:
    """Events of the whole reply: message_start, blocks (start, deltas, stop), message_delta, message_stop."""
    deltas = -(-len(FIRST) // 8) + -(-len(json.dumps(INPUT)) // 8) + -(-len(SECOND) // 5)
    return 3 + 2 * len(blocks(kind)) + deltas


def starts_by_index(events: list[Any]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for event in events:
        if isinstance(event, streamkit.ContentBlockStartEvent):
            counts[event.index] = counts.get(event.index, 0) + 1
    return counts


@pytest.mark.parametrize("kind", ["client", "server", "server+result"])
async def test_every_cut_position_hands_out_each_piece_once(kind: str) -> None:
    whole = Reply(blocks=blocks(kind), stop_reason="end_turn")
    async with MockServer() as server, client_for(server, retry_initial_delay=0.0, retry_max_delay=0.0) as client:
        seen, _, expected = await watch(client, server, whole)
        total = len(seen.events)
        assert total == event_count(kind)
        prefilled = 0
        for after in range(1, total - 1):
            cut = Reply(blocks=blocks(kind), fault=Fault("cut", after=after), stop_reason="end_turn")
            seen, stream, message = await watch(client, server, cut, whole)
            where = f"cut after {after} of {total} events"
            assert message.content == expected.content, where
            assert "".join(seen.texts) == FIRST + SECOND, where
            assert "".join(seen.hooked) == FIRST + SECOND, where
            assert "".join(seen.tool_input) == json.dumps(INPUT), where
            assert seen.rewinds == [] and stream.rewinds == [], where
            assert set(starts_by_index(seen.events).values()) == {1}, where
            assert sum(isinstance(e, streamkit.MessageStopEvent) for e in seen.events) == 1, where
            assert len(stream.resumes) + len(stream.retries) == 1, where
            sent = server.requests[-1].json["messages"][-1]
            if kind == "server+result" and stream.resumes and isinstance(sent["content"], list):
                # the search and its result went back with the text: only the rest of the text is generated
                kept = message.content[3].text[: stream.resumes[0].kept_chars - len(FIRST)].rstrip()
                assert sent["content"] == [
                    {"type": "text", "text": FIRST},
                    {"type": "server_tool_use", "id": CALL_ID, "name": "web_search", "input": INPUT},
                    RESULT,
                    {"type": "text", "text": kept},
                ], where
                assert stream.resumes[0].dropped_block is None, where
                prefilled += 1
        if kind == "server+result":
            assert prefilled == -(-len(SECOND) // 5) + 1  # every cut from the second text's first delta on


async def test_a_regeneration_that_departs_from_what_was_shown_rewinds() -> None:
    """The regenerated second text differs after "The weather in Paris is ": a Rewind, never silence."""
    other = "The weather in Paris is rainy and cool today."
    shown_deltas = 6  # "The w", "eather", ... : 30 characters of SECOND were handed out
    after = 1 + 2 + -(-len(FIRST) // 8) + 2 + -(-len(json.dumps(INPUT)) // 8) + 1 + shown_deltas
    cut = Reply(blocks=blocks("client"), fault=Fault("cut", after=after), request_id="req_1")
    again = Reply(blocks=blocks("client", other), request_id="req_2")
    async with MockServer() as server, client_for(server, retry_initial_delay=0.0, retry_max_delay=0.0) as client:
        seen, stream, message = await watch(client, server, cut, again)
    shown = SECOND[: shown_deltas * 5]
    same = len("The weather in Paris is ")
    assert shown == "The weather in Paris is sunny,"
    rewind = streamkit.Rewind(index=2, offset=same, text_offset=len(FIRST) + same)
    assert seen.rewinds == stream.rewinds == [rewind]
    assert stream.resumes[0].rewind == rewind
    assert message.text == FIRST + other
    # what a UI does with the signal: keep text_offset characters, append what follows
    assert "".join(seen.hooked) == FIRST + shown + other[same:]
    assert "".join(seen.texts) == FIRST + shown + other[same:]
    ui = ""
    for event in seen.events:
        if isinstance(event, streamkit.RewindEvent):
            ui = ui[: event.text_offset]
        elif isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.TextDelta):
            ui += event.delta.text
    assert ui == message.text
    assert [type(e).__name__ for e in seen.events].count("RewindEvent") == 1
