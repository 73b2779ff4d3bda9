"""One contender in one clean process: ``python -m benchmarks._worker CONTENDER SPEC_JSON``.

Imports, client creation and one warm-up stream happen before the clock starts; then
``spec.runs`` measured runs, each checked (off the clock) against what the reply
must produce.  Prints one JSON line: the figures, or ``{"error": ...}``.

CPU is ``time.process_time()`` of this process around the measured part; wall is
``time.perf_counter()``; memory is this process's peak RSS (``VmHWM``; see peak_rss_mb).
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._server import cpu_seconds
from ._spec import HEADER, MAX_TOKENS, MESSAGES, MODEL, Expected, Spec, load_reply, request_body, sha

CONTENDERS = (
    "transport",
    "parser",
    "anthropic",
    "streamkit",
    "streamkit-text",
    "streamkit-events",
    "streamkit-ui",
)
API_KEY = "sk-benchmark"
DEFAULT: Any = object()  # "not given"
_DELTA_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


@dataclass
class Outcome:
    """What a contender ended up with, in one shape for checking."""

    thinking: str | None = None
    text: str | None = None
    tool_input: Any = None
    deltas: int = 0  # counted by the contender where it can, else usage.output_tokens (see check)
    stop_reason: str | None = None
    nbytes: int = 0  # transport floor only


def check(outcome: Outcome, expected: Expected) -> str | None:
    """None when the outcome is the whole reply, else what is wrong."""
    problems = []
    if outcome.deltas != expected.deltas:
        problems.append(f"{outcome.deltas} deltas instead of {expected.deltas}")
    for name in ("thinking", "text", "tool_input"):
        got, want = getattr(outcome, name), getattr(expected, name)
        if got != want:
            size = len(got) if isinstance(got, str) else got if got is None else "?"
            problems.append(f"{name} differs (got {size})")
    if outcome.stop_reason != expected.stop_reason:
        problems.append(f"stop_reason {outcome.stop_reason!r}")
    return "; ".join(problems) or None


def _from_blocks(blocks: list[Any], stop_reason: str | None, output_tokens: int) -> Outcome:
    """Outcome of a final Message (streamkit's or the SDK's: same attribute names)."""
    outcome = Outcome(stop_reason=stop_reason, deltas=output_tokens)
    for block in blocks:
        if block.type == "thinking":
            outcome.thinking = block.thinking
        elif block.type == "text":
            outcome.text = block.text
        elif block.type == "tool_use":
            outcome.tool_input = block.input
    return outcome


def _parse_transcript(raw: bytes) -> Outcome:
    """The transport floor's warm-up body, parsed once (off the clock) to prove it is whole."""
    parts: list[list[str]] = []
    kinds: list[str] = []
    outcome = Outcome(nbytes=len(raw))
    for block in raw.decode().split("\n\n"):
        data = next((line[6:] for line in block.split("\n") if line.startswith("data: ")), None)
        if data is None:
            continue
        event = json.loads(data)
        _apply(event, parts, kinds, outcome)
    _finish(parts, kinds, outcome)
    return outcome


def _apply(event: dict[str, Any], parts: list[list[str]], kinds: list[str], outcome: Outcome) -> None:
    kind = event["type"]
    if kind == "content_block_delta":
        outcome.deltas += 1
        delta = event["delta"]
        field = _DELTA_FIELDS.get(delta["type"])
        if field is not None:
            parts[event["index"]].append(delta[field])
    elif kind == "content_block_start":
        parts.append([])
        kinds.append(event["content_block"]["type"])
    elif kind == "message_delta":
        outcome.stop_reason = event["delta"]["stop_reason"]


def _finish(parts: list[list[str]], kinds: list[str], outcome: Outcome) -> None:
    for kind, pieces in zip(kinds, parts, strict=True):
        joined = "".join(pieces)
        if kind == "text":
            outcome.text = joined
        elif kind == "thinking":
            outcome.thinking = joined
        elif kind == "tool_use":
            outcome.tool_input = json.loads(joined) if joined else {}


