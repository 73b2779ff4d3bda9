"""``python -m benchmarks accumulator [SIZES]``: streamkit.MessageAccumulator alone, fed decoded events, by pyperf.

No network, no JSON decoding on the clock: a worker fetches the main benchmark's reply once from an
in-process mock server, then feeds a fresh accumulator per loop and reads the final ``message`` (the
pydantic Message).  The floor is the least any accumulator does (``_worker.Floor``).  pyperf calibrates
the loops, runs 5 worker processes per benchmark, and its options apply (``-p 10 -o acc.json 1k,100k``).
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from typing import Any

from ._scenarios import BODY, build, human
from ._worker import Floor, check, from_message


@cache
def events(kind: str, size: int) -> list[dict[str, Any]]:
    """A whole stream (the main benchmark's reply, bulk framing) as decoded JSON objects."""
    import httpx

    from streamkit.testing import MockServer

    async def fetch() -> str:
        async with MockServer(build(kind, size, "bulk")[0]) as server, httpx.AsyncClient(timeout=60) as client:
            return (await client.post(f"{server.base_url}/v1/messages", json=BODY)).text

    return [json.loads(line[6:]) for line in asyncio.run(fetch()).splitlines() if line.startswith("data: ")]


def streamkit_run(kind: str, size: int) -> Any:
    from streamkit import MessageAccumulator

    accumulator = MessageAccumulator()
    feed = accumulator.feed
    for event in events(kind, size):
        feed(event)
    return accumulator.message


def floor_run(kind: str, size: int) -> Any:
    floor = Floor()
    for event in events(kind, size):
        floor.apply(event)
    return floor.finish()


def main(argv: list[str]) -> int:
    import pyperf  # type: ignore[import-untyped]

    program = ("-m", "benchmarks", "accumulator")
    runner = pyperf.Runner(5, 3, program_args=program, add_cmdline_args=lambda cmd, args: cmd.append(args.sizes))
    runner.argparser.add_argument("sizes", nargs="?", default="1000,10000,100000", help="stream sizes in deltas")
    args = runner.parse_args(argv)
    for kind in ("text", "tool", "mixed"):
        for size in (int(part.replace("k", "000")) for part in args.sizes.split(",")):
            if not args.worker:  # checked once, in the manager: the same text and tool input as the floor's
                expected = build(kind, size, "bulk")[1]
                for run in (streamkit_run, floor_run):
                    got = run(kind, size)
                    assert check(got if run is floor_run else from_message(got), expected) is None, (kind, run)
            for name, run in (("streamkit", streamkit_run), ("floor", floor_run)):
                # The events are fetched at the first call (pyperf's warm-up value), then cached.
                bench = runner.bench_func(f"accumulator {kind}-{human(size)} {name}", run, kind, size)
                if bench is not None and not args.worker:
                    count = len(events(kind, size))
                    print(f"  {count / bench.median():,.0f} events/s, {bench.median() / count * 1e6:.3f} us/event")
    return 0
