"""Resume after the stream started: the user sees one seamless reply.

Every scenario compares, character for character, with the same reply delivered
without a fault (``TEXT``), on asyncio and trio, through the loopback MockServer.
``TEXT`` is streamed in 7-character deltas so that cuts fall mid-word.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from conftest import STALL, WORLD, client_for, in_thread, sync_client_for

import streamkit
from streamkit import ResumeInfo, RetryInfo
from streamkit._resume import CONTINUE_PROMPT
from streamkit._transport import ShardedTransport
from streamkit.testing import Fault, MockServer, Reply, TextBlock, ThinkingBlock, lorem

pytestmark = pytest.mark.anyio
BOTH_WORLDS = ("run",)  # tests that stream through run() also run on the sync client (conftest.py)

TEXT = lorem(3000, seed=5)
CHUNK = 7
N_DELTAS = math.ceil(len(TEXT) / CHUNK)  # events: message_start, block start, deltas, block stop, delta, stop
USER = [{"role": "user", "content": "Write a long story."}]
CLEAN = Reply.text(TEXT, chunk_size=CHUNK, request_id="req_second")
PREFILL_REJECTED = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


def kept(after: int) -> str:
    """The text a stream cut after ``after`` events (message_start and block start count) delivered."""
    return TEXT[: (after - 2) * CHUNK]


def faulty(kind: str, after: int, *, fault: dict[str, Any] | None = None, **reply: Any) -> Reply:
    reply.setdefault("request_id", "req_first")
    return Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind, after=after, **(fault or {})), **reply)  # type: ignore[arg-type]


def continuation_tokens(start: int) -> int:
    """Output tokens the mock reports for a continuation that starts at TEXT[start]."""
    return math.ceil((len(TEXT) - start) / CHUNK)


@dataclass
class Run:
    stream: streamkit.MessageStream | streamkit.SyncMessageStream
    message: streamkit.Message
    streamed: str
    server: MockServer
    pieces: list[str] = field(default_factory=list)
    hooked_resumes: list[ResumeInfo] = field(default_factory=list)
    hooked_retries: list[RetryInfo] = field(default_factory=list)


async def run(*replies: Reply, client: dict[str, Any] | None = None, **call: Any) -> Run:
    """Stream through ``replies`` reading text_stream, then get_final_message()."""
    pieces: list[str] = []
    resumes: list[ResumeInfo] = []
    retries: list[RetryInfo] = []
    hooks: dict[str, Any] = {"on_text": pieces.append, "on_resume": resumes.append, "on_retry": retries.append}
    request: dict[str, Any] = {"model": "m", "max_tokens": 4096, "messages": USER, **hooks, **call}
    async with MockServer(*replies) as server:
        if WORLD.sync:

            def consume() -> tuple[streamkit.SyncMessageStream, streamkit.Message, str]:
                with sync_client_for(server, **(client or {})) as sk, sk.messages.stream(**request) as stream:
                    streamed = "".join(stream.text_stream)
                    return stream, stream.get_final_message(), streamed

            sync_stream, message, streamed = await in_thread(consume)
            return Run(sync_stream, message, streamed, server, pieces, resumes, retries)
        async with client_for(server, **(client or {})) as sk, sk.messages.stream(**request) as stream:
            streamed = "".join([text async for text in stream.text_stream])
            message = await stream.get_final_message()
    return Run(stream, message, streamed, server, pieces, resumes, retries)


def assert_whole(result: Run, text: str = TEXT) -> None:
    assert result.streamed == text
    assert "".join(result.pieces) == text
    assert result.message.text == text
    assert [block.type for block in result.message.content] == ["text"]
    assert result.message.stop_reason == "end_turn"


# -- the done-when scenarios ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fault", "cause"),
    [
        ("error", {}, streamkit.OverloadedError),
        ("error", {"error_type": "api_error", "message": "Internal server error"}, streamkit.InternalServerError),
        ("error", {"error_type": "rate_limit_error", "message": "slow down"}, streamkit.RateLimitError),
        ("cut", {}, streamkit.ConnectionLostError),
        ("truncate", {}, streamkit.IncompleteStreamError),
        ("stall", {"ping_interval": 0.05}, streamkit.StallError),
        ("hang", {}, streamkit.StallError),
    ],
    ids=["overloaded", "api_error", "rate_limit", "cut", "no-message_stop", "stall-pings", "stall-silence"],
)
async def test_resumed_reply_equals_the_uninterrupted_one(
    kind: str, fault: dict[str, Any], cause: type[streamkit.StreamkitError]
) -> None:
    result = await run(faulty(kind, 40, fault=fault), CLEAN, stall_timeout=STALL)
    assert_whole(result)
    stream, server = result.stream, result.server
    [info] = stream.resumes
    if kind == "error":
        assert isinstance(info.cause, streamkit.StreamError) and isinstance(info.cause, cause)
        assert (info.cause.error_type, info.cause.message) == (
            fault.get("error_type", "overloaded_error"),
            fault.get("message", "Overloaded"),
        )
        assert info.cause.request_id == "req_first"
    else:
        assert type(info.cause) is cause
    assert info == ResumeInfo(1, info.cause, "prefill", "req_first", "req_second", 38 * CHUNK, None)
    assert result.hooked_resumes == stream.resumes
    assert stream.retries == [] and result.hooked_retries == []
    assert stream.request_id == "req_second"
    # the prefill: the same request, the partial text (no trailing whitespace) as the last turn
    assert len(server.requests) == 2
    sent = kept(40).rstrip()
    assert server.requests[1].json == {
        **server.requests[0].json,
        "messages": [*USER, {"role": "assistant", "content": sent}],
    }
    # usage sums both attempts
    assert result.message.usage.input_tokens == 10 + 10
    assert result.message.usage.output_tokens == 1 + continuation_tokens(len(sent))


SEAMS = [3, 4, 5, 10, 37, 59, 100, 156, 211, 259, 288, 430]
# 4: the kept text ends in a space; 59 and 211 in "\n\n"; 259 between the two "\n"; 156 and 288 just before "\n"


@pytest.mark.parametrize("after", [*SEAMS, N_DELTAS + 2, N_DELTAS + 3, N_DELTAS + 4])
async def test_every_seam_with_prefill(after: int) -> None:
    result = await run(faulty("cut", after), CLEAN, resume="prefill")
    assert_whole(result)
    [info] = result.stream.resumes
    assert (info.strategy, info.kept_chars) == ("prefill", len(kept(after)))
    assert result.server.requests[1].json["messages"][-1] == {"role": "assistant", "content": kept(after).rstrip()}


@pytest.mark.parametrize("after", SEAMS)
async def test_every_seam_with_continue_and_repeated_words(after: int) -> None:
    again = Reply.text(TEXT, chunk_size=CHUNK, repeat_words=3, request_id="req_second")
    result = await run(faulty("cut", after), again, resume="continue")
    assert_whole(result)
    [info] = result.stream.resumes
    assert (info.strategy, info.kept_chars) == ("continue", len(kept(after)))
    assert result.server.requests[1].json["messages"] == [
        *USER,
        {"role": "assistant", "content": kept(after).rstrip()},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]


def test_seam_positions_are_what_they_claim() -> None:
    assert kept(4).endswith(" ") and not kept(4).endswith("  ")
    assert kept(59).endswith(".\n\n") and kept(211).endswith(".\n\n")
    assert kept(259).endswith(".\n") and TEXT[len(kept(259))] == "\n"
    assert TEXT[len(kept(156))] == "\n" and TEXT[len(kept(288))] == "\n"


async def test_a_cut_after_a_delta_ending_in_a_space_gives_exactly_one_space() -> None:
    assert kept(4) == "Get quiet now " and TEXT.startswith("Get quiet now large")
    for strategy, repeat in (("prefill", 0), ("continue", 3), ("continue", 0)):
        again = Reply.text(TEXT, chunk_size=CHUNK, repeat_words=repeat)
        result = await run(faulty("cut", 4), again, resume=strategy)
        assert result.message.text[:30] == TEXT[:30]
        assert_whole(result)


WS_TEXT = "Hello world.  Two spaces here.\n\nPara two\tTab stop.\n \n Odd gap end, and  two spaces to finish."


def ws_positions() -> list[int]:
    """Cut points (events, 1-char deltas) next to whitespace in WS_TEXT."""
    return [k + 2 for k in range(1, len(WS_TEXT)) if WS_TEXT[k - 1].isspace() or WS_TEXT[k].isspace()]


@pytest.mark.parametrize(("strategy", "repeat"), [("prefill", 0), ("continue", 1), ("continue", 3)])
async def test_whitespace_at_the_seam(strategy: str, repeat: int) -> None:
    """Runs of whitespace split across deltas: every cut next to one must give the text back exactly."""
    wrong: list[int] = []  # the cut points that did not give WS_TEXT back
    async with MockServer() as server, client_for(server, resume=strategy) as sk:
        for after in ws_positions():
            server.push(
                Reply.text(WS_TEXT, chunk_size=1, fault=Fault("cut", after=after)),
                Reply.text(WS_TEXT, chunk_size=1, repeat_words=repeat),
            )
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                text = await stream.get_final_text()
            assert [info.strategy for info in stream.resumes] == [strategy]
            if text != WS_TEXT:
                wrong.append(after)
    assert wrong == []


SYMBOL_TEXT = "🧪🎉🌍🌍🌍🚀🚀 ok, a a b 本漢测测字 éé ?? öö yes?? Done!!"


async def test_a_continue_seam_between_repeated_characters() -> None:
    """A continuation that starts with the character the kept text ends with is not a repeat of it.

    Found by the chaos soak: "🧪🎉🌍🌍" + "🌍🚀🚀" lost one 🌍.  Every cut, no repeat sent.
    (The price: a model that restarts a word after its first character leaves that
    character doubled; see README, Retries and resumes.)
    """
    wrong: list[tuple[int, str]] = []
    async with MockServer() as server, client_for(server, resume="continue") as sk:
        for after in range(3, len(SYMBOL_TEXT) + 2):
            server.push(
                Reply.text(SYMBOL_TEXT, chunk_size=1, fault=Fault("cut", after=after)),
                Reply.text(SYMBOL_TEXT, chunk_size=1),
            )
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                text = await stream.get_final_text()
            assert [info.strategy for info in stream.resumes] == ["continue"]
            if text != SYMBOL_TEXT:
                wrong.append((after, text))
    assert wrong == []


# -- strategies -------------------------------------------------------------------------------


async def test_continue_request_and_overlap_removal() -> None:
    again = Reply.text(TEXT, chunk_size=CHUNK, repeat_words=3, request_id="req_second")
    params: dict[str, Any] = {"system": "Be brief.", "temperature": 0.5, "metadata": {"user_id": "u1"}}
    result = await run(faulty("error", 50), again, resume="continue", extra_headers={"x-trace": "t-1"}, **params)
    assert_whole(result)
    first, second = result.server.requests
    assert second.json == {
        **first.json,
        "messages": [
            *USER,
            {"role": "assistant", "content": kept(50).rstrip()},
            {"role": "user", "content": CONTINUE_PROMPT},
        ],
    }
    assert (first.json["system"], first.json["temperature"], first.json["metadata"]) == (
        "Be brief.",
        0.5,
        {"user_id": "u1"},
    )
    assert first.headers["x-trace"] == second.headers["x-trace"] == "t-1"
    [info] = result.stream.resumes
    assert info == ResumeInfo(1, info.cause, "continue", "req_first", "req_second", 48 * CHUNK, None)
    # the continuation restarted three words early: its tokens count although the repeat was dropped
    repeat_from = [match.start() for match in re.finditer(r"\S+", kept(50).rstrip())][-3]
    assert result.message.usage.output_tokens == 1 + continuation_tokens(repeat_from)
    assert result.message.usage.input_tokens == 20


async def test_per_stream_resume_overrides_the_client() -> None:
    async with MockServer(faulty("cut", 30), CLEAN) as server, client_for(server, resume=False) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER, resume="continue") as stream:
            assert await stream.get_final_text() == TEXT
        assert [info.strategy for info in stream.resumes] == ["continue"]
        assert server.requests[1].json["messages"][-1] == {"role": "user", "content": CONTINUE_PROMPT}

        server.push(faulty("cut", 30), CLEAN)
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER, resume="prefill") as stream:
            assert await stream.get_final_text() == TEXT
        assert [info.strategy for info in stream.resumes] == ["prefill"]

        server.push(faulty("cut", 30), CLEAN)
        with pytest.raises(streamkit.ConnectionLostError):
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_text()
        assert len(server.requests) == 5


@pytest.mark.parametrize("after", [40, 211])
async def test_auto_falls_back_to_continue_when_prefill_is_rejected(after: int) -> None:
    """Done-when: a model that rejects prefill; the 400 is never surfaced, the client remembers."""
    rejecting = {"reject_prefill": True, "repeat_words": 3}
    first = faulty("error", after, reject_prefill=True)
    refusal = Reply.text(TEXT, chunk_size=CHUNK, **rejecting)  # answers the prefill with the 400
    again = Reply.text(TEXT, chunk_size=CHUNK, request_id="req_third", **rejecting)
    errors: list[BaseException] = []
    pieces: list[str] = []
    async with MockServer(first, refusal, again) as server, client_for(server) as sk:
        async with sk.messages.stream(
            model="m", max_tokens=99, messages=USER, on_text=pieces.append, on_error=errors.append
        ) as stream:
            message = await stream.get_final_message()
        assert message.text == TEXT and "".join(pieces) == TEXT
        assert errors == [] and stream.retries == []
        [info] = stream.resumes
        assert info == ResumeInfo(1, info.cause, "continue", "req_first", "req_third", len(kept(after)), None)
        sent = kept(after).rstrip()
        assert [r.json["messages"] for r in server.requests] == [
            USER,
            [*USER, {"role": "assistant", "content": sent}],
            [*USER, {"role": "assistant", "content": sent}, {"role": "user", "content": CONTINUE_PROMPT}],
        ]
        assert message.usage.input_tokens == 20  # the refused prefill produced no tokens

        # a later stream of the same client goes straight to continue
        server.push(faulty("cut", 30, reject_prefill=True), Reply.text(TEXT, chunk_size=CHUNK, **rejecting))
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
            assert await stream.get_final_text() == TEXT
        assert [info.strategy for info in stream.resumes] == ["continue"]
        assert len(server.requests) == 5
        assert server.requests[4].json["messages"] == [
            *USER,
            {"role": "assistant", "content": kept(30).rstrip()},
            {"role": "user", "content": CONTINUE_PROMPT},
        ]


async def test_after_the_fallback_a_second_resume_of_the_stream_goes_straight_to_continue() -> None:
    rejecting = {"reject_prefill": True, "repeat_words": 3}
    replies = [
        faulty("cut", 20, reject_prefill=True),
        Reply.text(TEXT, chunk_size=CHUNK, **rejecting),  # the refused prefill
        Reply.text(TEXT, chunk_size=CHUNK, fault=Fault("error", after=20), **rejecting),
        Reply.text(TEXT, chunk_size=CHUNK, **rejecting),
    ]
    result = await run(*replies)
    assert_whole(result)
    assert [(info.attempt, info.strategy) for info in result.stream.resumes] == [(1, "continue"), (2, "continue")]
    assert [len(r.json["messages"]) for r in result.server.requests] == [1, 2, 3, 3]
    assert result.message.usage.input_tokens == 30


async def test_a_new_client_tries_prefill_again() -> None:
    rejecting = {"reject_prefill": True, "repeat_words": 3}
    replies = [faulty("cut", 20, reject_prefill=True), Reply.text(TEXT, chunk_size=CHUNK, **rejecting)]
    for _ in range(2):
        result = await run(*replies, Reply.text(TEXT, chunk_size=CHUNK, **rejecting))
        assert_whole(result)
        assert [len(r.json["messages"]) for r in result.server.requests] == [1, 2, 3]


async def test_explicit_prefill_surfaces_the_refusal() -> None:
    replies = [faulty("cut", 30, reject_prefill=True), Reply.text(TEXT, reject_prefill=True)]
    async with MockServer(*replies) as server, client_for(server, resume="prefill") as sk:
        with pytest.raises(streamkit.InvalidRequestError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 2
    error = caught.value
    assert isinstance(error, streamkit.APIStatusError) and error.status_code == 400
    assert error.message == PREFILL_REJECTED
    assert error.partial_message is not None and error.partial_message.text == kept(30)


@pytest.mark.parametrize("resume", ["auto", "prefill"])
async def test_thinking_never_uses_prefill(resume: str) -> None:
    thought = "I should write a long story."  # 4 thinking deltas + the signature
    blocks: list[Any] = [ThinkingBlock(thought, signature="sig_A"), TextBlock(TEXT, chunk_size=CHUNK)]
    first = Reply(blocks=blocks, fault=Fault("cut", after=40), request_id="req_first")
    again = Reply(blocks=blocks, repeat_words=3)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    result = await run(first, again, resume=resume, thinking=thinking)
    delivered = TEXT[: (40 - 9) * CHUNK]  # message_start, start, 4 deltas, signature, stop, start
    assert result.streamed == TEXT == "".join(result.pieces)
    assert [block.model_dump() for block in result.message.content] == [
        {"type": "thinking", "thinking": thought, "signature": "sig_A"},
        {"type": "text", "text": TEXT, "citations": None},
    ]
    [info] = result.stream.resumes
    assert (info.strategy, info.kept_chars, info.dropped_block) == ("continue", len(delivered), None)
    assert result.server.requests[1].json == {
        **result.server.requests[0].json,
        "messages": [
            *USER,
            {"role": "assistant", "content": delivered.rstrip()},
            {"role": "user", "content": CONTINUE_PROMPT},
        ],
    }
    assert result.server.requests[1].json["thinking"] == thinking


@pytest.mark.parametrize("repeat", [0, 3])
async def test_a_continue_turn_that_thinks_again_extends_the_cut_text_block(repeat: int) -> None:
    """The continuation opens with a new thinking block: it is left out, the cut text block goes on."""
    thought = "I should write a long story."  # 4 thinking deltas + the signature
    blocks: list[Any] = [ThinkingBlock(thought, signature="sig_A"), TextBlock(TEXT, chunk_size=CHUNK)]
    first = Reply(blocks=blocks, fault=Fault("error", after=40), request_id="req_first")
    again = Reply(blocks=blocks, repeat_words=repeat, request_id="req_second")
    thinking = {"type": "enabled", "budget_tokens": 1024}
    seen: list[tuple[str, int | None, str | None]] = []
    async with MockServer(first, again) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=4096, messages=USER, thinking=thinking) as stream:
            async for event in stream:
                if isinstance(event, streamkit.ContentBlockStartEvent):
                    seen.append(("start", event.index, event.content_block.type))
                elif isinstance(event, streamkit.ContentBlockDeltaEvent):
                    seen.append((event.delta.type, event.index, None))
                elif isinstance(event, streamkit.ContentBlockStopEvent):
                    seen.append(("stop", event.index, None))
            message = await stream.get_final_message()
    assert message.text == TEXT
    assert [block.model_dump() for block in message.content] == [
        {"type": "thinking", "thinking": thought, "signature": "sig_A"},
        {"type": "text", "text": TEXT, "citations": None},
    ]
    starts = [entry for entry in seen if entry[0] == "start"]
    assert starts == [("start", 0, "thinking"), ("start", 1, "text")]
    assert [entry for entry in seen if entry[0] == "stop"] == [("stop", 0, None), ("stop", 1, None)]
    assert {entry[1] for entry in seen if entry[0] == "text_delta"} == {1}
    assert [entry[0] for entry in seen].count("signature_delta") == 1
    [info] = stream.resumes
    assert (info.strategy, info.kept_chars) == ("continue", len(TEXT[: (40 - 9) * CHUNK]))
    # the second turn's thinking is not in the reply, but its tokens are paid for and counted
    if not repeat:
        rethought = 4 + 1  # thinking deltas and the signature
        assert message.usage.output_tokens == 1 + rethought + continuation_tokens(
            len(TEXT[: (40 - 9) * CHUNK].rstrip())
        )


TOOL_TEXT = "Let me check the weather in Paris."  # 5 deltas of 8
TOOL_INPUT = {"city": "Paris", "units": "celsius", "days": [1, 2, 3], "note": "rain, maybe \u00e9t\u00e9"}


@pytest.mark.parametrize("kind", ["cut", "error"])
@pytest.mark.parametrize("rejects_prefill", [False, True], ids=["prefill", "continue"])
async def test_failure_inside_a_tool_use_block(kind: Literal["cut", "error"], rejects_prefill: bool) -> None:
    # events: message_start, text start, 5 deltas, text stop, tool start, input deltas ...
    options: dict[str, Any] = {"tool_id": "toolu_01Weather", "reject_prefill": rejects_prefill}
    first = Reply.tool_use(
        "get_weather", TOOL_INPUT, text=TOOL_TEXT, fault=Fault(kind, after=12), request_id="req_1", **options
    )
    refusal = Reply.tool_use("get_weather", TOOL_INPUT, text=TOOL_TEXT, **options)
    again = Reply.tool_use("get_weather", TOOL_INPUT, text=TOOL_TEXT, repeat_words=3, request_id="req_2", **options)
    replies = [first, refusal, again] if rejects_prefill else [first, again]
    tool_json: list[str] = []
    result = await run(*replies, on_tool_input=tool_json.append)
    message = result.message
    assert result.streamed == TOOL_TEXT
    assert [block.model_dump() for block in message.content] == [
        {"type": "text", "text": TOOL_TEXT, "citations": None},
        {"type": "tool_use", "id": "toolu_01Weather", "name": "get_weather", "input": TOOL_INPUT},
    ]
    assert message.stop_reason == "tool_use"
    [info] = result.stream.resumes
    strategy: Literal["prefill", "continue"] = "continue" if rejects_prefill else "prefill"
    assert info == ResumeInfo(1, info.cause, strategy, "req_1", "req_2", len(TOOL_TEXT), "tool_use")
    assert result.server.requests[-1].json["messages"][:2] == [*USER, {"role": "assistant", "content": TOOL_TEXT}]
    assert message.usage.input_tokens == 20


async def test_a_user_prefill_is_extended_by_a_resume() -> None:
    opening = "Once upon"
    whole = opening + " a time" + TEXT[6:]  # the reply continues the user's prefill
    first = Reply.text(whole, chunk_size=CHUNK, fault=Fault("cut", after=30))
    again = Reply.text(whole, chunk_size=CHUNK)
    messages = [*USER, {"role": "assistant", "content": opening}]
    async with MockServer(first, again) as server, client_for(server, resume="prefill") as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=messages) as stream:
            text = await stream.get_final_text()
        delivered = whole[len(opening) :][: 28 * CHUNK]
        assert server.requests[1].json["messages"] == [
            *USER,
            {"role": "assistant", "content": (opening + delivered).rstrip()},
        ]
    assert text == whole[len(opening) :]
    assert stream.resumes[0].kept_chars == len(delivered)


async def test_a_user_prefill_with_continue_and_a_repeat_reaching_into_it() -> None:
    """The model repeats words that began in the user's own prefill: they are a repeat too."""
    opening = "Once upon"
    whole = "Once upon a time there was a small river near the quiet garden."
    first = Reply.text(whole, chunk_size=3, fault=Fault("cut", after=3))  # delivered: " a "
    again = Reply.text(whole, chunk_size=3, repeat_words=3)
    messages = [*USER, {"role": "assistant", "content": opening}]
    async with MockServer(first, again) as server, client_for(server, resume="continue") as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=messages) as stream:
            text = await stream.get_final_text()
        assert server.requests[1].json["messages"] == [
            *USER,
            {"role": "assistant", "content": "Once upon a"},
            {"role": "user", "content": CONTINUE_PROMPT},
        ]
    assert text == whole[len(opening) :]