def http_client() -> Any:
    """An httpx client on streamkit's pools, so that concurrency compares the work per stream.

    One plain httpcore pool of 1,000 connections costs far more CPU than the streams under a
    burst (see streamkit/transport.py); that is httpx's cost, not the parser's.
    """
    import httpx

    from streamkit._transport import ShardedTransport

    return httpx.AsyncClient(timeout=600, transport=ShardedTransport())


# -- the contenders ------------------------------------------------------------------
# Each: setup(base_url, concurrent) -> client; consume(client, header) -> Outcome (whole stream);
# first_text(client, header) -> (seconds to the first text delta, Outcome of the whole
# stream, drained after the first text off the clock); aclose(client).


class Transport:
    """httpx ``aiter_bytes``: the transport floor (no SSE framing, no JSON)."""

    expected_nbytes = 0

    async def setup(self, base_url: str, concurrent: bool = False) -> Any:
        self.url = f"{base_url}/v1/messages"
        return http_client()

    async def raw(self, client: Any, value: str) -> bytes:
        chunks = []
        async with client.stream("POST", self.url, json=request_body(), headers={HEADER: value}) as response:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
        return b"".join(chunks)

    async def consume(self, client: Any, value: str) -> Outcome:
        nbytes = 0
        async with client.stream("POST", self.url, json=request_body(), headers={HEADER: value}) as response:
            async for chunk in response.aiter_bytes():
                nbytes += len(chunk)
        return self._outcome(nbytes)

    def _outcome(self, nbytes: int) -> Outcome:
        # The body is byte-identical every time (fixed ids), so its length proves it whole;
        # the warm-up body was parsed completely to set the reference.
        if nbytes == self.expected_nbytes:
            return Outcome(**{**self.reference.__dict__, "nbytes": nbytes})
        return Outcome(nbytes=nbytes)

    async def first_text(self, client: Any, value: str) -> tuple[float, Outcome]:
        nbytes = 0
        first = 0.0
        tail = b""
        start = time.perf_counter()
        async with client.stream("POST", self.url, json=request_body(), headers={HEADER: value}) as response:
            async for chunk in response.aiter_bytes():
                if not first and b'"text_delta"' in tail + chunk:
                    first = time.perf_counter() - start
                tail = chunk[-16:]
                nbytes += len(chunk)
        return first, self._outcome(nbytes)

    async def prepare(self, client: Any, value: str, expected: Expected) -> str | None:
        """Parse one whole body off the clock: the reference the measured runs must match."""
        raw = await self.raw(client, value)
        self.reference = _parse_transcript(raw)
        self.expected_nbytes = len(raw)
        return check(self.reference, expected)

    async def aclose(self, client: Any) -> None:
        await client.aclose()


class Parser:
    """httpx-sse ``aiter_sse`` + ``json.loads`` per event, deltas appended to lists: the parser floor."""

    async def setup(self, base_url: str, concurrent: bool = False) -> Any:
        self.url = f"{base_url}/v1/messages"
        return http_client()

    async def consume(self, client: Any, value: str) -> Outcome:
        from httpx_sse import aconnect_sse

        loads = json.loads
        parts: list[list[str]] = []
        kinds: list[str] = []
        outcome = Outcome()
        async with aconnect_sse(client, "POST", self.url, json=request_body(), headers={HEADER: value}) as source:
            async for sse in source.aiter_sse():
                _apply(loads(sse.data), parts, kinds, outcome)
        _finish(parts, kinds, outcome)
        return outcome

    async def first_text(self, client: Any, value: str) -> tuple[float, Outcome]:
        from httpx_sse import aconnect_sse

        parts: list[list[str]] = []
        kinds: list[str] = []
        outcome = Outcome()
        first = 0.0
        start = time.perf_counter()
        async with aconnect_sse(client, "POST", self.url, json=request_body(), headers={HEADER: value}) as source:
            async for sse in source.aiter_sse():
                event = json.loads(sse.data)
                if not first and event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
                    first = time.perf_counter() - start
                _apply(event, parts, kinds, outcome)
        _finish(parts, kinds, outcome)
        return first, outcome

    async def aclose(self, client: Any) -> None:
        await client.aclose()


