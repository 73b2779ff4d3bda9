"""Chaos soak: generations broken at random on every attempt must still end byte-identical.

Each generation is one streamed reply from the loopback MockServer: text with 1- to
4-byte UTF-8 characters (ASCII, accents, Greek, CJK, emoji), text then a tool_use, or
thinking then text with extended thinking enabled in the request.  Before its clean
answer the server serves 0 to 4 failed attempts, each drawn at random: an overloaded
``error`` event, a cut at a random byte offset (mid-event, mid-line, inside a UTF-8
character), a truncated body, a stall of pings only, a pre-stream 429 or 529 with a
small ``retry-after``/``retry-after-ms``.  A random consumer reads it: the event
iterator, ``text_stream``, hooks, one that breaks early, one cancelled at a random time.

Checked for every generation, on asyncio and trio: a reply that finishes equals the
fault-free reply (content, text, tool input, stop reason, model) and the text the
consumer saw is exactly its text; a consumer that stopped early saw a prefix of it;
nothing but a StreamkitError escapes, cancellation stays cancellation; no connection
stays open.  Retries are fast (tiny backoff, tiny retry-after, 0.15 s stall timeout).

Short by default (``GENERATIONS`` per kind and backend).  Environment:

- ``STREAMKIT_SOAK=N``: N generations per kind and backend; ``STREAMKIT_SOAK=60s``: as
  many as fit in 60 seconds per kind and backend.
- ``STREAMKIT_SEED=S``: the base seed (fixed by default, so runs repeat).  A failure
  names the seed and the generation; ``STREAMKIT_SOAK_GEN=i`` runs generation i alone.

Each test prints its counts (generations, outcomes, faults served by kind): ``pytest -s``.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import streamkit
import streamkit._resume
from streamkit.testing import Fault, MockServer, Reply, TextBlock, ThinkingBlock, ToolUseBlock

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
KINDS = ["text", "tool_use", "thinking"]
FAULTS = ["error", "cut", "truncate", "stall", "429", "529"]
CONSUMERS = ["events", "text_stream", "hooks", "break", "cancel"]
# Characters of 1, 2, 3 and 4 bytes in UTF-8, so that byte cuts fall inside characters.
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "éèàüößøåçñ",
    "αβγδεζηθλμπσω",
    "中文字符测试日本語漢字",
    "😀🚀🎉👍🏽🌍🧪𝄞",
]


def soak_plan() -> tuple[int, float | None]:
    """How many generations, or for how many seconds, each test runs."""
    value = os.environ.get("STREAMKIT_SOAK", "")
    if value.endswith("s"):
        return 10**9, float(value[:-1])
    return (int(value) if value else GENERATIONS), None


def words(rng: random.Random, count: int) -> str:
    """Prose-like text: words of mixed scripts, spaces, now and then a comma or a paragraph."""
    out: list[str] = []
    for n in range(count):
        alphabet = rng.choice(ALPHABETS)
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))))
        if n < count - 1:
            out.append(rng.choice([" ", " ", " ", ", ", ".\n\n"]))
    return "".join(out)


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

    def describe(self) -> str:
        faults = [f"{name}:{_fault_detail(reply)}" for name, reply in self.faults]
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
    elif kind == "tool_use":
        tool_input = {"query": words(rng, rng.randint(1, 8)), "n": rng.randint(0, 10**6), "tags": ["ü", "😀"]}
        tool = ToolUseBlock("lookup", tool_input, chunk_size=rng.randint(1, 9))
        blocks = [TextBlock(text, chunk_size=chunk), tool]
        stop_reason = "tool_use"
    else:
        blocks = [ThinkingBlock(words(rng, rng.randint(4, 30)), chunk_size=chunk), TextBlock(text, chunk_size=chunk)]
        params["thinking"] = THINKING
    clean = Reply(blocks=blocks, stop_reason=stop_reason, message_id="msg_chaos", chunk_per_event=rng.random() < 0.5)
    # Wire size of the whole reply, for cut offsets: about 110 bytes of framing per delta.
    size = len(text.encode()) + 110 * (len(text) // chunk + 4)
    faults = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        name = rng.choice(FAULTS)
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


async def run_generation(server: MockServer, generation: Generation) -> Outcome:
    outcome = Outcome()
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
    return outcome


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
    return problems


async def wait_closed(server: MockServer) -> bool:
    """The server sees a client's close a moment after the client makes it."""
    try:
        await server.wait_connections(0, timeout=2)
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("kind", KINDS)
async def test_chaos_soak(kind: str, anyio_backend: str) -> None:
    count, seconds = soak_plan()
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
        async with MockServer(default=generation.reply) as server:
            async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
                async with client.messages.stream(
                    model="m", max_tokens=4096, messages=USER, **generation.params
                ) as stream:
                    expected = await stream.get_final_message()
            before = len(server.requests)
            problems: list[str] = []
            try:
                with anyio.fail_after(20):
                    outcome = await run_generation(server, generation)
            except streamkit.StreamkitError as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                outcome = Outcome()
                stats["outcome:error"] += 1
            except Exception as exc:  # the point of the soak: report it with its seed
                problems.append(f"non-streamkit exception escaped: {type(exc).__name__}: {exc!r}")
                outcome = Outcome()
                stats["outcome:foreign exception"] += 1
            else:
                served = len(server.requests) - before
                problems += check(generation, outcome, expected, served)
                result = "finished" if outcome.message is not None else "cancelled" if outcome.cancelled else "stopped"
                stats[f"outcome:{result}"] += 1
                for name, _ in generation.faults[:served]:
                    stats[f"fault:{name}"] += 1
            if not await wait_closed(server):
                problems.append(f"{server.open_connections} connections left open")
        if problems:
            failures.append(f"{generation.describe()}:\n" + "\n".join(problems))
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
