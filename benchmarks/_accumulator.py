"""``python -m benchmarks accumulator [SIZES]``: streamkit.MessageAccumulator alone, fed decoded events, by pyperf.

No network, no JSON decoding on the clock: a worker decodes the main benchmark's transcript once (``--content``
as there, realistic by default), then feeds a fresh accumulator per loop and reads the final ``message`` (the
pydantic Message).  The floor is the least any accumulator does (``_worker.Floor``).  pyperf calibrates
the loops, runs 5 worker processes per benchmark, and its options apply (``-p 10 -o acc.json 1k,100k``).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from ._content import CONTENTS, transcript
from ._scenarios import Outcome, human, tag
from ._worker import Floor, check, from_message


@cache
def events(kind: str, size: int, content: str) -> list[dict[str, Any]]:
    """A whole stream (the main benchmark's transcript) as decoded JSON objects."""
    body = transcript(kind, size, content)[0].decode()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def streamkit_run(kind: str, size: int, content: str) -> Any:
    from streamkit import MessageAccumulator

    accumulator = MessageAccumulator()
    feed = accumulator.feed
    for event in events(kind, size, content):
        feed(event)
    return accumulator.message


def floor_run(kind: str, size: int, content: str) -> Any:
    floor = Floor()
    for event in events(kind, size, content):
        floor.apply(event)
    return floor.finish()


def main(argv: list[str]) -> int:
    import pyperf  # type: ignore[import-untyped]

    program = ("-m", "benchmarks", "accumulator")
    runner = pyperf.Runner(
        5,
        3,
        program_args=program,
        add_cmdline_args=lambda cmd, args: cmd.extend([args.sizes, "--content", args.content]),
    )
    runner.argparser.add_argument("sizes", nargs="?", default="1000,10000,100000", help="stream sizes in deltas")
    runner.argparser.add_argument("--content", choices=CONTENTS, default=CONTENTS[0], help="what the deltas carry")
    args = runner.parse_args(argv)
    content = args.content
    for kind in ("text", "tool", "mixed"):
        for size in (int(part.replace("k", "000")) for part in args.sizes.split(",")):
            if not args.worker:  # checked once, in the manager: the same text and tool input as the floor's
                expected = Outcome(**transcript(kind, size, content)[1])
                for run in (streamkit_run, floor_run):
                    got = run(kind, size, content)
                    assert check(got if run is floor_run else from_message(got), expected) is None, (kind, run)
            for name, run in (("streamkit", streamkit_run), ("floor", floor_run)):
                # The events are decoded at the first call (pyperf's warm-up value), then cached.
                label = f"accumulator {kind}-{human(size)}{tag(content)} {name}"
                bench = runner.bench_func(label, run, kind, size, content)
                if bench is not None and not args.worker:
                    count = len(events(kind, size, content))
                    print(f"  {count / bench.median():,.0f} events/s, {bench.median() / count * 1e6:.3f} us/event")
    return 0