# -- what the user sees is one stream ----------------------------------------------------


@pytest.mark.parametrize("resume", ["prefill", "continue"])
async def test_the_events_form_one_stream(resume: str) -> None:
    events: list[streamkit.StreamEvent] = []
    again = Reply.text(TEXT, chunk_size=CHUNK, repeat_words=3)
    replies = [faulty("cut", 37), faulty("error", 60, repeat_words=3), again]
    result = await run(*replies, resume=resume, on_event=events.append)
    assert_whole(result)
    kinds = [event.type for event in events]
    assert kinds.count("message_start") == 1 and kinds[0] == "message_start"
    assert kinds.count("message_stop") == 1 and kinds[-1] == "message_stop"
    assert [e.index for e in events if isinstance(e, streamkit.ContentBlockStartEvent)] == [0]
    assert [e.index for e in events if isinstance(e, streamkit.ContentBlockStopEvent)] == [0]
    deltas = [e for e in events if isinstance(e, streamkit.ContentBlockDeltaEvent)]
    assert {e.index for e in deltas} == {0}
    assert "".join(e.delta.text for e in deltas if isinstance(e.delta, streamkit.TextDelta)) == TEXT
    assert [info.attempt for info in result.stream.resumes] == [1, 2]
    assert result.hooked_resumes == result.stream.resumes


