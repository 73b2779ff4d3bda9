"""The scenarios: which mock reply each one streams, what a client must end up with, and the plan.

The manager builds each reply once (``streamkit.testing``, imported only there: the SDK's workers
must not pay for streamkit) and writes its header and expected outcome to a file that the workers
read, so every contender sends the same header and receives the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HEADER = "x-streamkit-mock-reply"
MODEL, MAX_TOKENS = "claude-mock-1", 1024
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Write it all."}]
BODY = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES, "stream": True}  # what every contender sends
CHARS_PER_DELTA, TOOL_NAME, PACE_HZ = 4, "write_file", 50
# How the server frames a stream: (seconds between events, one HTTP chunk and socket write per event).
FRAMINGS = {"chunk": (0.0, True), "paced": (1 / PACE_HZ, True), "bulk": (0.0, False), "paced-1ms": (0.001, True)}
CONTENDERS = (
    "transport",
    "parser",
    "anthropic",
    "streamkit",
    "transport-aiohttp",
    "streamkit-httpx",
    "streamkit-text",
    "streamkit-events",
    "streamkit-ui",
    "streamkit-sync",
)
SYNC_KINDS = ("text",)  # streamkit-sync (streamkit.Client) runs on the one-event-per-chunk text streams only
BULK = ("transport", "parser", "anthropic", "streamkit", "streamkit-events")  # bulk framing and the mixed stream
BASE = ("transport", "parser", "anthropic", "streamkit")  # time to first text
TRANSPORTS = ("transport-aiohttp", "streamkit-httpx")  # streamkit's other transport, the floor of its default one
SIZES, LARGE = (1_000, 20_000, 100_000), 100_000
QUICK: dict[str, Any] = {"repeat": 1, "repeat_large": 1, "sizes": (1_000,), "streams": 100, "mixed_size": 300}
QUADRATIC_MAX = RESUME_MAX_SIZE = 20_000  # the SDK and a UI reading tool input so far are quadratic: no more
WARMUP_MAX = 10_000  # deltas of a worker's warm-up stream at most
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
    reply: tuple[str, int, str]  # (stream kind, deltas, framing)
    runs: int = 1
    values: int = 1
    streams: int = 0

    @property
    def name(self) -> str:
        return f"{self.scenario} {self.contender}"


def human(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else str(size)


def build(kind: str, size: int, framing: str) -> tuple[Any, Outcome]:
    """The ``streamkit.testing.Reply`` of a stream shape (text, tool or mixed) and its outcome."""
    from streamkit.testing import Reply, TextBlock, ThinkingBlock, ToolUseBlock, lorem

    n = max(1, size // 3) if kind == "mixed" else size
    names = ("thinking", "text", "tool") if kind == "mixed" else (kind,)
    thinking = lorem(CHARS_PER_DELTA * n, seed=2) if "thinking" in names else None
    text = lorem(CHARS_PER_DELTA * n, seed=3 if kind == "mixed" else 0) if "text" in names else None
    data = {"path": "notes/draft.md", "content": lorem(CHARS_PER_DELTA * n, seed=1)} if "tool" in names else None
    blocks: list[Any] = [ThinkingBlock(thinking, chunk_size=CHARS_PER_DELTA)] if thinking else []
    blocks += [TextBlock(text, chunk_size=CHARS_PER_DELTA)] if text else []
    blocks += [ToolUseBlock(TOOL_NAME, data, pieces=n)] if data else []
    stop, (delay, per_event) = "tool_use" if data else "end_turn", FRAMINGS[framing]
    ids = {"message_id": "msg_bench", "request_id": "req_bench"}  # fixed: the same bytes every time
    reply = Reply(blocks=blocks, stop_reason=stop, delay=delay, chunk_per_event=per_event, **ids)  # type: ignore[arg-type]
    return reply, Outcome(thinking, text, data, n * len(blocks) + bool(thinking), stop)  # + the signature_delta


def write_reply(workdir: str, reply: tuple[str, int, str]) -> str:
    """(The manager) write the reply's header and expected outcome to a file for the workers; the header."""
    path = Path(workdir) / "{}-{}-{}.json".format(*reply)
    if not path.exists():
        value, expected = build(*reply)
        path.write_text(json.dumps({"header": value.header_value(), "expected": asdict(expected)}))
    return load_reply(workdir, reply)[0]