class Anthropic:
    """The official SDK: ``messages.stream(...)`` + ``get_final_message()``."""

    async def setup(self, base_url: str, concurrent: bool = False) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=600)

    def _manager(self, client: Any, value: str) -> Any:
        return client.messages.stream(
            model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES, extra_headers={HEADER: value}
        )

    @staticmethod
    def _outcome(message: Any) -> Outcome:
        return _from_blocks(message.content, message.stop_reason, message.usage.output_tokens)

    async def consume(self, client: Any, value: str) -> Outcome:
        async with self._manager(client, value) as stream:
            message = await stream.get_final_message()
        return self._outcome(message)

    async def first_text(self, client: Any, value: str) -> tuple[float, Outcome]:
        first = 0.0
        start = time.perf_counter()
        async with self._manager(client, value) as stream:
            while True:
                event = await stream.__anext__()
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    first = time.perf_counter() - start
                    break
            message = await stream.get_final_message()
        return first, self._outcome(message)

    async def aclose(self, client: Any) -> None:
        await client.close()


class Streamkit:
    """streamkit: ``client.messages.stream(...)`` + ``get_final_message()`` (default: resume="auto")."""

    def __init__(self, resume: Any = DEFAULT) -> None:
        self.resume = resume  # DEFAULT: the client's default (resume="auto")

    async def setup(self, base_url: str, concurrent: bool = False) -> Any:
        import httpx

        import streamkit

        if not concurrent:
            return streamkit.AsyncClient(api_key=API_KEY, base_url=base_url)
        # 1,000 connects at once (the pool's limit) queue behind the server's listen backlog, which
        # can outlast the default 5 s connect timeout; no retries, so a failed stream is counted.
        timeout = httpx.Timeout(600, connect=120)
        return streamkit.AsyncClient(api_key=API_KEY, base_url=base_url, timeout=timeout, max_retries=0)

    def _stream(self, client: Any, value: str, resume: Any = DEFAULT) -> Any:
        if resume is DEFAULT:
            resume = self.resume
        options = {} if resume is DEFAULT else {"resume": resume}
        return client.messages.stream(
            model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES, extra_headers={HEADER: value}, **options
        )

    @staticmethod
    def _outcome(message: Any) -> Outcome:
        return _from_blocks(message.content, message.stop_reason, message.usage.output_tokens)

    async def consume(self, client: Any, value: str, resume: Any = DEFAULT) -> Outcome:
        async with self._stream(client, value, resume) as stream:
            message = await stream.get_final_message()
        return self._outcome(message)

    async def first_text(self, client: Any, value: str) -> tuple[float, Outcome]:
        start = time.perf_counter()
        first = 0.0
        async with self._stream(client, value) as stream:
            async for _ in stream.text_stream:
                first = time.perf_counter() - start
                break
            message = await stream.get_final_message()
        return first, self._outcome(message)

    async def aclose(self, client: Any) -> None:
        await client.aclose()


class StreamkitText(Streamkit):
    """streamkit: every ``text_stream`` piece, then ``get_final_message()`` (a chat printing tokens)."""

    async def consume(self, client: Any, value: str, resume: Any = DEFAULT) -> Outcome:
        async with self._stream(client, value, resume) as stream:
            async for _ in stream.text_stream:
                pass
            message = await stream.get_final_message()
        return self._outcome(message)


class StreamkitEvents(Streamkit):
    """streamkit: ``async for event in stream`` (typed pydantic events), deltas counted here."""

    async def consume(self, client: Any, value: str, resume: Any = DEFAULT) -> Outcome:
        deltas = 0
        async with self._stream(client, value, resume) as stream:
            async for event in stream:
                if event.type == "content_block_delta":
                    deltas += 1
            message = await stream.get_final_message()
        outcome = self._outcome(message)
        outcome.deltas = deltas
        return outcome