async def test_two_resumes_chain_request_ids_and_sum_usage() -> None:
    replies = [
        faulty("cut", 40, request_id="req_a"),
        faulty("error", 30, request_id="req_b"),
        Reply.text(TEXT, chunk_size=CHUNK, request_id="req_c"),
    ]
    result = await run(*replies)
    assert_whole(result)
    sent1 = kept(40).rstrip()
    merged = TEXT[: len(sent1) + 28 * CHUNK]
    first, second = result.stream.resumes
    assert (first.attempt, type(first.cause), first.failed_request_id, first.request_id, first.kept_chars) == (
        1,
        streamkit.ConnectionLostError,
        "req_a",
        "req_b",
        len(kept(40)),
    )
    assert (second.attempt, second.failed_request_id, second.request_id, second.kept_chars) == (
        2,
        "req_b",
        "req_c",
        len(merged),
    )
    assert isinstance(second.cause, streamkit.OverloadedError) and second.cause.request_id == "req_b"
    assert result.server.requests[2].json["messages"][-1] == {"role": "assistant", "content": merged.rstrip()}
    assert result.message.usage.input_tokens == 30
    assert result.message.usage.output_tokens == 2 + continuation_tokens(len(merged.rstrip()))


async def test_on_resume_may_be_async() -> None:
    seen: list[ResumeInfo] = []

    async def on_resume(info: ResumeInfo) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(info)

    async with MockServer(faulty("cut", 20), CLEAN) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER, on_resume=on_resume) as stream:
            assert await stream.get_final_text() == TEXT
    assert seen == stream.resumes and len(seen) == 1


