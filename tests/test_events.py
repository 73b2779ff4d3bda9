"""The sans-I/O SSE decoder and the typed events, without sockets."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import streamkit
from streamkit import SSEDecoder, parse_event

STREAM = (
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","text":"a\\nb"}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
EXPECTED = [
    ("message_start", b'{"type":"message_start"}'),
    ("ping", b'{"type": "ping"}'),
    ("content_block_delta", b'{"type":"content_block_delta","text":"a\\nb"}'),
    ("message_stop", b'{"type":"message_stop"}'),
]
ODD = (
    b": comment line\n"
    b"id: 41\nretry: 3000\nevent: first\ndata: one\n\n"
    b"data: line 1\ndata:line 2\ndata\ndata:  spaced\n\n"  # default name; "data" alone is an empty line
    b"event: nodata\n\n"  # no data: not dispatched
    b":only a comment\n\n"
    b"event:tight\ndata:{}\nid\n\n"
)
ODD_EXPECTED = [("first", b"one"), ("message", b"line 1\nline 2\n\n spaced"), ("tight", b"{}")]
ENDINGS = [b"\n", b"\r\n", b"\r"]


def decode(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    assert decoder.buffered == b""
    return events


def with_ending(raw: bytes, ending: bytes) -> bytes:
    return raw.replace(b"\n", ending)


# -- SSE framing ---------------------------------------------------------------------


@pytest.mark.parametrize("ending", ENDINGS, ids=["LF", "CRLF", "CR"])
def test_line_endings(ending: bytes) -> None:
    assert decode([with_ending(STREAM, ending)]) == EXPECTED
    assert decode([with_ending(ODD, ending)]) == ODD_EXPECTED


def test_mixed_line_endings() -> None:
    raw = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\nevent: d\r\ndata: 4\n\r"
    assert decode([raw]) == [("a", b"1"), ("b", b"2"), ("c", b"3"), ("d", b"4")]


def test_crlf_split_across_two_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\r\ndata: 1\r") == []
    assert decoder.feed(b"\n\r") == [("a", b"1")]  # "\r\n" then "\r": the blank line
    assert decoder.feed(b"\nevent: b\r") == []  # the "\n" completes that CRLF: not another blank line
    assert decoder.feed(b"\ndata: 2\r\n") == []
    assert decoder.feed(b"\r\n") == [("b", b"2")]
    assert decoder.buffered == b""


def test_cr_at_a_chunk_end_is_a_line_end() -> None:
    """A lone CR ends a line: the event is dispatched at once, not when the next byte comes."""
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\rdata: 1\r\r") == [("a", b"1")]
    assert decoder.feed(b"\nevent: b\rdata: 2\r") == []
    assert decoder.feed(b"\r") == [("b", b"2")]


@pytest.mark.parametrize("ending", ENDINGS, ids=["LF", "CRLF", "CR"])
def test_split_at_every_byte(ending: bytes) -> None:
    raw = with_ending(STREAM + ODD, ending)
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == EXPECTED + ODD_EXPECTED


@pytest.mark.parametrize("ending", ENDINGS, ids=["LF", "CRLF", "CR"])
def test_split_at_every_boundary_in_two_and_three(ending: bytes) -> None:
    raw = with_ending(STREAM, ending)
    for cut in range(len(raw) + 1):
        assert decode([raw[:cut], raw[cut:]]) == EXPECTED, cut
    for cut in range(0, len(raw), 7):
        assert decode([raw[:cut], raw[cut : cut + 3], raw[cut + 3 :]]) == EXPECTED, cut


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: ping\ndata: {}\n") == []
    assert decoder.buffered == b"event: ping\ndata: {}\n"
    assert decoder.feed(b"\nevent: message_stop\ndata: {") == [("ping", b"{}")]
    assert decoder.buffered == b"event: message_stop\ndata: {"
    assert decoder.feed(b"}") == []
    assert decoder.feed(b"\n\n") == [("message_stop", b"{}")]
    assert decoder.buffered == b""


def test_several_events_in_one_chunk_and_empty_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(STREAM) == EXPECTED
    assert decoder.feed(b"") == []
    assert decoder.buffered == b""


@pytest.mark.parametrize(
    ("odd", "third"),
    [
        (b"", ("content_block_delta", b'{"i":2}')),
        (b": comment\n", ("content_block_delta", b'{"i":2}')),
        (b"event: unseen\n", ("unseen", b'{"i":2}')),
        (b"data: more\n", ("content_block_delta", b'{"i":2}\nmore')),
        (b"\n", ("content_block_delta", b'{"i":2}')),
    ],
    ids=["plain", "comment", "unseen-name", "two-data-lines", "extra-blank-line"],
)
def test_a_backlog_of_events_whatever_one_block_holds(odd: bytes, third: tuple[str, bytes]) -> None:
    """Many events in one read, of names seen before, with one block that is not the usual two lines or not."""
    decoder = SSEDecoder()
    assert decoder.feed(STREAM) == EXPECTED  # the names are known from here on
    block = b'event: content_block_delta\ndata: {"i":%d}\n'
    backlog = b"\n".join([block % 0, block % 1, block % 2 + odd, block % 3]) + b"\nevent: ping\nda"
    assert decoder.feed(backlog[:7]) == []
    assert decoder.feed(backlog[7:]) == [
        ("content_block_delta", b'{"i":0}'),
        ("content_block_delta", b'{"i":1}'),
        third,
        ("content_block_delta", b'{"i":3}'),
    ]
    assert decoder.buffered == b"event: ping\nda"
    assert decoder.feed(b'ta: {"type": "ping"}\n\n') == [("ping", b'{"type": "ping"}')]


def test_bom_at_start_is_stripped_once() -> None:
    bom = b"\xef\xbb\xbf"
    assert decode([bom + STREAM]) == EXPECTED
    # Only at the very start of the stream: a later BOM is part of a field name.
    decoder = SSEDecoder()
    assert decoder.feed(bom + b"event: a\ndata: 1\n\n") == [("a", b"1")]
    assert decoder.feed(bom + b"event: b\ndata: 2\n\n") == [("message", b"2")]


def test_bom_after_an_empty_first_chunk() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\xef\xbb\xbfevent: a\ndata: 1\n\n") == [("a", b"1")]


def test_bom_split_across_chunks() -> None:
    raw = b"\xef\xbb\xbf" + STREAM
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == EXPECTED


def test_event_without_data_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: lonely\n\nid: 3\n\nretry: 10\n\n: hi\n\n") == []
    assert decoder.buffered == b""
    # The name of an event without data does not leak into the next one.
    assert decoder.feed(b"data: x\n\n") == [("message", b"x")]


def test_default_name_is_message() -> None:
    assert decode([b"data: {}\n\n"]) == [("message", b"{}")]


def test_last_event_name_wins_and_data_keeps_colons() -> None:
    assert decode([b'event: a\nevent: b\ndata: {"k": "v: w"}\n\n']) == [("b", b'{"k": "v: w"}')]


def test_utf8_in_data_is_passed_through_as_bytes() -> None:
    data = '{"text": "héllo 👋"}'.encode()
    raw = b"event: content_block_delta\ndata: " + data + b"\n\n"
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == [("content_block_delta", data)]


@pytest.mark.parametrize("line", [b"event:", b"event: ", b"event:\t"[:-1], b"event: other\nevent:"])
def test_an_empty_event_name_is_the_default_message(line: bytes) -> None:
    """WHATWG 9.2.6: an empty event type buffer dispatches as ``message``."""
    assert decode([line + b"\ndata: {}\n\n"]) == [("message", b"{}")]
    assert decode([line + b"\r\ndata: {}\r\n\r\n"]) == [("message", b"{}")]


def test_max_event_size_default() -> None:
    assert streamkit.MAX_EVENT_SIZE == 32 * 1024 * 1024


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_the_limit_counts_the_event_without_its_blank_line(ending: bytes) -> None:
    """The size is that of the fields, line ends as LF: 100 bytes here, whatever the line ending."""
    event = b"data: " + b"x" * 94 + ending + ending
    decoder = SSEDecoder(max_event_size=100)
    assert decoder.feed(event[:50]) == []
    assert decoder.feed(event[50:]) == [("message", b"x" * 94)]
    assert decoder.buffered == b""
    with pytest.raises(streamkit.ProtocolError) as caught:
        SSEDecoder(max_event_size=99).feed(event)
    assert caught.value.message == "an event of more than 99 bytes (100 so far): refused, no real event is that large"


@pytest.mark.parametrize("pieces", [1, 7, 1000])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_an_event_over_the_limit_is_refused(pieces: int, ending: bytes) -> None:
    """Refused as soon as the buffer passes the limit, whether or not the event is complete."""
    decoder = SSEDecoder(max_event_size=1000)
    assert decoder.feed(b"event: ping" + ending + b'data: {"type":"ping"}' + ending + ending) == [
        ("ping", b'{"type":"ping"}')
    ]
    raw = b"data: " + b"y" * 5000 + ending + ending
    step = -(-len(raw) // pieces)
    with pytest.raises(streamkit.ProtocolError) as caught:
        for start in range(0, len(raw), step):
            decoder.feed(raw[start : start + step])
    assert type(caught.value) is streamkit.ProtocolError
    assert caught.value.message.startswith("an event of more than 1,000 bytes (")
    assert caught.value.message.endswith(" so far): refused, no real event is that large")
    assert decoder.buffered == b""


def test_a_huge_line_is_refused_once_past_the_default_limit() -> None:
    decoder = SSEDecoder()
    piece = b"z" * (1024 * 1024)
    decoder.feed(b"data: ")
    for _ in range(31):
        assert decoder.feed(piece) == []
    assert len(decoder.buffered) == 31 * len(piece) + 6
    with pytest.raises(streamkit.ProtocolError) as caught:
        decoder.feed(piece)
    assert caught.value.message == (
        "an event of more than 33,554,432 bytes (33,554,438 so far): refused, no real event is that large"
    )


def test_many_distinct_event_names() -> None:
    raw = b"".join(b"event: name%d\ndata: %d\n\n" % (i, i) for i in range(200))
    assert decode([raw]) == [(f"name{i}", str(i).encode()) for i in range(200)]
    assert decode([raw, raw]) == [(f"name{i}", str(i).encode()) for i in range(200)] * 2


# -- typed events --------------------------------------------------------------------

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-mock-1",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


def test_parse_message_start() -> None:
    event = parse_event({"type": "message_start", "message": MESSAGE})
    assert event == streamkit.MessageStartEvent(
        message=streamkit.Message(
            id="msg_1", model="claude-mock-1", usage=streamkit.Usage(input_tokens=3, output_tokens=1)
        )
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"type": "text", "text": ""}, streamkit.TextBlock(text="")),
        (
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            streamkit.ToolUseBlock(id="toolu_1", name="f", input={}),
        ),
        (
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            streamkit.ServerToolUseBlock(id="srvtoolu_1", name="web_search", input={}),
        ),
        ({"type": "thinking", "thinking": "", "signature": ""}, streamkit.ThinkingBlock()),
        ({"type": "redacted_thinking", "data": "abc"}, streamkit.RedactedThinkingBlock(data="abc")),
    ],
)
def test_parse_content_block_start(block: dict[str, Any], expected: Any) -> None:
    event = parse_event({"type": "content_block_start", "index": 2, "content_block": block})
    assert isinstance(event, streamkit.ContentBlockStartEvent)
    assert event.index == 2
    assert type(event.content_block) is type(expected)
    assert event.content_block == expected


def test_parse_unknown_content_block() -> None:
    block = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result"}]}
    event = parse_event({"type": "content_block_start", "index": 1, "content_block": block})
    assert isinstance(event, streamkit.ContentBlockStartEvent)
    assert type(event.content_block) is streamkit.UnknownBlock
    assert event.content_block.type == "web_search_tool_result"
    assert event.content_block.model_dump() == block


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"type": "text_delta", "text": "hi"}, streamkit.TextDelta(text="hi")),
        ({"type": "input_json_delta", "partial_json": '{"a'}, streamkit.InputJSONDelta(partial_json='{"a')),
        ({"type": "thinking_delta", "thinking": "hm"}, streamkit.ThinkingDelta(thinking="hm")),
        ({"type": "signature_delta", "signature": "c2ln"}, streamkit.SignatureDelta(signature="c2ln")),
        (
            {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}},
            streamkit.CitationsDelta(citation={"type": "char_location", "cited_text": "x"}),
        ),
    ],
)
def test_parse_content_block_delta(delta: dict[str, Any], expected: Any) -> None:
    event = parse_event({"type": "content_block_delta", "index": 0, "delta": delta})
    assert isinstance(event, streamkit.ContentBlockDeltaEvent)
    assert event.index == 0
    assert type(event.delta) is type(expected)
    assert event.delta == expected


def test_parse_unknown_delta() -> None:
    delta = {"type": "compaction_delta", "content": "Summary.", "encrypted_content": "Ep"}
    event = parse_event({"type": "content_block_delta", "index": 0, "delta": delta})
    assert isinstance(event, streamkit.ContentBlockDeltaEvent)
    assert type(event.delta) is streamkit.UnknownDelta
    assert event.delta.type == "compaction_delta"
    assert event.delta.model_extra == {"content": "Summary.", "encrypted_content": "Ep"}
    assert event.delta.model_dump() == delta


def test_parse_the_other_known_events() -> None:
    assert parse_event({"type": "content_block_stop", "index": 3}) == streamkit.ContentBlockStopEvent(index=3)
    message_delta = parse_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        }
    )
    assert isinstance(message_delta, streamkit.MessageDeltaEvent)
    assert (message_delta.delta.stop_reason, message_delta.delta.stop_sequence) == ("max_tokens", None)
    assert message_delta.usage == {"output_tokens": 12}
    assert parse_event({"type": "message_stop"}) == streamkit.MessageStopEvent()
    assert parse_event({"type": "ping"}) == streamkit.PingEvent()
    error = parse_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert isinstance(error, streamkit.ErrorEvent)
    assert (error.error.type, error.error.message) == ("overloaded_error", "Overloaded")


def test_parse_keeps_extra_fields() -> None:
    event = parse_event({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"latency": 3}})
    assert isinstance(event, streamkit.MessageStopEvent)
    assert event.model_extra == {"amazon-bedrock-invocationMetrics": {"latency": 3}}


def test_parse_unknown_event_type() -> None:
    data = {"type": "brand_new_event", "payload": [1, 2], "nested": {"a": None}}
    event = parse_event(data)
    assert type(event) is streamkit.UnknownEvent
    assert event == streamkit.UnknownEvent(type="brand_new_event", data=data)
    assert event.data is not None and event.data["payload"] == [1, 2]


def test_parse_event_without_a_string_type() -> None:
    assert parse_event({"no": "type"}) == streamkit.UnknownEvent(type="None", data={"no": "type"})
    assert parse_event({"type": 7}) == streamkit.UnknownEvent(type="7", data={"type": 7})


def test_parse_malformed_known_event_raises_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_event({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}})  # no index


@pytest.mark.parametrize("kind", [["text"], {"t": 1}])
def test_parse_a_block_or_delta_whose_type_is_not_a_string(kind: Any) -> None:
    """Found by the fuzz: an unhashable type escaped as TypeError; it is a ValidationError."""
    start = {"type": "content_block_start", "index": 0, "content_block": {"type": kind}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": kind}}
    for data in (start, delta):
        with pytest.raises(pydantic.ValidationError) as caught:
            parse_event(data)
        assert caught.value.errors()[0]["type"] == "string_type"