def load_reply(workdir: str, reply: tuple[str, int, str]) -> tuple[str, Outcome]:
    data = json.loads((Path(workdir) / "{}-{}-{}.json".format(*reply)).read_text())
    return data["header"], Outcome(**data["expected"])


def warmup_reply(job: Job) -> tuple[str, int, str]:
    kind, size, framing = job.reply
    return kind, min(size, WARMUP_MAX), framing


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    full: bool = False
    repeat: int = 5
    repeat_large: int = 3
    sizes: tuple[int, ...] = SIZES
    contenders: tuple[str, ...] = CONTENDERS
    streams: int = 10_000
    stream_deltas: int = 20
    mixed_size: int = 30_000
    ttft_runs: int = 15

    def jobs(self) -> list[Job]:
        """Every benchmark, scenario by scenario (the server's reply cache stays warm)."""
        jobs: list[Job] = []
        have = [c for c in self.contenders if c != "anthropic" or importlib.util.find_spec("anthropic")]

        def streams(framing: str, kind: str, sizes: tuple[int, ...], names: tuple[str, ...]) -> None:
            for size in sizes:
                for name in (c for c in have if c in names):
                    if name == "streamkit-sync" and kind not in SYNC_KINDS:
                        continue
                    quadratic = name == "anthropic" or (name, kind) == ("streamkit-ui", "tool")
                    if quadratic and size > QUADRATIC_MAX and not self.full:
                        continue
                    runs = 1 if name == "anthropic" else self.repeat_large if size >= LARGE else self.repeat
                    jobs.append(Job(f"{framing}-{kind}-{human(size)}", "stream", name, (kind, size, framing), runs))

        for kind in ("text", "tool"):  # the headline: one event per chunk, every contender
            streams("chunk", kind, self.sizes, CONTENDERS)
        streams("chunk", "mixed", (self.mixed_size,), BULK)
        for kind in ("text",) if self.quick else ("text", "tool"):
            streams("bulk", kind, self.sizes, BULK)
        # Time to first text: the whole reply in one write, one event per chunk, and paced 1 ms per event.
        ttft = (("ttft-bulk-1k", 1000, "bulk"), ("ttft-chunk-1k", 1000, "chunk"), ("ttft-paced", 50, "paced-1ms"))
        for scenario, size, framing in ttft[1:2] if self.quick else ttft:
            for name in (c for c in have if c in BASE + TRANSPORTS):
                jobs.append(Job(scenario, "ttft", name, ("text", size, framing), values=self.ttft_runs))
        # Concurrency: paced streams on one client in one process; 10,000 streams with the floors only with --full.
        peer = min(PEER_STREAMS, self.streams)
        big: tuple[str, ...] = ("transport", "parser", "streamkit") if self.full else ("streamkit",)
        rows = [(self.streams, big)]
        peers = ("parser", "streamkit", "anthropic", *TRANSPORTS)
        rows = [*rows, (peer, peers)] if peer < self.streams else [(peer, BASE + TRANSPORTS)]
        for count, names in rows:
            for name in (c for c in have if c in names):
                reply = ("text", self.stream_deltas, "paced")
                jobs.append(Job(f"paced-{count}x{self.stream_deltas}", "concurrent", name, reply, streams=count))
        if "streamkit" in have:  # resume="auto" against resume=False, no fault
            size, runs = min(max(self.sizes), RESUME_MAX_SIZE), 1 if self.quick else max(self.repeat, 3)
            for kind in ("text", "tool"):
                for name in ("streamkit", "streamkit-resume-off"):
                    jobs.append(Job(f"resume-chunk-{kind}-{human(size)}", "resume", name, (kind, size, "chunk"), runs))
        return jobs


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
