"""The scenarios: which stream each one replays, what a client must end up with, and the plan.

The manager writes each stream once (``_content``: an SSE transcript in the work directory, which is the mock
server's fixture directory) with its request header and expected outcome, and the workers read them: every
contender sends the same small header and receives the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import _content
from ._content import CONTENTS, MODEL

HEADER = "x-streamkit-mock-reply"
MAX_TOKENS = 1024
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Write it all."}]
BODY = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES, "stream": True}  # what every contender sends
PACE_HZ = 50
# How the server frames a stream: (seconds between events, one HTTP chunk and socket write per event).
FRAMINGS = {"chunk": (0.0, True), "paced": (1 / PACE_HZ, True), "bulk": (0.0, False), "paced-1ms": (0.001, True)}
CONTENDERS = (
    "transport",
    "parser",
    "anthropic",
    "anthropic-ui",
    "streamkit",
    "transport-aiohttp",
    "transport-loop",
    "streamkit-httpx",
    "streamkit-text",
    "streamkit-events",
    "streamkit-ui",
    "streamkit-sync",
)
SYNC_KINDS = ("text",)  # streamkit-sync (streamkit.Client) runs on the one-event-per-chunk text streams only
BULK = ("transport", "parser", "anthropic", "streamkit", "streamkit-events")  # bulk framing and the mixed stream
BASE = ("transport", "parser", "anthropic", "streamkit")  # time to first text
# streamkit's other transport, the floor of its default one, and the event loop's floor under both
TRANSPORTS = ("transport-aiohttp", "transport-loop", "streamkit-httpx")
SIZES, LARGE = (1_000, 20_000, 100_000), 100_000
QUICK: dict[str, Any] = {"repeat": 1, "repeat_large": 1, "sizes": (1_000,), "streams": 100, "mixed_size": 300}
QUADRATIC_MAX = RESUME_MAX_SIZE = 20_000  # the SDK is quadratic: no more unless --full
QUADRATIC = ("anthropic", "anthropic-ui")
# A stream of more CPU seconds than SLOW_S (the median so far) gets SLOW_RUNS rounds, and its contender no larger
# stream of that kind, framing and content unless --full: a reader that copies what it has so far per event.
SLOW_S, SLOW_RUNS = 2.0, 3  # 2 s at 20k deltas: 100 us a delta, four times the parser floor
UI_READERS = ("streamkit-ui", "anthropic-ui")
LOOPS = ("asyncio", "uvloop")  # the workers' event loop (--loop)
WARMUP_MAX = 10_000  # deltas of a worker's warm-up stream at most
# The transport floors check a body by its length against the reference parsed whole from their warm-up stream:
# theirs is the measured reply itself, whatever its size.
WARM_ON_MEASURED = ("transport", "transport-aiohttp", "transport-loop")
PEER_STREAMS = 1_000  # concurrent streams of the like-for-like row (the SDK on its default pool)


@dataclass
class Outcome:
    """What a client ended up with (or must): the blocks' contents, content_block_delta events, stop reason."""

    thinking: str | None = None
    text: str | None = None
    tool_input: Any = None
    deltas: int = 0
    stop_reason: str | None = None


@dataclass(frozen=True)
class Job:
    """One pyperf benchmark: a contender on a scenario, ``runs`` worker processes of ``values`` values."""

    scenario: str  # e.g. "chunk-text-1k"
    kind: str  # stream | ttft | concurrent | resume
    contender: str
    reply: tuple[str, int, str, str]  # (stream kind, deltas, framing, content)
    runs: int = 1
    values: int = 1
    streams: int = 0
    warmup: int = WARMUP_MAX  # deltas of the worker's warm-up stream at most
    loop: str = LOOPS[0]  # the worker's event loop: asyncio's own, or uvloop's

    @property
    def name(self) -> str:
        return f"{self.scenario} {self.contender}"


