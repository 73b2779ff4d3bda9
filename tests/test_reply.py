"""The reply machine without sockets: bytes in, events, restart plans and failures out.

Every test drives ``ReplyMachine`` the way a stream shell does (``start``, ``feed``,
``feed_eof``, ``fail``, ``next_event``), with SSE bytes built here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

import streamkit
from streamkit import ResumeInfo, RetryPolicy
from streamkit._reply import END, NEED_DATA, ReplyMachine, ReplyState, Restart
from streamkit._resume import CONTINUE_PROMPT, PREFILL_REJECTED, ResumePlanner

USER = [{"role": "user", "content": "Tell me about Paris."}]
BODY: dict[str, Any] = {"model": "m", "max_tokens": 500, "messages": USER, "stream": True}
THINKING_BODY = {**BODY, "thinking": {"type": "enabled", "budget_tokens": 1024}}
TEXT = "Paris is the capital of France. It sits on the Seine, and its museums are famous."
FIRST, SECOND = "Let me look that up. ", "Paris is sunny today \u2014 24 \u00b0C."
INPUT = {"city": "Paris", "units": "celsius"}


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def text_block(text: str, size: int = 6) -> list[dict[str, Any]]:
    deltas = [{"type": "text_delta", "text": piece} for piece in pieces(text, size)]
    return [{"type": "text", "text": ""}, *deltas]


def thinking_block(thinking: str) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = [{"type": "thinking_delta", "thinking": piece} for piece in pieces(thinking, 5)]
    signature = {"type": "signature_delta", "signature": "s"}
    return [{"type": "thinking", "thinking": "", "signature": ""}, *deltas, signature]


def tool_block(name: str = "get_weather", tool_id: str = "toolu_1") -> list[dict[str, Any]]:
    deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces(json.dumps(INPUT), 7)]
    return [{"type": "tool_use", "id": tool_id, "name": name, "input": {}}, *deltas]


def reply(*blocks: list[dict[str, Any]], stop_reason: str = "end_turn") -> list[dict[str, Any]]:
    """The events of a whole reply: each block is its content_block then its deltas."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m",
                        "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1}},
        }
    ]
    for index, (start, *deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 20}})
    events.append({"type": "message_stop"})
    return events


