"""Fuzz: mutated recorded streams give a Message or a StreamkitError, never anything else.

The inputs are the transcripts in fixtures/recorded, mutated at random: bit flips,
deletions, insertions of SSE-ish tokens, truncation, invalid UTF-8, events dropped,
duplicated, swapped or repeated (message_start too), block indexes changed, JSON values
replaced by other types, a huge data line over ``MAX_EVENT_SIZE``, JSON nested 100,000
deep; every input is also re-chunked at random and may get CRLF or CR line endings.

Two levels:

1. The reply machine directly (sans-I/O, the object every stream shell drives): a
   Message or a StreamkitError, and a snapshot that can always be read; on a first
   attempt, and on second and third attempts after a cut (resumed: the mutated bytes go
   through the splicer).  And the accumulator fed JSON values directly.
2. Whole streams over the MockServer (the mutated bytes as a fixture, sent byte for
   byte in a chunked body), on asyncio and trio, with and without resume: a Message or
   a StreamkitError within a time limit, and no connection left open.

An unmutated transcript (only re-chunked, line endings changed) must give the same
Message as the original.  Seeded: a failure names the seed and the case.  Environment:
``STREAMKIT_FUZZ=N`` runs N sans-I/O cases (default ``CASES``) and N // 50 (at least
``STREAM_CASES``) stream cases per backend; ``STREAMKIT_SEED=S`` sets the base seed.
Each test prints its counts by mutation and by outcome: ``pytest -s``.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

import streamkit
from streamkit import MAX_EVENT_SIZE, MessageAccumulator, RetryPolicy, parse_event
from streamkit._reply import END, NEED_DATA, ReplyMachine, Restart
from streamkit._resume import ResumePlanner
from streamkit.testing import MockServer, Reply

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"
TRANSCRIPTS = {path.name: path.read_bytes() for path in sorted(FIXTURES.glob("*.sse"))}
CASES = 2000
STREAM_CASES = 50
SEED = int(os.environ.get("STREAMKIT_SEED", "4242"))
N_CASES = int(os.environ.get("STREAMKIT_FUZZ", str(CASES)))
N_STREAM_CASES = max(STREAM_CASES, N_CASES // 50)
LONG_CASES = 20_000  # sans-I/O cases of each long run
REQUEST: dict[str, Any] = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
TOKENS = [b"\n", b"\n\n", b"\r", b"\r\n", b":", b"data: ", b"event: ", b"{", b"}", b'"', b"\\", b"\xef\xbb\xbf"]
TOKENS += [b"\x00", b"event:", b"data:{}"]
JUNK_VALUES: list[Any] = [None, 0, -1, 2**70, 1.5, "", "x", True, [], {}, [1, "a"], {"type": "text"}]


# -- mutations ------------------------------------------------------------------------


def events_of(raw: bytes) -> list[bytes]:
    """The transcript's events, each with its blank line."""
    text = raw if raw.endswith(b"\n\n") else raw + b"\n\n"
    return [event + b"\n\n" for event in text.split(b"\n\n") if event]


def json_of(event: bytes) -> tuple[bytes, Any] | None:
    head, sep, data = event.rstrip(b"\n").partition(b"data: ")
    try:
        return (head, json.loads(data)) if sep else None
    except ValueError:
        return None


def with_json(head: bytes, value: Any) -> bytes:
    return head + b"data: " + json.dumps(value, ensure_ascii=False).encode() + b"\n\n"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside decoded JSON."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)  # type: ignore[index]
    return copy


def mutate_json(raw: bytes, rng: random.Random, new_value: Callable[[Any], Any]) -> bytes:
    events = events_of(raw)
    index = rng.randrange(len(events))
    parsed = json_of(events[index])
    if parsed is None:
        return raw
    head, value = parsed
    path = rng.choice(paths(value))
    events[index] = with_json(head, replaced(value, path, new_value(value)))
    return b"".join(events)