# -- no content yet: a plain retry -------------------------------------------------------------


@pytest.mark.parametrize("after", [1, 2])
@pytest.mark.parametrize("kind", ["error", "cut"])
async def test_no_content_yet_is_a_plain_retry(kind: str, after: int) -> None:
    result = await run(faulty(kind, after), CLEAN)
    assert_whole(result)
    assert result.stream.resumes == [] and result.hooked_resumes == []
    [info] = result.stream.retries
    assert result.hooked_retries == [info]
    assert info.attempt == 1 and 0.0 <= info.delay <= 0.01
    expected = streamkit.OverloadedError if kind == "error" else streamkit.ConnectionLostError
    assert isinstance(info.error, expected)
    first, second = result.server.requests
    assert second.body == first.body


async def test_plain_retry_usage_counts_both_attempts() -> None:
    """Usage sums every attempt: the failed one was billed its input tokens too."""
    result = await run(faulty("error", 2), CLEAN)
    assert_whole(result)
    assert result.message.usage.input_tokens == 20


async def test_a_plain_retry_is_recorded_even_when_its_request_fails() -> None:
    retries: list[RetryInfo] = []
    async with MockServer(faulty("error", 2), Reply.error(400, message="nope")) as server, client_for(server) as sk:
        stream = sk.messages.stream(model="m", max_tokens=99, messages=USER, on_retry=retries.append)
        with pytest.raises(streamkit.InvalidRequestError):
            async with stream:
                await stream.get_final_message()
        assert len(server.requests) == 2
    kinds = [
        (isinstance(i.error, streamkit.StreamError), isinstance(i.error, streamkit.OverloadedError)) for i in retries
    ]
    assert kinds == [(True, True)]
    assert stream.retries == retries


