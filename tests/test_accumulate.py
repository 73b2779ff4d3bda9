"""MessageAccumulator alone: pure code fed decoded event dicts, no I/O."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from pydantic_core import from_json

import streamkit
from streamkit import MessageAccumulator

MESSAGE = {"id": "msg_acc", "type": "message", "role": "assistant", "model": "claude-mock-1", "content": []}


def message_start(**usage: Any) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {**MESSAGE, "stop_reason": None, "stop_sequence": None, "usage": usage or {"input_tokens": 5}},
    }


def block_start(index: int, **block: Any) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str | None = "end_turn", **usage: Any) -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage}


STOP = {"type": "message_stop"}


def fed(*events: dict[str, Any]) -> MessageAccumulator:
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.feed(event)
    return accumulator


def snapshot(accumulator: MessageAccumulator) -> streamkit.Message:
    message = accumulator.message
    assert message is not None
    return message


def tool_block(index: int = 0, kind: str = "tool_use") -> dict[str, Any]:
    return block_start(index, type=kind, id="toolu_1", name="lookup", input={})


# -- text, citations, thinking -----------------------------------------------------


def test_nothing_before_message_start() -> None:
    accumulator = MessageAccumulator()
    assert accumulator.message is None
    accumulator.feed({"type": "ping"})
    assert accumulator.message is None and not accumulator.finished


def test_text_deltas() -> None:
    accumulator = fed(
        message_start(input_tokens=7, output_tokens=1),
        block_start(0, type="text", text=""),
        delta(0, type="text_delta", text="Hel"),
        delta(0, type="text_delta", text="lo"),
        delta(0, type="text_delta", text=""),
        delta(0, type="text_delta", text=" wörld 👋"),
    )
    assert snapshot(accumulator).text == "Hello wörld 👋"
    assert not accumulator.finished
    for event in (block_stop(0), message_delta(output_tokens=4), STOP):
        accumulator.feed(event)
    assert accumulator.finished
    assert snapshot(accumulator) == streamkit.Message(
        id="msg_acc",
        model="claude-mock-1",
        content=[streamkit.TextBlock(text="Hello wörld 👋")],
        stop_reason="end_turn",
        usage=streamkit.Usage(input_tokens=7, output_tokens=4),
    )


def test_text_of_several_blocks_is_joined() -> None:
    accumulator = fed(
        message_start(),
        block_start(0, type="text", text=""),
        delta(0, type="text_delta", text="one "),
        block_stop(0),
        block_start(1, type="thinking", thinking="", signature=""),
        delta(1, type="thinking_delta", thinking="hidden"),
        block_stop(1),
        block_start(2, type="text", text=""),
        delta(2, type="text_delta", text="two"),
    )
    assert snapshot(accumulator).text == "one two"


def test_citations_delta_appends_to_the_text_block() -> None:
    first = {"type": "char_location", "cited_text": "a", "document_index": 0, "start_char_index": 0}
    second = {"type": "page_location", "cited_text": "b", "document_index": 1, "start_page_number": 2}
    accumulator = fed(
        message_start(),
        block_start(0, type="text", text=""),
        delta(0, type="citations_delta", citation=first),
        delta(0, type="text_delta", text="cited "),
        delta(0, type="citations_delta", citation=second),
        delta(0, type="text_delta", text="text"),
        block_stop(0),
    )
    assert snapshot(accumulator).content == [streamkit.TextBlock(text="cited text", citations=[first, second])]


def test_text_block_without_citations_has_none() -> None:
    accumulator = fed(message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="x"))
    assert snapshot(accumulator).content == [streamkit.TextBlock(text="x", citations=None)]


def test_thinking_and_signature() -> None:
    accumulator = fed(
        message_start(),
        block_start(0, type="thinking", thinking="", signature=""),
        delta(0, type="thinking_delta", thinking="Let me "),
        delta(0, type="thinking_delta", thinking="think."),
        delta(0, type="signature_delta", signature="c2ln"),
    )
    assert snapshot(accumulator).content == [streamkit.ThinkingBlock(thinking="Let me think.", signature="c2ln")]
    accumulator.feed(delta(0, type="signature_delta", signature="bmV3"))  # set, never appended
    accumulator.feed(block_stop(0))
    assert snapshot(accumulator).content == [streamkit.ThinkingBlock(thinking="Let me think.", signature="bmV3")]
    assert snapshot(accumulator).text == ""


def test_redacted_thinking_arrives_whole() -> None:
    accumulator = fed(message_start(), block_start(0, type="redacted_thinking", data="EmwKAhgB"), block_stop(0))
    assert snapshot(accumulator).content == [streamkit.RedactedThinkingBlock(data="EmwKAhgB")]


# -- tool input ----------------------------------------------------------------------


def feed_tool(fragments: list[str], kind: str = "tool_use") -> MessageAccumulator:
    accumulator = fed(message_start(), tool_block(0, kind))
    for fragment in fragments:
        accumulator.feed(delta(0, type="input_json_delta", partial_json=fragment))
    accumulator.feed(block_stop(0))
    return accumulator


def test_tool_json_split_across_fragments() -> None:
    fragments = ["", '{"ci', 'ty": "Pa', "", 'ris", "days": 1', "2, ", '"ok": tr', 'ue, "x": nu', "ll}"]
    block = snapshot(feed_tool(fragments)).content[0]
    expected = streamkit.ToolUseBlock(
        id="toolu_1", name="lookup", input={"city": "Paris", "days": 12, "ok": True, "x": None}
    )
    expected._partial_json = "".join(fragments)
    assert block == expected
    assert isinstance(block, streamkit.ToolUseBlock) and block.input_json == "".join(fragments)


@pytest.mark.parametrize(
    ("fragments", "expected"),
    [
        (['{"word": "caf\\u00', 'e9"}'], {"word": "café"}),
        (['{"word": "caf\\', 'u00e9"}'], {"word": "café"}),
        (['{"word": "caf\\u', "00", "", 'e9"}'], {"word": "café"}),
        (['{"face": "\\ud83d', '\\ude00"}'], {"face": "😀"}),
        (['{"face": "\\ud83d\\ud', 'e00"}'], {"face": "😀"}),
        (['{"quote": "a\\', '"b"}'], {"quote": 'a"b'}),
        (['{"raw": "é', '😀"}'], {"raw": "é😀"}),
    ],
)
def test_tool_json_split_inside_escapes(fragments: list[str], expected: dict[str, Any]) -> None:
    block = snapshot(feed_tool(fragments)).content[0]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert block.input == expected
    assert block.input_json == "".join(fragments)


def test_every_split_of_a_tool_document() -> None:
    document = {"name": "Zoë", "n": -12.5e3, "tags": ["a", "b\n"], "nested": {"ok": False}, "none": None}
    raw = json.dumps(document)  # ensure_ascii: "\u00eb"
    for cut in range(len(raw) + 1):
        block = snapshot(feed_tool([raw[:cut], "", raw[cut:]])).content[0]
        assert isinstance(block, streamkit.ToolUseBlock)
        assert block.input == document, cut


def test_server_tool_use_input() -> None:
    block = snapshot(feed_tool(["", '{"query": "sol', 'ar"}'], kind="server_tool_use")).content[0]
    assert isinstance(block, streamkit.ServerToolUseBlock)
    assert (block.id, block.name, block.input, block.input_json) == (
        "toolu_1",
        "lookup",
        {"query": "solar"},
        '{"query": "solar"}',
    )


def test_tool_without_any_fragment_keeps_its_empty_input() -> None:
    block = snapshot(feed_tool([])).content[0]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert (block.input, block.input_json) == ({}, "")


def test_tool_with_only_empty_fragments_keeps_its_empty_input() -> None:
    """A tool without arguments: the API sends one empty fragment; the input stays {}."""
    block = snapshot(feed_tool([""])).content[0]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert (block.input, block.input_json) == ({}, "")
    block = snapshot(feed_tool(["", ""])).content[0]
    assert isinstance(block, streamkit.ToolUseBlock) and block.input == {}


def test_partial_tool_input_during_the_stream() -> None:
    accumulator = fed(message_start(), tool_block(0))
    steps = [
        ("", {}),
        ('{"city": "Pa', {}),  # an unfinished string is not shown
        ('ris", ', {"city": "Paris"}),
        ('"days": [1, ', {"city": "Paris", "days": [1]}),
        ('2], "units": "met', {"city": "Paris", "days": [1, 2]}),
        ('ric", "extra": {"a": tr', {"city": "Paris", "days": [1, 2], "units": "metric", "extra": {}}),
        ("ue}", {"city": "Paris", "days": [1, 2], "units": "metric", "extra": {"a": True}}),
    ]
    raw = ""
    for fragment, expected in steps:
        accumulator.feed(delta(0, type="input_json_delta", partial_json=fragment))
        raw += fragment
        block = snapshot(accumulator).content[0]
        assert isinstance(block, streamkit.ToolUseBlock)
        assert block.input == expected, raw
        assert block.input_json == raw
    assert accumulator.open_block == 0
    accumulator.feed(delta(0, type="input_json_delta", partial_json="}"))
    accumulator.feed(block_stop(0))
    assert accumulator.open_block is None
    block = snapshot(accumulator).content[0]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert block.input == {"city": "Paris", "days": [1, 2], "units": "metric", "extra": {"a": True}}


def test_invalid_final_tool_json_is_a_protocol_error() -> None:
    accumulator = fed(message_start(), tool_block(0))
    accumulator.feed(delta(0, type="input_json_delta", partial_json='{"a": 1,'))
    accumulator.feed(delta(0, type="input_json_delta", partial_json=' "b": }'))
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(block_stop(0))
    assert type(caught.value) is streamkit.ProtocolError
    assert caught.value.message.startswith("tool input of block 0 is not valid JSON: ")
    assert caught.value.data == b'{"a": 1, "b": }'


def test_unfinished_tool_json_at_block_stop_is_a_protocol_error() -> None:
    accumulator = fed(message_start(), tool_block(0))
    accumulator.feed(delta(0, type="input_json_delta", partial_json='{"a": "unterminated'))
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(block_stop(0))
    assert caught.value.data == b'{"a": "unterminated'


# -- usage and message fields ------------------------------------------------------


def test_usage_overwrite_rules() -> None:
    accumulator = fed(message_start(input_tokens=50, output_tokens=1, cache_read_input_tokens=3))
    assert snapshot(accumulator).usage == streamkit.Usage(input_tokens=50, output_tokens=1, cache_read_input_tokens=3)
    accumulator.feed(message_delta(None, output_tokens=7))  # output_tokens replaced, the rest kept
    assert snapshot(accumulator).usage == streamkit.Usage(input_tokens=50, output_tokens=7, cache_read_input_tokens=3)
    accumulator.feed(
        message_delta(
            "end_turn",
            output_tokens=9,
            input_tokens=52,
            cache_creation_input_tokens=2,
            server_tool_use={"web_search_requests": 1},
        )
    )
    assert snapshot(accumulator).usage == streamkit.Usage(
        input_tokens=52,
        output_tokens=9,
        cache_read_input_tokens=3,
        cache_creation_input_tokens=2,
        server_tool_use={"web_search_requests": 1},
    )
    accumulator.feed(message_delta("end_turn", output_tokens=11, cache_read_input_tokens=None, input_tokens=None))
    usage = snapshot(accumulator).usage
    assert usage == streamkit.Usage(
        input_tokens=52,
        output_tokens=11,
        cache_read_input_tokens=3,
        cache_creation_input_tokens=2,
        server_tool_use={"web_search_requests": 1},
    )
    assert usage.model_extra == {}


def test_unknown_usage_fields_and_message_fields_are_kept() -> None:
    accumulator = fed(
        message_start(input_tokens=1, output_tokens=1, inference_geo="global"),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None, "stop_details": {"type": "refusal"}},
            "usage": {"output_tokens": 2, "output_tokens_details": {"thinking_tokens": 1}},
        },
    )
    message = snapshot(accumulator)
    assert message.stop_reason == "refusal"
    assert message.model_extra == {"stop_details": {"type": "refusal"}}
    assert message.usage.model_extra == {"inference_geo": "global", "output_tokens_details": {"thinking_tokens": 1}}


def test_stop_sequence() -> None:
    accumulator = fed(
        message_start(),
        {"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "usage": {}},
    )
    message = snapshot(accumulator)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


# -- unknown things are kept -------------------------------------------------------


def test_unknown_block_and_unknown_delta_are_kept() -> None:
    accumulator = fed(
        message_start(),
        block_start(0, type="compaction", content=None, encrypted_content=None),
        delta(0, type="compaction_delta", content="Summary ", encrypted_content="Ep"),
        delta(0, type="compaction_delta", content="so far.", encrypted_content="wB", extra=[1]),
        block_stop(0),
        block_start(1, type="web_search_tool_result", tool_use_id="srvtoolu_1", content=[{"type": "x"}]),
        block_stop(1),
    )
    first, second = snapshot(accumulator).content
    assert isinstance(first, streamkit.UnknownBlock) and isinstance(second, streamkit.UnknownBlock)
    assert first.model_dump() == {
        "type": "compaction",
        "content": "Summary so far.",
        "encrypted_content": "EpwB",
        "extra": [1],
    }
    assert second.model_dump() == {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_1",
        "content": [{"type": "x"}],
    }


def test_unknown_events_change_nothing() -> None:
    accumulator = fed(message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="a"))
    before = snapshot(accumulator)
    accumulator.feed({"type": "brand_new_event", "index": 0, "delta": {"type": "text_delta", "text": "zzz"}})
    accumulator.feed({"type": "ping"})
    accumulator.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert snapshot(accumulator) is before
    assert before.text == "a"


# -- protocol violations -----------------------------------------------------------


def test_delta_for_a_block_never_started() -> None:
    accumulator = fed(message_start(), block_start(0, type="text", text=""))
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(delta(1, type="text_delta", text="x"))
    assert type(caught.value) is streamkit.ProtocolError
    never_started = "KeyError: 'content block 1 was never started'"
    assert caught.value.message == f"cannot apply content_block_delta event: {never_started}"
    assert snapshot(accumulator).content == [streamkit.TextBlock(text="")]


def test_stop_for_a_block_never_started() -> None:
    accumulator = fed(message_start())
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(block_stop(4))
    assert caught.value.message == "cannot apply content_block_stop event: KeyError: 4"


def test_message_delta_before_message_start() -> None:
    with pytest.raises(streamkit.ProtocolError) as caught:
        MessageAccumulator().feed(message_delta(output_tokens=1))
    assert caught.value.message == "cannot apply message_delta event: KeyError: 'message_delta before message_start'"


def test_delta_without_its_field() -> None:
    accumulator = fed(message_start(), block_start(0, type="text", text=""))
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(delta(0, type="text_delta"))
    assert caught.value.message == "cannot apply content_block_delta event: KeyError: 'text'"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            block_start(1, type="tool_use", name="lookup", input={}),
            "ValidationError: 1 validation error for ToolUseBlock",
        ),
        (block_start(1, type="text", text=5), "ValidationError: 1 validation error for TextBlock"),
        (block_start(1, type=["text"]), "ValidationError: 1 validation error for UnknownBlock"),
        ({"type": "content_block_start", "index": 1, "content_block": "text"}, "TypeError: a content block is str"),
        ({"type": "content_block_start", "index": "1", "content_block": {"type": "text"}}, "TypeError: index '1'"),
        (delta(0, type="text_delta", text=["x"]), "TypeError: text_delta.text is list, not a string"),
        (delta(0, type="text_delta", text=None), "TypeError: text_delta.text is NoneType, not a string"),
        (delta(0, type="citations_delta", citation="c"), "ValidationError: 1 validation error for TextBlock"),
        (delta(0, type="mystery_delta", text=7), "ValidationError: 1 validation error for TextBlock"),
        ({"type": "content_block_delta", "index": 0, "delta": "x"}, "TypeError: string indices must be integers"),
        (message_delta(stop_reason=5), "ValidationError: 1 validation error for Message"),  # type: ignore[arg-type]
        (message_delta(output_tokens="many"), "ValidationError: 1 validation error for Usage"),
        ({"type": "message_start", "message": {"model": "m"}}, "ValidationError: 1 validation error for Message"),
        ({"type": "message_start", "message": {**MESSAGE, "content": [{"type": 1}]}}, "ValidationError: 1 valid"),
    ],
)
def test_an_event_that_would_break_the_snapshot_is_refused_and_changes_nothing(
    event: dict[str, Any], reason: str
) -> None:
    """Refused when fed, so that reading ``message`` later can never fail."""
    accumulator = fed(message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="ok"))
    before = snapshot(accumulator)
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(event)
    assert type(caught.value) is streamkit.ProtocolError
    assert caught.value.message.startswith(f"cannot apply {event['type']} event: {reason}")
    assert snapshot(accumulator) == before
    accumulator.feed(block_stop(0))
    assert snapshot(accumulator).content == [streamkit.TextBlock(text="ok")]


# -- message_delta fields, fallback ----------------------------------------------------


def test_every_top_level_field_of_message_delta_reaches_the_message() -> None:
    edits = {"applied_edits": [{"type": "clear_tool_uses_20250919", "cleared_tool_uses": 2}]}
    accumulator = fed(
        message_start(input_tokens=3),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None, "container": {"id": "cnt_1"}},
            "usage": {"output_tokens": 9},
            "context_management": edits,
            "future_field": [1, 2],
        },
        STOP,
    )
    message = snapshot(accumulator)
    assert message.model_extra == {"context_management": edits, "future_field": [1, 2], "container": {"id": "cnt_1"}}
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage == streamkit.Usage(input_tokens=3, output_tokens=9)


def test_a_null_in_a_later_message_delta_erases_nothing() -> None:
    accumulator = fed(
        message_start(),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "pause_turn", "stop_sequence": "END", "container": {"id": "cnt_1"}},
            "usage": {"output_tokens": 4, "cache_read_input_tokens": 2},
            "context_management": {"applied_edits": []},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None, "container": None},
            "usage": {"output_tokens": 6, "cache_read_input_tokens": None},
            "context_management": None,
        },
    )
    message = snapshot(accumulator)
    assert (message.stop_reason, message.stop_sequence) == ("pause_turn", "END")
    assert message.model_extra == {"container": {"id": "cnt_1"}, "context_management": {"applied_edits": []}}
    assert message.usage == streamkit.Usage(input_tokens=5, output_tokens=6, cache_read_input_tokens=2)


def test_a_fallback_block_names_the_model_that_wrote_the_reply() -> None:
    fallback = {"type": "fallback", "from": {"model": "claude-mock-1"}, "to": {"model": "claude-other-2"}}
    accumulator = fed(message_start(), block_start(0, **fallback))
    assert snapshot(accumulator).model == "claude-other-2"
    for event in (
        block_stop(0),
        block_start(1, type="text", text=""),
        delta(1, type="text_delta", text="hi"),
        block_stop(1),
        message_delta(),
        STOP,
    ):
        accumulator.feed(event)
    message = snapshot(accumulator)
    assert message.model == "claude-other-2"
    assert message.content == [streamkit.UnknownBlock(**fallback), streamkit.TextBlock(text="hi")]


@pytest.mark.parametrize("to", [None, {}, {"model": None}, {"model": 4}, "claude-other-2"])
def test_a_fallback_block_without_a_model_name_keeps_the_model(to: Any) -> None:
    accumulator = fed(message_start(), block_start(0, type="fallback", to=to))
    assert snapshot(accumulator).model == "claude-mock-1"


# -- snapshots -----------------------------------------------------------------------


def test_snapshot_is_cached_until_an_event_changes_it() -> None:
    accumulator = fed(message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="a"))
    first = snapshot(accumulator)
    assert snapshot(accumulator) is first
    accumulator.feed(delta(0, type="text_delta", text="b"))
    second = snapshot(accumulator)
    assert second is not first
    assert (first.text, second.text) == ("a", "ab")  # an old snapshot is never changed


def test_a_read_rebuilds_only_the_block_that_grew() -> None:
    """Blocks that did not change are the last snapshot's; the growing text is the last read's text plus the new
    parts (kept as one piece between reads), and a tool input that did not change is the last one."""
    accumulator = fed(message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="Hi"))
    accumulator.feed(block_stop(0))
    accumulator.feed(block_start(1, type="text", text="> "))
    accumulator.feed(delta(1, type="text_delta", text="ab"))
    accumulator.feed(tool_block(2))
    accumulator.feed(delta(2, type="input_json_delta", partial_json='{"path": "a.md", "body": "x'))
    first = snapshot(accumulator)
    for piece in ("cd", "é", "😀"):
        accumulator.feed(delta(1, type="text_delta", text=piece))
    second = snapshot(accumulator)
    assert [block.text for block in second.content[:2]] == ["Hi", "> abcdé😀"]  # type: ignore[union-attr]
    assert second.content[0] is first.content[0] and second.content[2] is first.content[2]
    assert accumulator._blocks[1].parts == ["abcdé😀"]
    accumulator.feed(delta(2, type="input_json_delta", partial_json="yz"))  # inside the string: no new value
    third = snapshot(accumulator)
    assert third.content[2].input == {"path": "a.md"} and third.content[2] is not second.content[2]  # type: ignore[union-attr]
    assert third.content[2].input is first.content[2].input  # type: ignore[union-attr]
    assert third.content[2].input_json == '{"path": "a.md", "body": "xyz'  # type: ignore[union-attr]
    accumulator.feed(message_delta(None, output_tokens=7))
    fourth = snapshot(accumulator)
    assert fourth.usage.output_tokens == 7 and all(a is b for a, b in zip(fourth.content, third.content, strict=True))
    assert (first.content[1].text, first.content[2].input) == ("> ab", {"path": "a.md"})  # type: ignore[union-attr]


def rebuilt(events: list[dict[str, Any]]) -> streamkit.Message:
    """The snapshot after ``events`` rebuilt whole, every field validated and tool input re-parsed from the start."""
    fields: dict[str, Any] = {}
    blocks: dict[int, tuple[dict[str, Any], list[str], list[bool]]] = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            fields = dict(event["message"])
        elif kind == "message_delta":
            fields.update((k, v) for k, v in event["delta"].items() if v is not None)
            fields["usage"] = {**fields["usage"], **event["usage"]}
        elif kind == "content_block_start":
            blocks[event["index"]] = (dict(event["content_block"]), [], [False])
        elif kind == "content_block_stop":
            blocks[event["index"]][2][0] = True
        elif kind == "content_block_delta":
            block, parts, _ = blocks[event["index"]]
            piece = event["delta"]
            if piece["type"] in ("text_delta", "thinking_delta", "input_json_delta"):
                parts.append(piece.get("text", piece.get("thinking", piece.get("partial_json"))))
            elif piece["type"] == "citations_delta":
                block["citations"] = [*(block.get("citations") or []), piece["citation"]]
            else:
                block["signature"] = piece["signature"]
    content, raws = [], []
    for block, parts, (closed,) in blocks.values():
        raw = "".join(parts)
        block = dict(block)
        if block["type"] in ("text", "thinking"):
            block[block["type"]] += raw
        elif raw and closed:
            block["input"] = json.loads(raw)
        elif raw:
            try:
                value = from_json(raw, allow_partial=True)
            except ValueError:
                value = {}
            block["input"] = value if isinstance(value, dict) else {}
        content.append(block)
        raws.append(raw if block["type"] == "tool_use" else None)
    message = streamkit.Message.model_validate({**fields, "content": content})
    for block, raw in zip(message.content, raws, strict=True):
        if isinstance(block, streamkit.ToolUseBlock):
            block._partial_json = raw or ""
    return message


def test_a_snapshot_after_every_event_equals_a_whole_rebuild() -> None:
    """Read after every event (as a UI does): the incremental snapshot is the whole rebuild, field for field.

    Earlier snapshots stay as they were when read.
    """
    tool = '{"path": "caf\\u00e9/\\ud83d\\ude00.md", "n": [-1.5e3, 0, true, null], "deep": {"k": [{}]}, "s": "a\\"b"}'
    events = [message_start(), block_start(0, type="thinking", thinking="", signature="")]
    events += [delta(0, type="thinking_delta", thinking=piece) for piece in ("Let me", " think ", "é😀")]
    events += [delta(0, type="signature_delta", signature="c2ln"), block_stop(0)]
    events += [block_start(1, type="text", text="")]
    events += [delta(1, type="text_delta", text=piece) for piece in ("Hello", ", wö", "rld 😀", "")]
    events += [delta(1, type="citations_delta", citation={"type": "char_location", "cited_text": "w"})]
    events += [delta(1, type="text_delta", text=" after"), block_stop(1), tool_block(2)]
    events += [delta(2, type="input_json_delta", partial_json=tool[i : i + 3]) for i in range(0, len(tool), 3)]
    events += [block_stop(2), message_delta("tool_use", output_tokens=40), STOP]
    accumulator, seen = MessageAccumulator(), []
    for count, event in enumerate(events, 1):
        accumulator.feed(event)
        message = snapshot(accumulator)
        expected = rebuilt(events[:count])
        assert message == expected
        assert message.model_dump(exclude_unset=True) == expected.model_dump(exclude_unset=True)
        seen.append((message, message.model_dump_json(), expected))
    for message, dumped, expected in seen:  # input_json is joined when first read: here, after the whole stream
        assert message.model_dump_json() == dumped
        for block, want in zip(message.content, expected.content, strict=True):
            if isinstance(block, streamkit.ToolUseBlock):
                assert block.input_json == want.input_json  # type: ignore[union-attr]
    assert snapshot(accumulator).content[2].input == json.loads(tool)  # type: ignore[union-attr]


def test_typed_events_are_accepted_too() -> None:
    accumulator = MessageAccumulator()
    for event in (
        message_start(input_tokens=3),
        block_start(0, type="text", text=""),
        delta(0, type="text_delta", text="typed"),
        block_stop(0),
        tool_block(1),
        delta(1, type="input_json_delta", partial_json='{"k": "v"}'),
        block_stop(1),
        message_delta(output_tokens=2),
        STOP,
    ):
        accumulator.feed(streamkit.parse_event(event))
    message = snapshot(accumulator)
    assert accumulator.finished
    assert message.text == "typed"
    assert isinstance(message.content[1], streamkit.ToolUseBlock) and message.content[1].input == {"k": "v"}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 2)


# -- performance guard -------------------------------------------------------------


def timed(events: list[dict[str, Any]]) -> tuple[float, streamkit.Message]:
    began = time.perf_counter()
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.feed(event)
    message = accumulator.message
    elapsed = time.perf_counter() - began
    assert message is not None
    return elapsed, message


def test_fifty_thousand_text_deltas_are_linear() -> None:
    events = [message_start(), block_start(0, type="text", text="")]
    events += [delta(0, type="text_delta", text=f"w{i % 10} ") for i in range(50_000)]
    events += [block_stop(0), message_delta(output_tokens=50_000), STOP]
    elapsed, message = timed(events)
    print(f"\n50,000 text deltas accumulated in {elapsed * 1000:.1f} ms")
    assert message.text == "".join(f"w{i % 10} " for i in range(50_000))
    assert elapsed < 10.0


def test_fifty_thousand_tool_input_fragments_are_linear() -> None:
    document = {"values": list(range(15_000)), "label": "é" * 200}
    raw = json.dumps(document)
    bounds = [len(raw) * i // 50_000 for i in range(50_001)]
    fragments = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    assert len(fragments) == 50_000
    events = [message_start(), tool_block(0)]
    events += [delta(0, type="input_json_delta", partial_json=fragment) for fragment in fragments]
    events += [block_stop(0), message_delta("tool_use", output_tokens=50_000), STOP]
    elapsed, message = timed(events)
    print(f"\n50,000 input_json_delta fragments accumulated in {elapsed * 1000:.1f} ms")
    block = message.content[0]
    assert isinstance(block, streamkit.ToolUseBlock)
    assert block.input == document
    assert block.input_json == raw
    assert elapsed < 10.0


def test_fifty_thousand_citations_and_unknown_deltas_are_linear() -> None:
    """Each is checked alone: the block they grow is never validated whole again."""
    citations = [{"type": "char_location", "cited_text": f"c{i}"} for i in range(20_000)]
    events = [message_start(), block_start(0, type="text", text="")]
    events += [delta(0, type="citations_delta", citation=citation) for citation in citations]
    events += [block_stop(0), block_start(1, type="compaction", content="")]
    events += [delta(1, type="compaction_delta", content=f"w{i % 10} ") for i in range(30_000)]
    events += [block_stop(1), message_delta(output_tokens=50_000), STOP]
    elapsed, message = timed(events)
    print(f"\n20,000 citations and 30,000 unknown deltas accumulated in {elapsed * 1000:.1f} ms")
    text, compaction = message.content
    assert text == streamkit.TextBlock(text="", citations=citations)
    assert compaction == streamkit.UnknownBlock(
        type="compaction", content="".join(f"w{i % 10} " for i in range(30_000))
    )
    assert elapsed < 2.0


# -- caps and checks: feed refuses, message never fails --------------------------------


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_lone_surrogate_in_tool_json_is_refused_when_fed() -> None:
    accumulator = fed(message_start(), tool_block(0), delta(0, type="input_json_delta", partial_json='{"q": "a'))
    before = snapshot(accumulator)
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(delta(0, type="input_json_delta", partial_json="\ud800"))
    assert caught.value.message == (
        "cannot apply content_block_delta event: UnicodeEncodeError: "
        "'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed"
    )
    assert snapshot(accumulator) is before
    for event in (delta(0, type="input_json_delta", partial_json='"}'), block_stop(0)):
        accumulator.feed(event)
    block = snapshot(accumulator).content[0]
    assert isinstance(block, streamkit.ToolUseBlock) and block.input == {"q": "a"}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (delta(0, type="citations_delta", citation={"deep": nested(1_000)}), "PydanticSerializationError"),
        (delta(0, type="signature_delta", signature="\udfff"), "UnicodeEncodeError"),
        (delta(0, type="mystery_delta", extra=object()), "PydanticSerializationError"),
    ],
)
def test_a_value_json_cannot_hold_is_refused_when_fed(event: dict[str, Any], reason: str) -> None:
    """Nothing that could not be sent back in the next request is taken in."""
    accumulator = fed(message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="ok"))
    before = snapshot(accumulator)
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(event)
    assert caught.value.message.startswith(f"cannot apply content_block_delta event: {reason}: ")
    assert snapshot(accumulator) is before


def test_citations_after_a_field_that_is_not_a_list_are_refused() -> None:
    accumulator = fed(message_start(), block_start(0, type="compaction", citations="none"))
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(delta(0, type="citations_delta", citation={"a": 1}))
    assert (
        caught.value.message
        == "cannot apply content_block_delta event: TypeError: the block's citations are str, not a list"
    )
    assert snapshot(accumulator).content == [streamkit.UnknownBlock(type="compaction", citations="none")]


def test_an_event_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(streamkit.ProtocolError) as caught:
        MessageAccumulator().feed(["content_block_delta"])  # type: ignore[arg-type]
    assert caught.value.message == "an event is list, not an object"


TEXT_BLOCK_JSON = len('{"type":"text","text":""}')


@pytest.mark.parametrize(
    "growth",
    [
        delta(0, type="text_delta", text="é" * 6),  # 12 bytes in UTF-8
        delta(0, type="thinking_delta", thinking="x" * 12),
        delta(0, type="signature_delta", signature="x" * 12),
        delta(0, type="citations_delta", citation={"a": "bcd"}),  # {"a":"bcd"}: 11 bytes
        delta(0, type="mystery_delta", text="x" * 12),
    ],
    ids=["text", "thinking", "signature", "citation", "unknown"],
)
def test_the_reply_is_capped_in_bytes_as_it_grows(growth: dict[str, Any]) -> None:
    cap = TEXT_BLOCK_JSON + 20
    accumulator = MessageAccumulator(max_reply_bytes=cap)
    for event in (message_start(), block_start(0, type="text", text=""), delta(0, type="text_delta", text="x" * 10)):
        accumulator.feed(event)
    before = snapshot(accumulator)
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(growth)
    assert type(caught.value) is streamkit.ProtocolError
    assert caught.value.message == f"the reply holds more than max_reply_bytes={cap} bytes of content: refused"
    assert snapshot(accumulator) is before
    accumulator.feed(delta(0, type="text_delta", text="y" * 10))  # exactly at the cap: fine
    assert snapshot(accumulator).text == "x" * 10 + "y" * 10


def test_a_large_block_counts_when_it_starts_and_a_dropped_one_no_more() -> None:
    result = {"type": "web_fetch_tool_result", "content": "z" * 1000}
    size = len(json.dumps(result, separators=(",", ":")))
    accumulator = MessageAccumulator(max_reply_bytes=size + TEXT_BLOCK_JSON)
    for event in (message_start(), block_start(0, **result), block_stop(0), block_start(1, type="text", text="")):
        accumulator.feed(event)
    with pytest.raises(streamkit.ProtocolError):
        accumulator.feed(delta(1, type="text_delta", text="x"))
    accumulator.truncate(1)  # a resume drops block 1: its bytes no longer count
    accumulator.feed(block_start(1, type="text", text=""))
    with pytest.raises(streamkit.ProtocolError):
        accumulator.feed(block_start(2, **result))


def test_the_reply_is_capped_in_blocks() -> None:
    accumulator = MessageAccumulator(max_blocks=2)
    accumulator.feed(message_start())
    for index in range(2):
        accumulator.feed(block_start(index, type="text", text=""))
    accumulator.feed(block_start(1, type="text", text="again"))  # the same index replaces: still two
    with pytest.raises(streamkit.ProtocolError) as caught:
        accumulator.feed(block_start(2, type="text", text=""))
    assert caught.value.message == "the reply holds more than max_blocks=2 content blocks: refused"
    assert snapshot(accumulator).content == [streamkit.TextBlock(text=""), streamkit.TextBlock(text="again")]
    with pytest.raises(streamkit.ProtocolError):
        MessageAccumulator(max_blocks=2).feed(
            {"type": "message_start", "message": {**MESSAGE, "content": [{"type": "text", "text": ""}] * 3}}
        )