class StreamkitUI(Streamkit):
    """streamkit as a UI redraws: ``async for event in stream``, then ``stream.current_message`` each time.

    The message so far (a fresh pydantic ``Message`` whenever it changed) is what a UI
    renders after every event; its last block's size is read so the snapshot is used.
    """

    async def consume(self, client: Any, value: str, resume: Any = DEFAULT) -> Outcome:
        deltas = 0
        async with self._stream(client, value, resume) as stream:
            async for event in stream:
                message = stream.current_message
                if event.type == "content_block_delta":
                    deltas += 1
                    block = message.content[-1]
                    self.shown = block.text if block.type == "text" else block.type
            message = await stream.get_final_message()
        outcome = self._outcome(message)
        outcome.deltas = deltas
        return outcome


def contender(name: str) -> Any:
    return {
        "transport": Transport,
        "parser": Parser,
        "anthropic": Anthropic,
        "streamkit": Streamkit,
        "streamkit-text": StreamkitText,
        "streamkit-events": StreamkitEvents,
        "streamkit-ui": StreamkitUI,
    }[name]()


# -- measuring -----------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB.

    ``VmHWM`` (the high-water mark of this process's own address space) where there is
    /proc: ``ru_maxrss`` would include the parent's peak, which Linux carries over into
    the child's figure at exec (the orchestrator's, tens of MB after it built the
    100k-delta replies).  Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


async def _timed(call: Callable[[], Awaitable[Outcome]]) -> tuple[float, float, Outcome]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    outcome = await call()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu, wall, outcome


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min, max and every value (so that runs from several workers can be merged)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


async def _prepare(impl: Any, client: Any, spec: Spec) -> tuple[str, Expected, str | None]:
    """The measured reply, and one warm-up stream (imports, pools, caches) before the clock starts."""
    value, expected = load_reply(spec.reply_file)
    if sha(value) != spec.sha:
        return value, expected, "the reply header differs from the orchestrator's"
    warm_value, warm_expected = load_reply(spec.warmup_file)
    if isinstance(impl, Transport):
        # The transport floor parses one whole body of the measured reply (off the clock):
        # the reference whose length every measured body must match.
        problem = await impl.prepare(client, value, expected)
        if problem is None and spec.warmup_file != spec.reply_file:
            await impl.consume(client, warm_value)
    else:
        problem = check(await impl.consume(client, warm_value), warm_expected)
    return value, expected, f"warm-up: {problem}" if problem else None


@dataclass
class Session:
    """A contender's client, warmed up, and the measured reply with what it must produce."""

    impl: Any
    client: Any
    value: str
    expected: Expected


async def run_stream(session: Session, spec: Spec) -> dict[str, Any]:
    """Whole-stream scenarios (text, tool, mixed): CPU and wall per run."""
    impl, client, value, expected = session.impl, session.client, session.value, session.expected
    cpus, walls, errors = [], [], []
    for _ in range(spec.runs):
        gc.collect()
        cpu, wall, outcome = await _timed(lambda: impl.consume(client, value))
        cpus.append(cpu)
        walls.append(wall)
        if (problem := check(outcome, expected)) is not None:
            errors.append(problem)
        del outcome
    return {
        "cpu_s": summary(cpus),
        "wall_s": summary(walls),
        "peak_rss_mb": peak_rss_mb(),
        "deltas": expected.deltas,
        "runs": spec.runs,
        "completed": spec.runs - len(errors),
        "errors": errors[:3],
    }


async def run_ttft(session: Session, spec: Spec) -> dict[str, Any]:
    """Seconds from sending the request to the first text delta; the rest is drained off the clock."""
    firsts, errors = [], []
    for _ in range(spec.runs):
        gc.collect()
        first, outcome = await session.impl.first_text(session.client, session.value)
        firsts.append(first)
        if (problem := check(outcome, session.expected)) is not None:
            errors.append(problem)
    return {
        "ttft_s": summary(firsts),
        "deltas": session.expected.deltas,
        "runs": spec.runs,
        "completed": spec.runs - len(errors),
        "errors": errors[:3],
    }