async def test_retries_are_recorded_in_the_order_they_happened() -> None:
    replies = [faulty("error", 2), Reply.error(529), CLEAN]
    result = await run(*replies)
    assert_whole(result)
    phases = [
        (isinstance(i.error, streamkit.StreamError), isinstance(i.error, streamkit.APIStatusError))
        for i in result.stream.retries
    ]
    assert phases == [(True, False), (False, True)]  # the stream's overload came first, then the 529
    assert result.hooked_retries == result.stream.retries


async def test_plain_retries_run_out() -> None:
    replies = [faulty("error", 2), faulty("error", 2), faulty("error", 2, request_id="req_last")]
    async with MockServer(*replies, CLEAN) as server, client_for(server) as sk:
        with pytest.raises(streamkit.OverloadedError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 3
    assert isinstance(caught.value, streamkit.StreamError)
    assert caught.value.request_id == "req_last"
    assert len(stream.retries) == 2 and stream.resumes == []
    assert caught.value.partial_message is not None and caught.value.partial_message.text == ""


# -- resume requests that fail before their stream --------------------------------------------


async def test_the_resume_request_is_retried() -> None:
    result = await run(faulty("cut", 30), Reply.error(529, request_id="req_busy"), CLEAN)
    assert_whole(result)
    [retry] = result.stream.retries
    assert isinstance(retry.error, streamkit.APIStatusError) and retry.error.request_id == "req_busy"
    [resume] = result.stream.resumes
    assert (resume.failed_request_id, resume.request_id) == ("req_first", "req_second")
    assert len(result.server.requests) == 3
    assert result.server.requests[1].body == result.server.requests[2].body


async def test_the_resume_request_runs_out_of_retries() -> None:
    replies = [faulty("cut", 30), Reply.error(529), Reply.error(529), Reply.error(529, request_id="req_last")]
    async with MockServer(*replies, CLEAN) as server, client_for(server) as sk:
        with pytest.raises(streamkit.OverloadedError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 4
    error = caught.value
    assert isinstance(error, streamkit.APIStatusError) and error.request_id == "req_last"
    assert error.partial_message is not None and error.partial_message.text == kept(30)
    assert len(stream.retries) == 2 and stream.resumes == []


# -- limits and opting out -------------------------------------------------------------------


async def test_max_resumes_exhausted_raises_the_last_error_with_the_merged_text() -> None:
    replies = [faulty("cut", 20), faulty("cut", 10, request_id="req_b"), faulty("error", 10, request_id="req_c")]
    async with MockServer(*replies, CLEAN) as server, client_for(server, max_resumes=2) as sk:
        with pytest.raises(streamkit.OverloadedError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 3
    error = caught.value
    assert isinstance(error, streamkit.StreamError) and error.request_id == "req_c"
    merged1 = TEXT[: len(kept(20).rstrip()) + 8 * CHUNK]
    merged2 = TEXT[: len(merged1.rstrip()) + 8 * CHUNK]
    assert [info.kept_chars for info in stream.resumes] == [len(kept(20)), len(merged1)]
    assert error.partial_message is not None and error.partial_message.text == merged2


async def test_per_call_max_resumes() -> None:
    replies = [faulty("cut", 20), faulty("truncate", 10)]
    async with MockServer(*replies, CLEAN) as server, client_for(server) as sk:
        with pytest.raises(streamkit.IncompleteStreamError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER, max_resumes=1) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 2
    assert type(caught.value) is streamkit.IncompleteStreamError
    assert len(stream.resumes) == 1
    assert caught.value.partial_message is not None
    assert caught.value.partial_message.text == TEXT[: len(kept(20).rstrip()) + 8 * CHUNK]


async def test_max_resumes_zero() -> None:
    async with MockServer(faulty("cut", 25), CLEAN) as server, client_for(server, max_resumes=0) as sk:
        with pytest.raises(streamkit.ConnectionLostError) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 1
    assert caught.value.partial_message is not None and caught.value.partial_message.text == kept(25)
    assert stream.resumes == []


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("error", streamkit.OverloadedError),
        ("cut", streamkit.ConnectionLostError),
        ("truncate", streamkit.IncompleteStreamError),
        ("stall", streamkit.StallError),
    ],
)
async def test_resume_disabled_raises_the_raw_error(kind: str, error: type[streamkit.StreamkitError]) -> None:
    async with MockServer(faulty(kind, 30), CLEAN) as server, client_for(server, resume=False) as sk:
        with pytest.raises(error) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER, stall_timeout=STALL) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 1
    if kind == "error":
        assert isinstance(caught.value, streamkit.StreamError)
    else:
        assert type(caught.value) is error
    assert caught.value.request_id == "req_first"
    assert caught.value.partial_message is not None and caught.value.partial_message.text == kept(30)
    assert stream.resumes == [] and stream.retries == []


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("invalid_request_error", streamkit.InvalidRequestError), ("authentication_error", streamkit.AuthenticationError)],
)
async def test_other_stream_errors_are_not_resumed(error_type: str, kind: type[streamkit.APIError]) -> None:
    first = faulty("error", 30, fault={"error_type": error_type, "message": "no"})
    async with MockServer(first, CLEAN) as server, client_for(server) as sk:
        with pytest.raises(kind) as caught:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 1
    assert isinstance(caught.value, streamkit.StreamError) and caught.value.error_type == error_type
    assert caught.value.partial_message is not None and caught.value.partial_message.text == kept(30)
    assert stream.resumes == [] and stream.retries == []