def sse(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def machine(body: dict[str, Any] = BODY, resume: Any = "auto", max_resumes: int = 3) -> ReplyMachine:
    planner = ResumePlanner(resume, max_resumes, RetryPolicy(2, 0.0, 0.0), set())
    return ReplyMachine(dict(body), planner, streamkit.MessageAccumulator())


@dataclass
class Drive:
    """What a shell would have handed out, and what the machine asked of it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    resumes: list[ResumeInfo | None] = field(default_factory=list)
    rewinds: list[streamkit.Rewind] = field(default_factory=list)

    def texts(self, delta_type: str = "text_delta", key: str = "text") -> str:
        deltas = [e["delta"] for e in self.events if e["type"] == "content_block_delta"]
        return "".join(delta[key] for delta in deltas if delta["type"] == delta_type)


def run(m: ReplyMachine, *attempts: list[bytes], drive: Drive | None = None) -> Drive:
    """Feed each attempt's chunks then its end; the next attempt answers the machine's Restart."""
    drive = drive or Drive()
    queued = [list(chunks) for chunks in attempts]
    chunks = queued.pop(0)
    m.start("req_1")
    while True:
        item = m.next_event()
        if item is NEED_DATA:
            if chunks:
                m.feed(chunks.pop(0))
            else:
                m.feed_eof()
        elif item is END:
            return drive
        elif isinstance(item, Restart):
            drive.restarts.append(item)
            chunks = queued.pop(0)
            drive.resumes.append(m.start(f"req_{len(drive.restarts) + 1}"))
        elif isinstance(item, streamkit.Rewind):
            drive.rewinds.append(item)
        else:
            drive.events.append(item)


def test_a_first_attempt_in_one_chunk_or_byte_by_byte() -> None:
    wire = sse(reply(text_block(TEXT)))
    whole, bytewise = machine(), machine()
    assert whole.state is ReplyState.WAITING
    run(whole, [wire])
    run(bytewise, [wire[i : i + 1] for i in range(len(wire))])
    assert whole.state is bytewise.state is ReplyState.FINISHED
    assert whole.final_message() == bytewise.final_message()
    assert whole.final_message().text == TEXT
    assert whole.request_id == "req_1"
    assert whole.next_event() is END


def test_states_follow_the_body() -> None:
    m = machine()
    m.start("req_1")
    assert m.state is ReplyState.STREAMING
    assert m.next_event() is NEED_DATA
    events = reply(text_block("Hi"))
    assert m.feed(sse(events[:-1])) is True
    assert m.feed(b"event: ping\ndata: {\"type\": \"ping\"}\n\n") is False  # pings are no progress
    m.feed(sse(events[-1:]))
    assert m.state is ReplyState.DRAINING
    m.fail(streamkit.ConnectionLostError("reset while draining"))  # trouble after message_stop loses nothing
    assert m.state is ReplyState.FINISHED
    handed = []
    while (item := m.next_event()) is not END:
        handed.append(item)
    assert [e["type"] for e in handed][-2:] == ["ping", "message_stop"]
    assert m.final_message().text == "Hi"


def test_a_prefill_resume_continues_the_cut_text() -> None:
    events = reply(text_block(TEXT))
    cut = sse(events[:6])  # message_start, block start, four deltas
    kept = TEXT[:24]
    m = machine()
    rest = [{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    rest += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT[23:]}}]
    continuation = reply()[:1] + rest + reply()[-2:]
    continuation.insert(-2, {"type": "content_block_stop", "index": 0})
    drive = run(m, [cut], [sse(continuation)])
    [restart] = drive.restarts
    assert (restart.strategy, restart.delay, type(restart.cause)) == ("prefill", 0.0, streamkit.IncompleteStreamError)
    assert restart.body["messages"] == [*USER, {"role": "assistant", "content": kept.rstrip()}]
    [info] = drive.resumes
    assert info == ResumeInfo(1, restart.cause, "prefill", "req_1", "req_2", len(kept), None)
    assert m.resumes == [info]
    assert drive.texts() == TEXT
    assert m.final_message().text == TEXT
    assert m.final_message().usage.output_tokens == 21  # the cut attempt's 1 and the continuation's 20


def test_a_continue_resume_with_thinking_leaves_the_second_thinking_out() -> None:
    events = reply(thinking_block("Think about Paris."), text_block(TEXT))
    n_thinking = len(pieces("Think about Paris.", 5)) + 3  # start, deltas, signature, stop
    cut = sse(events[: 1 + n_thinking + 5])  # the text block's start and four deltas
    kept = TEXT[:24]
    again = reply(thinking_block("Think again."), text_block(TEXT[24:]))
    drive = run(m := machine(THINKING_BODY), [cut], [sse(again)])
    [restart] = drive.restarts
    assert restart.strategy == "continue"
    assert restart.body["messages"][-2:] == [
        {"role": "assistant", "content": kept.rstrip()},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    message = m.final_message()
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Think about Paris."  # type: ignore[union-attr]
    assert message.text == TEXT
    assert drive.texts("thinking_delta", "thinking") == "Think about Paris."


def test_a_dropped_tool_block_is_regenerated_and_its_input_handed_out_once() -> None:
    events = reply(text_block(FIRST), tool_block(), stop_reason="tool_use")
    tool_start = 1 + 2 + len(pieces(FIRST, 6))
    cut = sse(events[: tool_start + 3])  # the tool block's start and two input pieces
    again = reply(tool_block(tool_id="toolu_2"), stop_reason="tool_use")
    drive = run(m := machine(), [cut], [sse(again)])
    [info] = drive.resumes
    assert info is not None and info.dropped_block == "tool_use"
    assert drive.texts("input_json_delta", "partial_json") == json.dumps(INPUT)
    assert [e["index"] for e in drive.events if e["type"] == "content_block_start"] == [0, 1]
    message = m.final_message()
    expected = {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": INPUT}
    assert message.content[1].model_dump() == expected
    assert drive.rewinds == []


def continuation_for(restart: Restart, whole: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """What the API sends for ``restart``: the reply after the prefill (or all of it, for a retry)."""
    sent = restart.body["messages"][-1]
    if restart.strategy == "retry" or sent["role"] != "assistant":
        return reply(*whole, stop_reason="tool_use")
    prefill = sent["content"]
    assert isinstance(prefill, str) and FIRST.startswith(prefill)
    return reply(text_block(FIRST[len(prefill) :]), *whole[1:], stop_reason="tool_use")


@pytest.mark.parametrize("server", [False, True], ids=["tool_use", "server_tool_use"])
def test_a_regenerated_tool_call_and_text_at_every_cut(server: bool) -> None:
    """Cut at every event boundary and inside every event (twice): each piece is handed out once."""
    name = "web_search" if server else "get_weather"
    tool = tool_block(name, "srvtoolu_1" if server else "toolu_1")
    if server:
        tool[0]["type"] = "server_tool_use"
    whole = [text_block(FIRST), tool, text_block(SECOND, 4)]
    wire = sse(reply(*whole, stop_reason="tool_use"))
    run(uncut := machine(), [wire])
    cuts = 0
    ends = [i + 2 for i in range(len(wire)) if wire.startswith(b"\n\n", i)]
    positions = sorted({*ends, *(a + (b - a) * k // 3 for a, b in zip([0, *ends], ends, strict=False) for k in (1, 2))})
    for at in positions[:-1]:
        m = machine()
        drive = Drive()
        m.start("req_1")
        m.feed(wire[:at])
        m.feed_eof()
        while (item := m.next_event()) is not END:
            if isinstance(item, Restart):
                drive.restarts.append(item)
                m.start("req_2")
                m.feed(sse(continuation_for(item, whole)))
                m.feed_eof()
            elif isinstance(item, streamkit.Rewind):
                drive.rewinds.append(item)
            elif item is not NEED_DATA:
                drive.events.append(item)
        where = f"cut at byte {at} of {len(wire)}"
        assert m.final_message().content == uncut.final_message().content, where
        cuts += bool(drive.restarts)
        assert drive.texts() == FIRST + SECOND, where
        assert drive.texts("input_json_delta", "partial_json") == json.dumps(INPUT), where
        starts = [e["index"] for e in drive.events if e["type"] == "content_block_start"]
        assert starts == [0, 1, 2], where
        assert drive.rewinds == [], where
    assert cuts == len(positions) - 1  # every cut before the end of message_stop restarts


def started(body: dict[str, Any] = BODY, resume: Any = "auto", **options: Any) -> ReplyMachine:
    """A machine whose first attempt delivered the start of TEXT (four deltas)."""
    m = machine(body, resume, **options)
    m.start("req_1")
    m.feed(sse(reply(text_block(TEXT))[:6]))
    while m.next_event() is not NEED_DATA:
        pass
    return m


FAILURES: list[tuple[str, streamkit.StreamkitError]] = [
    ("cut", streamkit.ConnectionLostError("connection reset")),
    ("stall", streamkit.StallError("no progress for 0.1 s")),
    ("timeout", streamkit.StreamTimeoutError("read timeout")),
]


@pytest.mark.parametrize(("name", "error"), FAILURES, ids=[name for name, _ in FAILURES])
def test_every_broken_connection_resumes_or_with_resume_off_ends_with_the_partial_reply(
    name: str, error: streamkit.StreamkitError
) -> None:
    m = started()
    m.fail(error)
    restart = m.next_event()
    assert isinstance(restart, Restart) and restart.cause is error and restart.strategy == "prefill"
    assert m.state is ReplyState.WAITING
    off = started(resume=False)
    off.fail(error)
    with pytest.raises(type(error)) as caught:
        off.next_event()
    assert caught.value is error
    assert caught.value.partial_message is not None and caught.value.partial_message.text == TEXT[:24]
    assert caught.value.request_id == "req_1"
    assert off.state is ReplyState.FAILED and off.error is error
    assert off.next_event() is END


def test_a_truncated_body_is_an_incomplete_reply_that_resumes() -> None:
    m = started()
    m.feed(b"event: content_block_delta\ndata: {\"type\"")  # half an event, then the body ends
    m.feed_eof()
    restart = m.next_event()
    assert isinstance(restart, Restart)
    assert type(restart.cause) is streamkit.IncompleteStreamError
    assert restart.cause.message == (
        "the stream ended without message_stop (40 bytes of an unfinished event): the reply is incomplete"
    )


@pytest.mark.parametrize(
    ("error_type", "resumes"),
    [("overloaded_error", True), ("api_error", True), ("rate_limit_error", True), ("invalid_request_error", False)],
)
def test_an_error_event_after_content(error_type: str, resumes: bool) -> None:
    m = started()
    m.feed(sse([{"type": "error", "error": {"type": error_type, "message": "boom"}}]))
    if resumes:
        restart = m.next_event()
        assert isinstance(restart, Restart) and isinstance(restart.cause, streamkit.StreamError)
        assert restart.cause.error_type == error_type
        return
    with pytest.raises(streamkit.InvalidRequestError) as caught:
        m.next_event()
    assert isinstance(caught.value, streamkit.StreamError)
    assert (caught.value.message, caught.value.request_id) == ("boom", "req_1")
    assert caught.value.partial_message is not None and caught.value.partial_message.text == TEXT[:24]


def test_events_before_a_failure_in_the_same_chunk_are_handed_out_first() -> None:
    m = machine()
    m.start("req_1")
    events = reply(text_block("Hello"))[:3]
    m.feed(sse(events) + b"event: content_block_delta\ndata: {not json}\n\n")
    assert [m.next_event()["type"] for _ in range(3)] == [  # type: ignore[index]
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    with pytest.raises(streamkit.ProtocolError) as caught:
        m.next_event()
    assert caught.value.message == "the data of a 'content_block_delta' event is not valid JSON"
    assert caught.value.data == b"{not json}"
    assert caught.value.partial_message is not None and caught.value.partial_message.text == "Hello"


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "content_block_delta", "index": None, "delta": {"type": "text_delta", "text": "x"}},
        {"type": "content_block_delta", "index": {"a": 1}, "delta": {"type": "text_delta", "text": "x"}},
        {"type": "content_block_delta", "index": 0, "delta": ["text_delta"]},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 7}},
        {"type": "content_block_start", "index": 0, "content_block": "text"},
        {"type": "message_start", "message": []},
        {"type": "message_delta", "delta": {}, "usage": [1]},
        {"type": "message_delta", "delta": {}, "usage": 0},
        {"type": "message_delta", "delta": {}, "usage": ""},
        {"type": "message_start", "message": {**reply()[0]["message"], "usage": 0}},
        {"type": "message_start", "message": {**reply()[0]["message"], "usage": False}},
    ],
)
def test_a_malformed_event_on_a_resumed_attempt_is_a_protocol_error(bad: dict[str, Any]) -> None:
    m = started()
    m.fail(streamkit.ConnectionLostError("reset"))
    assert isinstance(m.next_event(), Restart)
    m.start("req_2")
    m.feed(sse([bad]))
    with pytest.raises(streamkit.ProtocolError) as caught:
        m.next_event()
    assert caught.value.message.startswith(f"cannot continue the reply with a malformed {bad['type']} event: ")
    assert caught.value.partial_message is not None and caught.value.partial_message.text == TEXT[:24]
    assert m.state is ReplyState.FAILED


def test_a_refused_prefill_switches_to_continue_once() -> None:
    m = started()
    cause = streamkit.ConnectionLostError("reset")
    m.fail(cause)
    first = m.next_event()
    assert isinstance(first, Restart) and first.strategy == "prefill"
    refusal = streamkit.InvalidRequestError(f"This model {PREFILL_REJECTED}.", status_code=400)
    again = m.refused(refusal)
    assert (again.strategy, again.delay, again.cause) == ("continue", 0.0, cause)
    assert again.body["messages"][-1] == {"role": "user", "content": CONTINUE_PROMPT}
    with pytest.raises(streamkit.InvalidRequestError) as caught:
        m.refused(refusal)
    assert caught.value is refusal and caught.value.partial_message is not None


def test_resumes_stop_at_max_resumes() -> None:
    m = started(max_resumes=1)
    m.fail(streamkit.ConnectionLostError("first"))
    assert isinstance(m.next_event(), Restart)
    m.start("req_2")
    m.fail(second := streamkit.ConnectionLostError("second"))
    with pytest.raises(streamkit.ConnectionLostError) as caught:
        m.next_event()
    assert caught.value is second and len(m.resumes) == 1


def test_closed_before_the_end_the_final_message_is_incomplete() -> None:
    m = started()
    m.close()
    assert m.state is ReplyState.CLOSED and m.next_event() is END
    with pytest.raises(streamkit.IncompleteStreamError) as caught:
        m.final_message()
    assert caught.value.message == "the stream was closed before message_stop: the reply is incomplete"
    assert caught.value.partial_message is not None and caught.value.partial_message.text == TEXT[:24]


def test_no_content_yet_is_a_plain_retry_that_keeps_the_usage() -> None:
    m = machine()
    m.start("req_1")
    m.feed(sse(reply(text_block(TEXT))[:2]))
    m.fail(streamkit.ConnectionLostError("reset"))
    kinds = []
    while not isinstance(item := m.next_event(), Restart):
        kinds.append(item["type"])  # type: ignore[index]
    assert kinds == ["message_start", "content_block_start"]
    assert (item.strategy, item.body) == ("retry", m._body)
    assert m.retries == 1 and m.resumes == []


def test_a_second_cut_during_a_regeneration_still_shows_each_piece_once() -> None:
    """Cut in the second text; the regeneration is cut again while it repeats the tool call."""
    whole = [text_block(FIRST), tool_block(), text_block(SECOND, 4)]
    events = reply(*whole, stop_reason="tool_use")
    n_first = 2 + len(pieces(FIRST, 6)) + 1  # message_start and the first text block
    n_tool = 2 + len(pieces(json.dumps(INPUT), 7))
    first = sse(events[: n_first + n_tool + 4])  # the second text's start and three pieces
    again = reply(*whole[1:], stop_reason="tool_use")
    second = sse(again[:4])  # message_start, the tool's start and two pieces: all hidden repeats
    m = machine()
    drive = run(m, [first], [second], [sse(again)])
    assert [r.strategy for r in drive.restarts] == ["prefill", "prefill"]
    assert drive.texts() == FIRST + SECOND
    assert drive.texts("input_json_delta", "partial_json") == json.dumps(INPUT)
    assert [e["index"] for e in drive.events if e["type"] == "content_block_start"] == [0, 1, 2]
    assert drive.rewinds == []
    assert m.final_message().text == FIRST + SECOND