def bit_flips(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def deletion(raw: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(raw))
    return raw[:start] + raw[start + rng.randint(1, 40) :]


def insertion(raw: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(raw) + 1)
    piece = b"".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 4)))
    return raw[:at] + piece + raw[at:]


def truncation(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(len(raw))]


def invalid_utf8(raw: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(raw) + 1)
    bad = rng.choice([b"\xff", b"\xc3", b"\xe4\xb8", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xc0\xaf"])
    return raw[:at] + bad + raw[at:]


def drop_event(raw: bytes, rng: random.Random) -> bytes:
    events = events_of(raw)
    del events[rng.randrange(len(events))]
    return b"".join(events)


def duplicate_event(raw: bytes, rng: random.Random) -> bytes:
    events = events_of(raw)
    index = rng.randrange(len(events))
    events.insert(rng.randrange(len(events) + 1), events[index])
    return b"".join(events)


def duplicate_message_start(raw: bytes, rng: random.Random) -> bytes:
    events = events_of(raw)
    events.insert(rng.randrange(1, len(events) + 1), events[0])
    return b"".join(events)


def reorder(raw: bytes, rng: random.Random) -> bytes:
    events = events_of(raw)
    i, j = rng.randrange(len(events)), rng.randrange(len(events))
    events[i], events[j] = events[j], events[i]
    return b"".join(events)


def bad_index(raw: bytes, rng: random.Random) -> bytes:
    events = events_of(raw)
    parsed = [json_of(event) for event in events]
    candidates = [i for i, p in enumerate(parsed) if p and isinstance(p[1], dict) and "index" in p[1]]
    if not candidates:
        return raw
    i = rng.choice(candidates)
    head, value = parsed[i]  # type: ignore[misc]
    value["index"] = rng.choice([value["index"] + rng.randint(1, 5), -1, 10**12, "0", None, 0.0, [0]])
    events[i] = with_json(head, value)
    return b"".join(events)


def type_swap(raw: bytes, rng: random.Random) -> bytes:
    return mutate_json(raw, rng, lambda _: rng.choice(JUNK_VALUES))


def deep_nesting(raw: bytes, rng: random.Random) -> bytes:
    depth = 100_000
    if rng.random() < 0.5:  # a whole data line of brackets
        events = events_of(raw)
        events.insert(rng.randrange(len(events) + 1), b"event: content_block_delta\ndata: " + b"[" * depth + b"\n\n")
        return b"".join(events)
    return mutate_json(raw, rng, lambda _: "\x00DEEP\x00").replace(b'"\\u0000DEEP\\u0000"', b"[" * depth + b"]" * depth)


def huge_line(raw: bytes, rng: random.Random) -> bytes:
    events = events_of(raw)
    line = b"data: " + b"a" * (MAX_EVENT_SIZE + rng.randint(1, 4096)) + rng.choice([b"", b"\n\n"])
    events.insert(rng.randrange(len(events) + 1), line)
    return b"".join(events)


def unmutated(raw: bytes, rng: random.Random) -> bytes:
    return raw


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bit_flips": bit_flips,
    "deletion": deletion,
    "insertion": insertion,
    "truncation": truncation,
    "invalid_utf8": invalid_utf8,
    "drop_event": drop_event,
    "duplicate_event": duplicate_event,
    "duplicate_message_start": duplicate_message_start,
    "reorder": reorder,
    "bad_index": bad_index,
    "type_swap": type_swap,
    "deep_nesting": deep_nesting,
    "huge_line": huge_line,
    "unmutated": unmutated,
}
RARE = {"huge_line": 0.002, "deep_nesting": 0.02}  # costly: drawn with these probabilities


def pick_mutation(rng: random.Random) -> str:
    roll = rng.random()
    for name, chance in RARE.items():
        if roll < chance:
            return name
        roll -= chance
    return rng.choice([name for name in MUTATIONS if name not in RARE])


def line_endings(raw: bytes, rng: random.Random) -> bytes:
    ending = rng.choice([b"\n", b"\n", b"\r\n", b"\r"])
    return raw if ending == b"\n" else raw.replace(b"\n", ending)


def chunks_of(raw: bytes, rng: random.Random) -> list[bytes]:
    """Random re-chunking: single bytes, small pieces, or big slabs."""
    out, at = [], 0
    scale = rng.choice([1, 7, 100, 70_000] if len(raw) < 100_000 else [70_000, 1_000_000])
    while at < len(raw):
        size = rng.randint(1, scale)
        out.append(raw[at : at + size])
        at += size
    return out


def make_case(number: int, level: str) -> tuple[str, str, str, bytes]:
    """Seed, transcript, mutation and the bytes to send (line endings changed, maybe terminated)."""
    seed = f"{SEED}:{level}:{number}"
    rng = random.Random(seed)
    name = rng.choice(sorted(TRANSCRIPTS))
    mutation = pick_mutation(rng)
    raw = MUTATIONS[mutation](TRANSCRIPTS[name], rng)
    # The transcripts are stored without their final blank line.
    ending = b"\n\n" if mutation == "unmutated" or rng.random() < 0.5 else b""
    return seed, name, mutation, line_endings(raw, rng) + ending


# -- level 1: the sans-I/O pieces -------------------------------------------------------


def drive(attempts: list[list[bytes]], resume: bool = True) -> streamkit.Message | streamkit.StreamkitError:
    """Run the reply machine over the chunks of each attempt, as the stream shell does.

    Each handed-out event is typed too (a malformed one ends the reply with ProtocolError,
    as in the shell) and the snapshot read after it.  Any exception but a StreamkitError escapes.
    """
    planner = ResumePlanner("auto" if resume else False, 3, RetryPolicy(3, 0.0, 0.0))
    machine = ReplyMachine(dict(REQUEST), planner, MessageAccumulator())
    queued = [deque(chunks) for chunks in attempts]
    chunks = queued.pop(0)
    machine.start("req_0")
    try:
        while True:
            item = machine.next_event()
            if item is NEED_DATA:
                if chunks:
                    machine.feed(chunks.popleft())
                else:
                    machine.feed_eof()
            elif item is END:
                return machine.final_message()
            elif isinstance(item, Restart):
                if not queued:
                    machine.refused(streamkit.APIConnectionError("no more attempts in this case"))
                chunks = queued.pop(0)
                machine.start(f"req_{len(attempts) - len(queued)}")
            elif isinstance(item, dict):
                try:
                    parse_event(item)
                except pydantic.ValidationError as exc:
                    raise machine.end_with(streamkit.ProtocolError(f"malformed {item['type']} event: {exc}")) from exc
                machine.message  # noqa: B018 - a snapshot can be read after every event
    except streamkit.StreamkitError as exc:
        return exc


def decode_all(chunks: list[bytes]) -> streamkit.Message | streamkit.StreamkitError:
    return drive([chunks], resume=False)


def reference(name: str) -> streamkit.Message:
    result = decode_all([TRANSCRIPTS[name] + b"\n\n"])
    assert isinstance(result, streamkit.Message), result
    return result


def wrong_result(
    where: str, name: str, mutation: str, result: streamkit.Message | streamkit.StreamkitError
) -> list[str]:
    """An unmutated transcript gives its reference Message; a huge line the size error."""
    if mutation == "unmutated" and result != reference(name):
        return [f"{where}: {result!r} != the reference"]
    if mutation == "huge_line" and not (
        isinstance(result, streamkit.ProtocolError) and result.message.startswith("an event of more than")
    ):
        return [f"{where}: {result!r}, not the size ProtocolError"]
    return []


LONG = pytest.mark.slow  # the long runs, which CI runs with ``-m slow``


@pytest.mark.parametrize("cases", [N_CASES, pytest.param(LONG_CASES, marks=LONG)], ids=["short", "long"])
def test_fuzz_sans_io(cases: int) -> None:
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for number in range(cases):
        seed, name, mutation, wire = make_case(number, "sansio")
        counts[mutation] += 1
        rng = random.Random(seed + ":chunks")
        try:
            result = decode_all(chunks_of(wire, rng))
        except Exception as exc:  # the point of the fuzz: report it with its seed
            failures.append(f"case {seed!r} ({name}, {mutation}): {type(exc).__name__}: {exc!r}"[:2000])
            continue
        outcomes[type(result).__name__] += 1
        failures += wrong_result(f"case {seed!r} ({name}, {mutation})", name, mutation, result)
    print(f"\nfuzz sans-I/O, seed {SEED}: {cases} cases; mutations {dict(counts)}; outcomes {dict(outcomes)}")
    assert not failures, f"{len(failures)} of {cases} cases failed:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("cases", [N_CASES // 2, pytest.param(LONG_CASES, marks=LONG)], ids=["short", "long"])
def test_fuzz_resumed_attempts(cases: int) -> None:
    """A first attempt cut inside the reply, then one or two mutated attempts the machine splices in."""
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for number in range(cases):
        seed, name, mutation, wire = make_case(number, "resumed")
        counts[mutation] += 1
        rng = random.Random(seed + ":attempts")
        first = TRANSCRIPTS[name] + b"\n\n"
        cut = first[: rng.randrange(len(first) // 3, len(first))]
        attempts = [chunks_of(cut, rng), chunks_of(wire, rng)]
        if rng.random() < 0.5:  # a third attempt, mutated on its own
            attempts.insert(1, chunks_of(make_case(number, "third")[3], rng))
        try:
            result = drive(attempts)
        except Exception as exc:  # the point of the fuzz: report it with its seed
            failures.append(f"case {seed!r} ({name}, {mutation}): {type(exc).__name__}: {exc!r}"[:2000])
            continue
        outcomes[type(result).__name__] += 1
    print(f"\nfuzz resumed, seed {SEED}: {cases} cases; mutations {dict(counts)}; outcomes {dict(outcomes)}")
    assert not failures, f"{len(failures)} cases failed:\n" + "\n".join(failures[:30])
    assert outcomes["Message"] > 0 and outcomes["ProtocolError"] > 0


SURROGATES = ["\ud800", "a\udfff", "\udc00\ud800"]


def junk_events(rng: random.Random) -> list[Any]:
    """A recorded reply's events as JSON values, one of them with a field replaced by junk."""
    events = [json_of(event) for event in events_of(TRANSCRIPTS[rng.choice(sorted(TRANSCRIPTS))])]
    values = [value for parsed in events if parsed is not None for value in [parsed[1]]]
    index = rng.randrange(len(values))
    path = rng.choice(paths(values[index]))
    junk = rng.choice([*JUNK_VALUES, *SURROGATES, float("nan"), {"x": [None]}, "\x00"])
    values[index] = replaced(values[index], path, junk)
    return values


@pytest.mark.parametrize("cases", [N_CASES, pytest.param(LONG_CASES, marks=LONG)], ids=["short", "long"])
def test_fuzz_the_accumulator_with_json_values(cases: int) -> None:
    """Fed values, not bytes: every event applies or raises ProtocolError, and the snapshot always builds."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for number in range(cases):
        seed = f"{SEED}:values:{number}"
        accumulator = MessageAccumulator()
        try:
            for value in junk_events(random.Random(seed)):
                try:
                    accumulator.feed(value)
                except streamkit.ProtocolError:
                    outcomes["ProtocolError"] += 1
                accumulator.message  # noqa: B018 - never raises, whatever was fed
        except Exception as exc:  # the point of the fuzz: report it with its seed
            failures.append(f"case {seed!r}: {type(exc).__name__}: {exc!r}"[:2000])
    print(f"\nfuzz accumulator values, seed {SEED}: {cases} cases; {dict(outcomes)}")
    assert not failures, f"{len(failures)} cases failed:\n" + "\n".join(failures[:30])


# -- level 2: whole streams over the mock server ---------------------------------------------


async def stream_once(
    server: MockServer, resume: bool, consumer: str, stall_timeout: float = 2.0
) -> tuple[streamkit.Message | streamkit.StreamkitError, list[str]]:
    texts: list[str] = []
    options: dict[str, Any] = {"max_retries": 1, "max_resumes": 1, "retry_initial_delay": 0.001}
    options.update({"retry_max_delay": 0.002, "resume": "auto" if resume else False, "stall_timeout": stall_timeout})
    async with streamkit.AsyncClient(api_key="k", base_url=server.base_url, **options) as client:
        try:
            async with client.messages.stream(**REQUEST) as stream:
                if consumer == "events":
                    async for _ in stream:
                        pass
                else:
                    async for text in stream.text_stream:
                        texts.append(text)
                return await stream.get_final_message(), texts
        except streamkit.StreamkitError as exc:
            return exc, texts


async def test_fuzz_whole_streams(anyio_backend: str, tmp_path: Path) -> None:
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for number in range(N_STREAM_CASES):
        seed, name, mutation, wire = make_case(number, f"stream:{anyio_backend}")
        if mutation == "huge_line" and number % 4:
            continue  # 33 MiB over loopback: rare here too
        counts[mutation] += 1
        path = tmp_path / f"case{number}.sse"
        path.write_bytes(wire)
        rng = random.Random(seed + ":stream")
        resume, consumer = rng.random() < 0.5, rng.choice(["events", "text_stream"])
        reply = Reply.from_fixture(path.name, chunk_per_event=rng.random() < 0.5)
        where = f"case {seed!r} ({name}, {mutation}, resume={resume}, {consumer})"
        async with MockServer(default=reply, fixture_dirs=[tmp_path]) as server:
            try:
                with anyio.fail_after(15):
                    result, _ = await stream_once(server, resume, consumer)
            except Exception as exc:  # the point of the fuzz: report it with its seed
                failures.append(f"{where}: {type(exc).__name__}: {exc!r}"[:2000])
                continue
            outcomes[type(result).__name__] += 1
            try:
                await server.wait_connections(0, timeout=2)
            except TimeoutError:
                failures.append(f"{where}: {server.open_connections} connections left open")
        failures += wrong_result(where, name, mutation, result)
    print(f"\nfuzz streams on {anyio_backend}, seed {SEED}: mutations {dict(counts)}; outcomes {dict(outcomes)}")
    assert not failures, f"{len(failures)} cases failed:\n" + "\n".join(failures[:30])


async def test_a_huge_line_over_the_wire_is_refused_with_a_protocol_error(tmp_path: Path) -> None:
    """A data line past MAX_EVENT_SIZE ends the stream with a clear error, the buffer bounded."""
    events = events_of(TRANSCRIPTS["basic_response.sse"])
    path = tmp_path / "huge.sse"
    path.write_bytes(b"".join([*events[:4], b"data: " + b"a" * (MAX_EVENT_SIZE + 1), *events[4:]]))
    async with MockServer(default=Reply.from_fixture(path.name), fixture_dirs=[tmp_path]) as server:
        with anyio.fail_after(60):
            # 32 MB in one line can pause longer than the usual stall timeout on a loaded machine;
            # a stall there would resume, and the mock (which ignores the prefill) would say "Hello" twice.
            result, texts = await stream_once(server, resume=True, consumer="text_stream", stall_timeout=30.0)
        assert isinstance(result, streamkit.ProtocolError)
        assert type(result) is streamkit.ProtocolError
        assert result.message.startswith("an event of more than 33,554,432 bytes (")
        assert result.message.endswith(" so far): refused, no real event is that large")
        assert result.partial_message is not None
        assert result.partial_message.text == "Hello"
        assert texts == ["Hello"]
        assert len(server.requests) == 1  # not resumed: the server broke the protocol