async def test_malformed_events_are_not_resumed() -> None:
    async with MockServer(faulty("malformed", 30), CLEAN) as server, client_for(server) as sk:
        with pytest.raises(streamkit.ProtocolError):
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                await stream.get_final_message()
        assert len(server.requests) == 1
    assert stream.resumes == []


# -- the stall watchdog ---------------------------------------------------------------------------


async def test_stall_timeout_per_call_overrides_the_client() -> None:
    result = await run(faulty("stall", 25), CLEAN, client={"stall_timeout": 120.0}, stall_timeout=STALL)
    assert_whole(result)
    [info] = result.stream.resumes
    assert type(info.cause) is streamkit.StallError and info.kept_chars == len(kept(25))


class _HiddenStreamTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport whose responses do not say they come from httpcore (as a third-party one)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        response.extensions = {k: v for k, v in response.extensions.items() if k != "network_stream"}
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("kind", ["stall", "hang"])
async def test_stalls_are_caught_on_any_transport(kind: str) -> None:
    """Without httpcore's read timeout to rely on, a cancel scope watches every read."""
    async with MockServer(faulty(kind, 25), CLEAN) as server:
        async with httpx.AsyncClient(transport=_HiddenStreamTransport()) as http:
            async with client_for(server, http_client=http, stall_timeout=STALL) as sk:
                async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                    assert await stream.get_final_text() == TEXT
    [info] = stream.resumes
    assert type(info.cause) is streamkit.StallError
    assert info.cause.message == f"no progress for {STALL} s (only pings or silence): the stream stalled"
    assert info.kept_chars == len(kept(25))


