"""Chaos soak: generations broken at random on every attempt must still end byte-identical.

Each generation is one streamed reply from the loopback MockServer: text with 1- to
4-byte UTF-8 characters (ASCII, accents, Greek, CJK, emoji), text then a tool_use, text then
a server tool call then more text (regenerated on a resume, and never shown twice), or
thinking then text with extended thinking enabled in the request.  Before its clean
answer the server serves 0 to 4 failed attempts, each drawn at random: an overloaded
``error`` event, a cut at a random byte offset (mid-event, mid-line, inside a UTF-8
character), a truncated body, a stall of pings only, a pre-stream 429 or 529 with a
small ``retry-after``/``retry-after-ms``, or a malformed resumed attempt (below).  A
random consumer reads it: the event iterator, ``text_stream``, hooks, one that breaks
early, one cancelled at a random time.

``malformed_resume`` is two attempts, scripted from the request each one answers (the
server works out the continuation a resume asks for, as for any queued reply): first an
``error`` event after at least one content delta (counted as an ``error`` fault), so the
next attempt is a resume whose events go through the splicer; then that continuation
with one event made malformed at a random place in it, the events before it intact and
the rest after it: a block event's index null, an object, a string, a float or huge; a
delta that is not an object; a text_delta's text that is not a string; a content_block
that is not an object; message_start's message or a usage that is not an object; data
that is JSON but not an object.  That is the server breaking the protocol, not a broken
connection, so the expected outcome is a ``ProtocolError`` that ends the generation (no
further request), its ``partial_message`` holding what was received, a prefix of the
fault-free reply's text that equals the text the consumer saw (a consumer that breaks
early or is cancelled may stop before it, and saw a prefix); never a finished reply.

Checked for every generation, on asyncio and trio: a reply that finishes equals the
fault-free reply (content, text, tool input, stop reason, model) and the text the
consumer saw is exactly its text; a consumer that stopped early saw a prefix of it;
nothing but a StreamkitError escapes, cancellation stays cancellation; no connection
stays open.  Retries are fast (tiny backoff, tiny retry-after, 0.15 s stall timeout).

Short by default (``GENERATIONS`` per kind and backend).  Environment:

- ``pytest -m slow``: ``LONG_GENERATIONS`` per kind and backend (CI runs it).
- ``STREAMKIT_SOAK=N``: N generations per kind and backend; ``STREAMKIT_SOAK=60s``: as
  many as fit in 60 seconds per kind and backend.
- ``STREAMKIT_SEED=S``: the base seed (fixed by default, so runs repeat).  A failure
  names the seed and the generation; ``STREAMKIT_SOAK_GEN=i`` runs generation i alone.

Each test prints its counts (generations, outcomes, faults served by kind, and for the
malformed resumed attempts: the malformed event, the resume strategy of the request
they answered, the layer whose ProtocolError ended the reply): ``pytest -s``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

import streamkit
import streamkit._resume
from streamkit.testing import Fault, MockServer, RecordedRequest, Reply, TextBlock, ThinkingBlock, ToolUseBlock
from streamkit.testing._render import PrefillError, message_start, plan_for, render

pytestmark = pytest.mark.anyio

GENERATIONS = 12
SEED = int(os.environ.get("STREAMKIT_SEED", "9090"))
STALL_TIMEOUT = 0.15
CLIENT = {
    "max_retries": 8,
    "max_resumes": 8,
    "retry_initial_delay": 0.001,
    "retry_max_delay": 0.01,
    "stall_timeout": STALL_TIMEOUT,
}
USER = [{"role": "user", "content": "Tell me something."}]
THINKING = {"type": "enabled", "budget_tokens": 1024}
KINDS = ["text", "tool_use", "tool_text", "thinking"]
FAULTS = ["error", "cut", "truncate", "stall", "429", "529", "malformed_resume"]
# The malformed events of a malformed_resume attempt.
MALFORMED = [
    "index_null",
    "index_object",
    "index_string",
    "index_float",
    "index_huge",
    "delta_not_object",
    "text_not_string",
    "content_block_not_object",
    "message_not_object",
    "usage_not_object",
    "data_not_object",
]
JUNK: list[Any] = [None, 0, 7, 1.5, "x", "", True, [], [1, "a"], {"type": "text_delta", "text": "x"}]
CONSUMERS = ["events", "text_stream", "hooks", "break", "cancel"]
# Characters of 1, 2, 3 and 4 bytes in UTF-8, so that byte cuts fall inside characters.
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "éèàüößøåçñ",
    "αβγδεζηθλμπσω",
    "中文字符测试日本語漢字",
    "😀🚀🎉👍🏽🌍🧪𝄞",
]


LONG_GENERATIONS = 50  # the run behind the ``slow`` marker: 300 generations in all


def soak_plan(default: int) -> tuple[int, float | None]:
    """How many generations, or for how many seconds, each test runs."""
    value = os.environ.get("STREAMKIT_SOAK", "")
    if value.endswith("s"):
        return 10**9, float(value[:-1])
    return (int(value) if value else default), None


def words(rng: random.Random, count: int) -> str:
    """Prose-like text: words of mixed scripts, spaces, now and then a comma or a paragraph."""
    out: list[str] = []
    for n in range(count):
        alphabet = rng.choice(ALPHABETS)
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))))
        if n < count - 1:
            out.append(rng.choice([" ", " ", " ", ", ", ".\n\n"]))
    return "".join(out)


@dataclass(frozen=True)
class Scripted:
    """An attempt of a malformed_resume, made by ChaosServer from the request it answers."""

    role: str  # "lead": an error after some content; "bad": the continuation with one malformed event
    variant: str  # one of MALFORMED (for "bad")
    seed: str


@dataclass
class Generation:
    number: int
    seed: str
    kind: str
    reply: Reply
    params: dict[str, Any]
    faults: list[tuple[str, Reply]]
    consumer: str
    stop_after: int
    cancel_after: float
    scripted: dict[int, Scripted] = field(default_factory=dict)  # by position in ``faults``

    @property
    def bad_at(self) -> int | None:
        """The position of the first malformed resumed attempt in ``faults``: the reply cannot go past it."""
        return next((i for i, s in sorted(self.scripted.items()) if s.role == "bad"), None)

    def describe(self) -> str:
        faults = [
            f"{name}:{self.scripted[i] if i in self.scripted else _fault_detail(reply)}"
            for i, (name, reply) in enumerate(self.faults)
        ]
        return f"generation {self.number} (seed {self.seed!r}) {self.kind} consumer={self.consumer} faults={faults}"


def _fault_detail(reply: Reply) -> str:
    if reply.fault is None:
        return str(reply.headers)
    fault = reply.fault
    return f"at_byte={fault.at_byte}" if fault.at_byte is not None else f"after={fault.after}"


def make_generation(kind: str, number: int, backend: str) -> Generation:
    seed = f"{SEED}:{kind}:{backend}:{number}"
    rng = random.Random(seed)
    chunk = rng.randint(1, 12)
    text = words(rng, rng.randint(8, 60))
    params: dict[str, Any] = {}
    stop_reason = "end_turn"
    if kind == "text":
        blocks: list[Any] = [TextBlock(text, chunk_size=chunk)]
    elif kind in ("tool_use", "tool_text"):
        tool_input = {"query": words(rng, rng.randint(1, 8)), "n": rng.randint(0, 10**6), "tags": ["ü", "😀"]}
        tool = ToolUseBlock("lookup", tool_input, chunk_size=rng.randint(1, 9), server=kind == "tool_text")
        blocks = [TextBlock(text, chunk_size=chunk), tool]
        stop_reason = "tool_use"
        if kind == "tool_text":  # text after a tool call: regenerated on resume, never shown twice
            blocks.append(TextBlock(words(rng, rng.randint(4, 30)), chunk_size=chunk))
            stop_reason = "end_turn"
    else:
        blocks = [ThinkingBlock(words(rng, rng.randint(4, 30)), chunk_size=chunk), TextBlock(text, chunk_size=chunk)]
        params["thinking"] = THINKING
    clean = Reply(blocks=blocks, stop_reason=stop_reason, message_id="msg_chaos", chunk_per_event=rng.random() < 0.5)
    # Wire size of the whole reply, for cut offsets: about 110 bytes of framing per delta.
    size = len(text.encode()) + 110 * (len(text) // chunk + 4)
    faults: list[tuple[str, Reply]] = []
    scripted: dict[int, Scripted] = {}
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        name = rng.choice(FAULTS)
        if name == "malformed_resume":
            variant = rng.choice(MALFORMED)
            for role, label in (("lead", "error"), ("bad", name)):
                scripted[len(faults)] = Scripted(role, variant, f"{seed}:{len(faults)}")
                # A marker: ChaosServer answers with the scripted attempt instead (unscripted, a 418 fails loudly).
                faults.append((label, Reply.error(418, message="a chaos marker served unscripted")))
        else:
            faults.append((name, faulty(clean, name, rng, size, len(text) // chunk + 6)))
    return Generation(
        number,
        seed,
        kind,
        clean,
        params,
        faults,
        rng.choice(CONSUMERS),
        rng.randint(1, len(text) // chunk + 8),
        rng.uniform(0.0, 0.04),
        scripted,
    )


def faulty(clean: Reply, name: str, rng: random.Random, size: int, events: int) -> Reply:
    if name in ("429", "529"):
        hint = {"retry-after-ms": str(rng.randint(0, 20))} if rng.random() < 0.5 else {"retry-after": "0.01"}
        return Reply.error(int(name), headers=hint)
    if name == "cut":
        fault = Fault("cut", at_byte=rng.randint(0, size))
    elif name == "stall":
        fault = Fault("stall", after=rng.randint(0, events), ping_interval=0.02)
    else:
        fault = Fault(name, after=rng.randint(0, events))  # type: ignore[arg-type]
    return clean.model_copy(update={"fault": fault})


# -- malformed resumed attempts ----------------------------------------------------------


def _data(event: bytes) -> tuple[bytes, Any]:
    head, _, data = event.rstrip(b"\n").partition(b"data: ")
    return head, json.loads(data)


def _kind(event: bytes) -> str:
    return str(_data(event)[1]["type"])


def malformed(events: list[bytes], variant: str, rng: random.Random) -> tuple[str, int, bytes]:
    """The variant used, which event of a continuation it spoils, and the spoilt event.

    A continuation without the event a variant needs (no block left, say) gets a
    message_start whose message is not an object instead.
    """
    kinds = [_kind(event) for event in events]
    deltas = [i for i, kind in enumerate(kinds) if kind == "content_block_delta"]
    if variant.startswith("index_") or variant == "data_not_object":
        where = [i for i, kind in enumerate(kinds) if kind.startswith("content_block_")]
    elif variant == "delta_not_object":
        where = deltas
    elif variant == "text_not_string":
        where = [i for i in deltas if _data(events[i])[1]["delta"]["type"] == "text_delta"] or deltas
    elif variant == "content_block_not_object":
        where = [i for i, kind in enumerate(kinds) if kind == "content_block_start"]
    elif variant == "usage_not_object":
        where = [i for i, kind in enumerate(kinds) if kind in ("message_start", "message_delta")]
    else:  # message_not_object
        where = [0]
    if not where:
        variant, where = "message_not_object", [0]
    at = rng.choice(where)
    head, value = _data(events[at])
    junk = rng.choice([item for item in JUNK if not isinstance(item, dict)])  # null, 0, "" too: none is an object
    if variant == "data_not_object":
        value = junk
    elif variant.startswith("index_"):
        index = value.get("index", 0)
        value["index"] = {
            "index_null": None,
            "index_object": {"index": index},
            "index_string": str(index),
            "index_float": float(index),
            "index_huge": rng.choice([10**6, 10**12, 2**70]),
        }[variant]
    elif variant == "delta_not_object":
        value["delta"] = junk
    elif variant == "text_not_string":
        value["delta"] = {"type": "text_delta", "text": rng.choice([None, 5, 1.5, True, ["x"], {"text": "x"}])}
    elif variant == "content_block_not_object":
        value["content_block"] = junk
    elif variant == "usage_not_object":
        value.get("message", value)["usage"] = junk
    else:
        value["message"] = junk
    return variant, at, head + b"data: " + json.dumps(value, ensure_ascii=False).encode() + b"\n\n"


class ChaosServer(MockServer):
    """A MockServer that scripts the attempts of a malformed_resume from the request each one answers.

    The continuation a resume asks for depends on what the earlier attempts delivered and on
    the strategy the client picked; the server's own ``plan_for`` and ``render`` work it out,
    so the events before the malformed one are exactly those of a clean resumed attempt.
    The malformed attempt is served as a fixture: its bytes as they are.  (The hook is the
    server's private ``_select``: a marker it misses is served as a 418, which fails loudly.)
    """

    def __init__(self, generation: Generation, fixture_dir: Path) -> None:
        super().__init__(default=generation.reply, fixture_dirs=[fixture_dir])
        self.generation = generation
        self.fixture_dir = fixture_dir
        self.scripts = {id(generation.faults[i][1]): (i, s) for i, s in generation.scripted.items()}
        self.log: list[str] = []  # what each scripted attempt was
        self.variants: dict[int, str] = {}  # the malformed event each bad attempt carried, by position

    def _select(self, request: RecordedRequest) -> tuple[Reply, bool]:
        reply, reused = super()._select(request)
        script = self.scripts.get(id(reply))
        if script is None:
            return reply, reused
        position, spec = script
        clean = self.generation.reply
        try:
            plan = plan_for(clean, request.json)
        except PrefillError:
            return clean, False  # refused as the clean reply would be
        events = [message_start(clean, clean.message_id or "msg_chaos"), *render(clean, plan).events]
        rng = random.Random(spec.seed)
        if spec.role == "lead":  # an error after at least one content delta (text if any), the last one withheld
            deltas = [i for i, event in enumerate(events) if _kind(event) == "content_block_delta"] or [0]
            texts = [i for i in deltas if b'"text_delta"' in events[i]] or deltas
            after = rng.randint(texts[0] + 1, max(texts[0] + 1, deltas[-1]))
            self.log.append(f"{position}: lead, error after {after} of {len(events)} events")
            return clean.model_copy(update={"fault": Fault("error", after=after)}), False
        variant, at, spoilt = malformed(events, spec.variant, rng)
        events[at] = spoilt
        self.variants[position] = variant
        name = f"bad{position}.sse"
        (self.fixture_dir / name).write_bytes(b"".join(events))
        self.log.append(f"{position}: {variant} at event {at} of {len(events)}: {spoilt!r}"[:400])
        return Reply(fixture=name, chunk_per_event=clean.chunk_per_event), False


@dataclass
class Outcome:
    message: streamkit.Message | None = None
    seen: list[str] = field(default_factory=list)
    hooked: streamkit.Message | None = None
    cancelled: bool = False


async def consume(stream: streamkit.MessageStream, generation: Generation, outcome: Outcome) -> None:
    seen = outcome.seen
    if generation.consumer in ("events", "break"):
        count = 0
        async for event in stream:
            if isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.TextDelta):
                seen.append(event.delta.text)
            count += 1
            if generation.consumer == "break" and count >= generation.stop_after:
                return
    elif generation.consumer in ("text_stream", "cancel"):
        async for piece in stream.text_stream:
            seen.append(piece)
    outcome.message = await stream.get_final_message()


async def run_generation(server: MockServer, generation: Generation, outcome: Outcome) -> None:
    hooks: dict[str, Callable[[Any], None]] = {}
    if generation.consumer == "hooks":

        def on_message(message: streamkit.Message) -> None:
            outcome.hooked = message

        hooks = {"on_text": outcome.seen.append, "on_message": on_message}
    server.push(*(reply for _, reply in generation.faults))
    async with streamkit.AsyncClient(api_key="k", base_url=server.base_url, **CLIENT) as client:
        stream = client.messages.stream(model="m", max_tokens=4096, messages=USER, **generation.params, **hooks)
        if generation.consumer == "cancel":
            with anyio.move_on_after(generation.cancel_after) as scope:
                async with stream:
                    await consume(stream, generation, outcome)
            outcome.cancelled = scope.cancelled_caught
        else:
            async with stream:
                await consume(stream, generation, outcome)


def check(generation: Generation, outcome: Outcome, expected: streamkit.Message, served: int) -> list[str]:
    """What is wrong with this outcome, if anything."""
    problems = []
    seen = "".join(outcome.seen)
    if outcome.message is not None:
        got = outcome.message.model_dump(include={"content", "stop_reason", "model", "id"})
        want = expected.model_dump(include={"content", "stop_reason", "model", "id"})
        if got != want:
            problems.append(f"final message differs:\n  got  {got!r}\n  want {want!r}")
        if generation.consumer != "break" and seen != expected.text:
            problems.append(f"text seen by the consumer differs:\n  got  {seen!r}\n  want {expected.text!r}")
        if generation.consumer == "hooks" and outcome.hooked != outcome.message:
            problems.append(f"on_message got {outcome.hooked!r}")
    elif not expected.text.startswith(seen):
        problems.append(f"text seen before stopping is not a prefix:\n  got  {seen!r}\n  want {expected.text!r}")
    if outcome.message is None and generation.consumer not in ("break", "cancel"):
        problems.append("no final message")
    if served > len(generation.faults) + 1 and outcome.message is not None:
        problems.append(f"{served} requests for {len(generation.faults)} faults")
    bad_at = generation.bad_at
    if bad_at is not None and served > bad_at:
        if outcome.message is not None:
            problems.append("the reply finished past a malformed resumed attempt")
        elif generation.consumer not in ("break", "cancel"):
            problems.append("a malformed resumed attempt was served, yet no ProtocolError")
    return problems


def check_protocol_error(
    generation: Generation, outcome: Outcome, error: streamkit.StreamkitError, expected: streamkit.Message, served: int
) -> list[str]:
    """A malformed resumed attempt ends the reply with a ProtocolError holding what was received."""
    bad_at = generation.bad_at
    if not isinstance(error, streamkit.ProtocolError) or bad_at is None or served <= bad_at:
        return [f"{type(error).__name__}: {error}"]
    problems = []
    if served != bad_at + 1:
        problems.append(f"{served} requests: resumed past the malformed attempt (request {bad_at + 1})")
    seen = "".join(outcome.seen)
    partial = error.partial_message
    if partial is None:
        problems.append("the ProtocolError has no partial_message")
    elif not expected.text.startswith(partial.text):
        problems.append(f"partial_message's text is not a prefix:\n  got  {partial.text!r}\n  want {expected.text!r}")
    elif generation.consumer in ("events", "text_stream", "hooks") and seen != partial.text:
        problems.append(f"text seen differs from partial_message's:\n  seen {seen!r}\n  held {partial.text!r}")
    elif not partial.text.startswith(seen):
        problems.append(f"text seen is not a prefix of partial_message's:\n  seen {seen!r}\n  held {partial.text!r}")
    if outcome.message is not None or outcome.hooked is not None:
        problems.append("a final message despite the ProtocolError")
    return problems


def error_layer(error: streamkit.StreamkitError) -> str:
    """Which layer refused the malformed event, from its message."""
    message = str(error)
    for prefix, layer in (
        ("cannot continue the reply", "splicer"),
        ("the data of a", "decoder"),
        ("malformed ", "typing"),
    ):
        if message.startswith(prefix):
            return layer
    return "accumulator"


def strategy_of(request: RecordedRequest) -> str:
    """The resume strategy a request carries out: prefill, continue (a user turn after the reply), or none."""
    messages = (request.json or {}).get("messages") or []
    if len(messages) > 1 and messages[-1].get("role") == "assistant":
        return "prefill"
    return "continue" if len(messages) > 1 else "none"


async def wait_closed(server: MockServer) -> bool:
    """The server sees a client's close a moment after the client makes it."""
    try:
        await server.wait_connections(0, timeout=2)
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    "length", [GENERATIONS, pytest.param(LONG_GENERATIONS, marks=pytest.mark.slow)], ids=["short", "long"]
)
@pytest.mark.parametrize("kind", KINDS)
async def test_chaos_soak(kind: str, length: int, anyio_backend: str, tmp_path: Path) -> None:
    count, seconds = soak_plan(length)
    only = os.environ.get("STREAMKIT_SOAK_GEN")
    numbers = [int(only)] if only else range(count)
    deadline = time.monotonic() + seconds if seconds is not None else None
    failures: list[str] = []
    stats: Counter[str] = Counter()
    for number in numbers:
        if deadline is not None and time.monotonic() > deadline:
            break
        generation = make_generation(kind, number, anyio_backend)
        stats["generations"] += 1
        async with ChaosServer(generation, tmp_path) as server:
            async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
                async with client.messages.stream(
                    model="m", max_tokens=4096, messages=USER, **generation.params
                ) as stream:
                    expected = await stream.get_final_message()
            before = len(server.requests)
            problems: list[str] = []
            outcome = Outcome()
            error: streamkit.StreamkitError | None = None
            try:
                with anyio.fail_after(20):
                    await run_generation(server, generation, outcome)
            except streamkit.StreamkitError as exc:
                error = exc
            except Exception as exc:  # the point of the soak: report it with its seed
                problems.append(f"non-streamkit exception escaped: {type(exc).__name__}: {exc!r}")
                stats["outcome:foreign exception"] += 1
            served = len(server.requests) - before
            if error is not None:
                problems += check_protocol_error(generation, outcome, error, expected, served)
                result = "protocol_error" if isinstance(error, streamkit.ProtocolError) else "error"
                stats[f"outcome:{result}"] += 1
                stats[f"malformed_resume:refused by {error_layer(error)}"] += result == "protocol_error"
            elif not problems:
                problems += check(generation, outcome, expected, served)
                result = "finished" if outcome.message is not None else "cancelled" if outcome.cancelled else "stopped"
                stats[f"outcome:{result}"] += 1
            for position, (name, _) in enumerate(generation.faults[:served]):
                stats[f"fault:{name}"] += 1
                if position == generation.bad_at:
                    stats[f"malformed_resume:{server.variants.get(position, '?')}"] += 1
                    stats[f"malformed_resume:answers {strategy_of(server.requests[before + position])}"] += 1
            if not await wait_closed(server):
                problems.append(f"{server.open_connections} connections left open")
        if problems:
            failures.append(f"{generation.describe()}:\n" + "\n".join([*server.log, *problems]))
    print(f"\nchaos soak {kind} on {anyio_backend}, seed {SEED}: {dict(sorted(stats.items()))}")
    assert not failures, f"{len(failures)} of {stats['generations']} generations failed:\n\n" + "\n\n".join(failures)


async def test_a_continue_turn_cut_between_two_equal_characters_keeps_both() -> None:
    """Found by the soak (seed 9090:thinking:asyncio:4): "ééü" cut after the first "é".

    The continue turn answers exactly where the reply stopped ("éü"), yet the first "é"
    is taken for a repeat of the kept text's last word and dropped.
    """
    blocks = [ThinkingBlock("hmm"), TextBlock("say ééü now", chunk_size=1)]
    # message_start, thinking start, 1 thinking delta, signature, thinking stop, text start: 6 events.
    first = Reply(blocks=blocks, message_id="msg_chaos", fault=Fault("error", after=6 + len("say é")))
    async with MockServer(first, default=Reply(blocks=blocks)) as server:
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url, **CLIENT) as client:
            async with client.messages.stream(model="m", max_tokens=99, messages=USER, thinking=THINKING) as stream:
                message = await stream.get_final_message()
        assert [turn["content"] for turn in server.requests[1].json["messages"][1:]] == [
            "say é",
            streamkit._resume.CONTINUE_PROMPT,
        ]
    assert [resume.strategy for resume in stream.resumes] == ["continue"]
    assert message.text == "say ééü now"