def human(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else str(size)


def tag(content: str) -> str:
    """A scenario name's suffix: none for the realistic content (the headline), ``-ascii`` for the other."""
    return "" if content == CONTENTS[0] else f"-{content}"


def fixture(reply: tuple[str, int, str, str]) -> str:
    """The transcript's file name: the framing is the server's business, not the file's."""
    kind, size, _, content = reply
    return f"bench-{kind}-{size}-{content}.sse"


def write_reply(workdir: str, reply: tuple[str, int, str, str]) -> str:
    """(The manager) write the transcript, the request header and the expected outcome for the workers; the header."""
    from streamkit.testing import Reply

    path = Path(workdir) / "{}-{}-{}-{}.json".format(*reply)
    if not path.exists():
        kind, size, framing, content = reply
        transcript = Path(workdir) / fixture(reply)
        if not transcript.exists():
            body, expected = _content.transcript(kind, size, content)
            transcript.write_bytes(body)
            transcript.with_suffix(".json").write_text(json.dumps(expected))
        expected = json.loads(transcript.with_suffix(".json").read_text())
        delay, per_event = FRAMINGS[framing]
        header = Reply(fixture=fixture(reply), delay=delay, chunk_per_event=per_event, request_id="req_bench")
        path.write_text(json.dumps({"header": header.header_value(), "expected": expected}))
    return load_reply(workdir, reply)[0]


def load_reply(workdir: str, reply: tuple[str, int, str, str]) -> tuple[str, Outcome]:
    data = json.loads((Path(workdir) / "{}-{}-{}-{}.json".format(*reply)).read_text())
    return data["header"], Outcome(**data["expected"])


def warmup_reply(job: Job) -> tuple[str, int, str, str]:
    """The stream a worker consumes off the clock before the measured ones (see ``WARM_ON_MEASURED``)."""
    if job.contender in WARM_ON_MEASURED:
        return job.reply
    kind, size, framing, content = job.reply
    return kind, min(size, job.warmup), framing, content


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    full: bool = False
    repeat: int = 5
    repeat_large: int = 5
    sizes: tuple[int, ...] = SIZES
    contents: tuple[str, ...] = CONTENTS[:1]  # the first: the mixed, bulk, ttft, concurrency and resume scenarios
    contenders: tuple[str, ...] = CONTENDERS
    streams: int = 10_000
    stream_deltas: int = 20
    mixed_size: int = 30_000
    ttft_runs: int = 15
    warmup_max: int = WARMUP_MAX
    loop: str = LOOPS[0]

    def jobs(self) -> list[Job]:
        """Every benchmark, scenario by scenario (the server's reply cache stays warm)."""
        jobs: list[Job] = []
        sdk = importlib.util.find_spec("anthropic") is not None
        have = [c for c in self.contenders if sdk or not c.startswith("anthropic")]
        main = self.contents[0]

        def streams(framing: str, kind: str, sizes: tuple[int, ...], names: tuple[str, ...], content: str) -> None:
            for size in sizes:
                for name in (c for c in have if c in names):
                    if name == "streamkit-sync" and kind not in SYNC_KINDS:
                        continue
                    if name in QUADRATIC and size > QUADRATIC_MAX and not self.full:
                        continue
                    runs = self.repeat_large if size >= LARGE else self.repeat
                    scenario = f"{framing}-{kind}-{human(size)}{tag(content)}"
                    jobs.append(Job(scenario, "stream", name, (kind, size, framing, content), runs))

        for content in self.contents:  # the headline: one event per chunk, every contender, every content
            for kind in ("text", "tool"):
                streams("chunk", kind, self.sizes, CONTENDERS, content)
        streams("chunk", "mixed", (self.mixed_size,), BULK, main)
        for kind in ("text",) if self.quick else ("text", "tool"):
            streams("bulk", kind, self.sizes, BULK, main)
        # Time to first text: the whole reply in one write, one event per chunk, and paced 1 ms per event.
        ttft = (("ttft-bulk-1k", 1000, "bulk"), ("ttft-chunk-1k", 1000, "chunk"), ("ttft-paced", 50, "paced-1ms"))
        for scenario, size, framing in ttft[1:2] if self.quick else ttft:
            for name in (c for c in have if c in BASE + TRANSPORTS):
                reply = ("text", size, framing, main)
                jobs.append(Job(scenario + tag(main), "ttft", name, reply, values=self.ttft_runs))
        # Concurrency: paced streams on one client in one process; 10,000 streams with the floors only with --full.
        peer = min(PEER_STREAMS, self.streams)
        big: tuple[str, ...] = ("transport", "parser", "streamkit") if self.full else ("streamkit",)
        rows = [(self.streams, big)]
        peers = ("parser", "streamkit", "anthropic", *TRANSPORTS)
        rows = [*rows, (peer, peers)] if peer < self.streams else [(peer, BASE + TRANSPORTS)]
        for count, names in rows:
            for name in (c for c in have if c in names):
                reply = ("text", self.stream_deltas, "paced", main)
                scenario = f"paced-{count}x{self.stream_deltas}{tag(main)}"
                jobs.append(Job(scenario, "concurrent", name, reply, streams=count))
        if "streamkit" in have:  # resume="auto" against resume=False, no fault
            size, runs = min(max(self.sizes), RESUME_MAX_SIZE), 1 if self.quick else max(self.repeat, 3)
            for kind in ("text", "tool"):
                for name in ("streamkit", "streamkit-resume-off"):
                    scenario = f"resume-chunk-{kind}-{human(size)}{tag(main)}"
                    jobs.append(Job(scenario, "resume", name, (kind, size, "chunk", main), runs))
        return [replace(job, warmup=self.warmup_max, loop=self.loop) for job in jobs]


def in_rounds(jobs: list[Job]) -> list[tuple[int, Job]]:
    """The jobs of a scenario in rounds, the contenders taking turns: one worker process of every contender
    with runs > r in round r, in reverse order on odd rounds (see benchmarks/__init__.py)."""
    schedule: list[tuple[int, Job]] = []
    for scenario in dict.fromkeys(job.scenario for job in jobs):
        group = [job for job in jobs if job.scenario == scenario]
        for turn in range(max(job.runs for job in group)):
            order = group if turn % 2 == 0 else group[::-1]
            schedule.extend((turn, job) for job in order if turn < job.runs)
    return schedule