async def test_a_slow_stream_that_progresses_is_not_a_stall() -> None:
    # a send every 0.05 s, every other one a ping: never 0.3 s without progress, ~0.5 s in all
    slow = Reply.text(lorem(20), chunk_size=8, delay=0.05, ping_every=1)
    result = await run(slow, CLEAN, stall_timeout=0.3)
    assert result.message.text == lorem(20)
    assert result.stream.resumes == [] and len(result.server.requests) == 1


async def test_a_slow_consumer_is_not_a_stall() -> None:
    """Only the server's silence counts: time the application spends on an event is not a stall."""
    text = lorem(200)
    reply = Reply.text(text, chunk_size=7, delay=0.005)  # all sent within ~0.2 s
    slow_once: list[str] = []

    async def on_text(piece: str) -> None:
        if not slow_once:
            slow_once.append(piece)
            await anyio.sleep(0.5)

    async with MockServer(reply, reply) as server, client_for(server, stall_timeout=STALL) as sk:
        async with sk.messages.stream(model="m", max_tokens=99, messages=USER, on_text=on_text) as stream:
            assert await stream.get_final_text() == text
        assert len(server.requests) == 1
    assert stream.resumes == []


# -- no leaked connection ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cut", "error", "stall", "hang"])
async def test_a_resumed_stream_leaks_no_connection(kind: str) -> None:
    async with MockServer(faulty(kind, 30), faulty("error", 20), CLEAN) as server:
        async with httpx.AsyncClient() as http:
            async with client_for(server, http_client=http, stall_timeout=STALL) as sk:
                async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                    assert await stream.get_final_text() == TEXT
                assert len(stream.resumes) == 2
                pool = http._transport._pool  # type: ignore[attr-defined]
                assert [c for c in pool.connections if not c.is_idle()] == []
                # the broken connections were closed: at most the one the last reply came on is left
                await server.wait_connections(1, timeout=3)
                assert len(pool.connections) == 1
        await server.wait_connections(0, timeout=3)