async def run_concurrent(session: Session, spec: Spec) -> dict[str, Any]:
    """``spec.streams`` streams at once from this process on one client, each checked as it finishes."""
    impl, value, expected = session.impl, session.value, session.expected
    cpus: list[float] = []
    walls: list[float] = []
    done: list[int] = []
    errors: list[str] = []
    baseline = current_rss_mb()

    async def one(number: int) -> bool:
        try:
            outcome = await impl.consume(session.client, value)
        except Exception as exc:  # counted, not raised: every stream must be accounted for
            errors.append(repr(exc))
            return False
        problem = check(outcome, expected)
        if problem is not None:
            errors.append(problem)
        return problem is None

    async def all_streams() -> Outcome:
        results = await asyncio.gather(*(one(number) for number in range(spec.streams)))
        done.append(sum(results))
        return Outcome()

    server_pid = spec.options.get("server_pid")
    servers: list[float] = []
    for _ in range(spec.runs):
        gc.collect()
        server0 = cpu_seconds(server_pid) if server_pid else None
        cpu, wall, _ = await _timed(all_streams)
        server1 = cpu_seconds(server_pid) if server_pid else None
        cpus.append(cpu)
        walls.append(wall)
        if server0 is not None and server1 is not None:
            servers.append(server1 - server0)
    return {
        "cpu_s": summary(cpus),
        "wall_s": summary(walls),
        **({"server_cpu_s": summary(servers)} if servers else {}),
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "streams": spec.streams,
        "deltas": expected.deltas,
        "completed_streams": done,
        "runs": spec.runs,
        "completed": sum(1 for count in done if count == spec.streams),
        "errors": errors[:3],
    }


async def run_resume(session: Session, spec: Spec) -> dict[str, Any]:
    """streamkit with resume="auto" and resume=False on the same fault-free stream, interleaved (ABBA)."""
    impl, client, value, expected = session.impl, session.client, session.value, session.expected
    modes: dict[str, Any] = {"auto": "auto", "off": False}
    cpus: dict[str, list[float]] = {"auto": [], "off": []}
    walls: dict[str, list[float]] = {"auto": [], "off": []}
    errors: list[str] = []
    for mode in modes.values():  # each mode warm too
        if (problem := check(await impl.consume(client, value, mode), expected)) is not None:
            return {"error": f"warm-up: {problem}"}
    order = ["auto", "off", "off", "auto"]
    for run in range(2 * spec.runs):
        key = order[run % 4]
        gc.collect()
        mode = modes[key]
        cpu, wall, outcome = await _timed(lambda mode=mode: impl.consume(client, value, mode))  # type: ignore[misc]
        cpus[key].append(cpu)
        walls[key].append(wall)
        if (problem := check(outcome, expected)) is not None:
            errors.append(f"{key}: {problem}")
    return {
        "cpu_s": {key: summary(values) for key, values in cpus.items()},
        "wall_s": {key: summary(values) for key, values in walls.items()},
        "peak_rss_mb": peak_rss_mb(),
        "deltas": expected.deltas,
        "runs": 2 * spec.runs,
        "completed": 2 * spec.runs - len(errors),
        "errors": errors[:3],
    }


RUNNERS = {
    "text": run_stream,
    "tool": run_stream,
    "mixed": run_stream,
    "ttft": run_ttft,
    "concurrent": run_concurrent,
    "resume": run_resume,
}


async def run(name: str, spec: Spec) -> dict[str, Any]:
    """Set up and warm the contender, run the scenario, close the client whatever happens."""
    if spec.kind == "resume" and not name.startswith("streamkit"):
        return {"error": "the resume scenario is streamkit's only"}
    impl = contender(name)
    client = await impl.setup(spec.base_url, spec.kind == "concurrent")
    try:
        value, expected, problem = await _prepare(impl, client, spec)
        if problem:
            return {"error": problem}
        return await RUNNERS[spec.kind](Session(impl, client, value, expected), spec)
    finally:
        await impl.aclose(client)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CONTENDERS:
        print(f"usage: python -m benchmarks._worker {{{','.join(CONTENDERS)}}} SPEC_JSON", file=sys.stderr)
        return 2
    name, spec = argv[0], Spec.from_json(argv[1])
    if spec.kind == "concurrent":
        # One socket per stream, plus the interpreter's own files.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, max(soft, spec.streams + 256)) if hard != resource.RLIM_INFINITY else spec.streams + 256
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        result = asyncio.run(run(name, spec))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