async def test_leaving_a_resumed_stream_early_leaks_no_connection() -> None:
    async with MockServer(faulty("cut", 30), CLEAN) as server:
        async with client_for(server) as sk:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                seen = ""
                async for piece in stream.text_stream:
                    seen += piece
                    if len(seen) > len(kept(30)) + 100:
                        break
            assert len(stream.resumes) == 1
            assert TEXT.startswith(seen)
            transport = sk._http._transport.chosen()  # on asyncio with aiohttp installed, the aiohttp transport
            assert transport.admitted == 0
            if isinstance(transport, ShardedTransport):
                assert [c for shard in transport._shards for c in shard._pool.connections if not c.is_idle()] == []
                await server.wait_connections(0, timeout=3)  # the half-read response's connection was closed
        # (aiohttp returns a connection whose whole body has arrived to the pool, read or not)
        await server.wait_connections(0, timeout=3)


async def test_the_default_client_closes_everything() -> None:
    async with MockServer(faulty("cut", 30), faulty("stall", 30), CLEAN) as server:
        async with client_for(server, stall_timeout=STALL) as sk:
            async with sk.messages.stream(model="m", max_tokens=99, messages=USER) as stream:
                assert await stream.get_final_text() == TEXT
            assert len(stream.resumes) == 2
            await server.wait_connections(1, timeout=3)
        await server.wait_connections(0, timeout=3)
