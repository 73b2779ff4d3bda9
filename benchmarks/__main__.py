"""``python -m benchmarks``: streamkit against its floors and the official SDK, over loopback, run by pyperf.

    python -m benchmarks                 # the default run (the longest; see README's Benchmarks)
    python -m benchmarks --quick         # small sizes, one process each: a smoke run
    python -m benchmarks --content both  # the ASCII content too, one event per chunk: the second column
    python -m benchmarks --full          # the SDK at every size too, and the slow readers (see SLOW_S)
    python -m benchmarks --loop uvloop   # every worker on uvloop's event loop instead of asyncio's
    python -m benchmarks accumulator     # MessageAccumulator alone (pyperf's loop; its options apply)
    python -m benchmarks chart           # the chart from benchmarks/results/latest.json
    python -m benchmarks profile         # pyinstrument over streamkit's hot path, one event per chunk
    python -m benchmarks governor        # the rate governor against the mock's limits (about 6 minutes)

pyperf's options apply too (-p processes per round, -n values per process, -w warm-up values, -v).
Results: a table on stdout; rows, ratios and targets in benchmarks/results/latest.json (--out); pyperf's
file beside it (``python -m pyperf compare_to old.pyperf.json new.pyperf.json``); and the chart.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._content import CONTENTS
from ._scenarios import CONTENDERS, LOOPS, QUICK, SLOW_RUNS, SLOW_S, Plan, in_rounds, warmup_reply

LEFT_OUT = "left-out.txt"  # in the work directory: the pyperf benchmarks the manager did not run, a name a line
# Our options, passed on to pyperf's workers so that they plan the same benchmarks, and where they find things.
PLAN_OPTIONS = (
    "repeat",
    "repeat_large",
    "sizes",
    "content",
    "contenders",
    "streams",
    "stream_deltas",
    "mixed_size",
    "ttft_runs",
    "warmup_max",
    "loop",
)
WORKER_OPTIONS = ("base_url", "workdir", "server_pid")


def _at_least_one(text: str) -> int:
    """A count that must be a whole number >= 1 (argparse shows the message as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {value}")
    return value


def _event_loop(text: str) -> str:
    """One of LOOPS, and uvloop only where it is installed (a bench extra; not on Windows)."""
    if text not in LOOPS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOOPS)}, not {text!r}")
    if text == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise argparse.ArgumentTypeError("uvloop is not installed (pip install -e '.[bench]'; not on Windows)")
    return text


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.prog, parser.description = "python -m benchmarks", __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="small sizes, one process each (a smoke run)")
    parser.add_argument("--full", action="store_true", help="the SDK and slow readers at every size (slow)")
    parser.add_argument("--repeat", type=int, help="rounds (a process per contender each) below 100k (default 5)")
    parser.add_argument("--repeat-large", type=int, help="rounds from 100k deltas (default 5)")
    parser.add_argument("--sizes", help="text and tool sizes in deltas (default 1k,20k,100k)")
    contents = f"{CONTENTS[0]} (default), {', '.join(CONTENTS[1:])}, or both (see benchmarks/_content.py)"
    parser.add_argument("--content", choices=(*CONTENTS, "both"), help=f"what the deltas carry: {contents}")
    parser.add_argument("--contenders", help=f"a subset of {','.join(CONTENDERS)} (default all)")
    parser.add_argument("--streams", type=int, help="concurrent paced streams (default 10000; --quick 100)")
    parser.add_argument("--stream-deltas", type=int, help="deltas per concurrent stream (default 20)")
    parser.add_argument("--mixed-size", type=int, help="deltas of the thinking+text+tool stream (default 30000)")
    parser.add_argument("--ttft-runs", type=int, help="values per time-to-first-text figure (default 15)")
    parser.add_argument(
        "--warmup-max", type=_at_least_one, help="deltas of a worker's warm-up stream at most (default 10000)"
    )
    loops = "{" + ",".join(LOOPS) + "}"
    parser.add_argument("--loop", type=_event_loop, metavar=loops, help="every worker's event loop (default asyncio)")
    out = Path(__file__).parent / "results" / "latest.json"
    parser.add_argument("--out", type=Path, default=out, help="JSON results (default %(default)s)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    for name in WORKER_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", help=argparse.SUPPRESS)


def pass_options(cmd: list[str], args: argparse.Namespace) -> None:
    """pyperf's add_cmdline_args: a worker's command line gets our options."""
    cmd += [f"--{flag}" for flag in ("quick", "full") if getattr(args, flag)]
    for name in PLAN_OPTIONS + WORKER_OPTIONS:
        if getattr(args, name) is not None:
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]


def plan(args: argparse.Namespace) -> Plan:
    base: dict[str, Any] = {"quick": args.quick, "full": args.full}
    if args.quick:
        base |= QUICK | {"ttft_runs": 3}
    changes = {name: getattr(args, name) for name in PLAN_OPTIONS if getattr(args, name) is not None}
    if "sizes" in changes:
        changes["sizes"] = tuple(sorted({int(part.replace("k", "000")) for part in changes["sizes"].split(",")}))
    if "content" in changes:
        changes["contents"] = CONTENTS if changes.pop("content") == "both" else (args.content,)
    if "contenders" in changes:
        changes["contenders"] = tuple(changes["contenders"].split(","))
        if unknown := set(changes["contenders"]) - set(CONTENDERS):
            raise SystemExit(f"unknown contenders {sorted(unknown)}: choose from {','.join(CONTENDERS)}")
    return Plan(**(base | changes))


def run_suite(argv: list[str]) -> int:
    """The manager: every benchmark in rounds through pyperf, then the report; in a worker, the one benchmark."""
    import pyperf  # type: ignore[import-untyped]

    from . import _report
    from ._scenarios import write_reply
    from ._server import mock_server, prepare_environment, prewarm
    from ._worker import TimeFunc

    runner = pyperf.Runner(1, 1, loops=1, warmups=0, program_args=("-m", "benchmarks"), add_cmdline_args=pass_options)
    add_options(runner.argparser)
    args = runner.parse_args(argv)
    options = plan(args)
    schedule = in_rounds(options.jobs())
    if args.worker:  # pyperf runs the one benchmark of --worker-task and skips the others
        left_out = Path(args.workdir) / LEFT_OUT  # as the manager did: --worker-task counts the ones it ran
        dropped = set(left_out.read_text().splitlines()) if left_out.exists() else set()
        funcs = [TimeFunc(job, args.base_url, args.workdir, int(args.server_pid)) for _, job in schedule]
        for (turn, job), func in zip(schedule, funcs, strict=True):
            if (name := f"{job.name} #{turn + 1}") not in dropped:
                runner.bench_time_func(name, func)
        for func in funcs:  # the one that ran closes its client
            func.close()
        return 0
    prepare_environment(max(4096, 2 * options.streams + 512))
    benches: dict[str, Any] = {}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:  # the server replays the transcripts written into the work directory
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="streamkit-bench-"))
        base_url, server_pid = stack.enter_context(mock_server(workdir))
        args.base_url, args.workdir, args.server_pid = base_url, workdir, server_pid
        print(f"mock server at {base_url}; {len(schedule)} pyperf benchmarks", file=sys.stderr)
        warmed: set[str] = set()
        slow: dict[tuple[str, ...], int] = {}  # (contender, kind, framing, content): the size it took over SLOW_S
        skipped: dict[str, str] = {}
        for number, (turn, job) in enumerate(schedule, 1):
            key, size = (job.contender, job.reply[0], *job.reply[2:]), job.reply[1]
            larger = job.kind == "stream" and not options.full and slow.get(key, size) < size
            if larger:
                skipped[job.name] = f"over {SLOW_S:g} s of CPU a stream at {slow[key]} deltas"
            # A quadratic reader at a large size: a median of SLOW_RUNS is enough.
            if larger or (turn >= SLOW_RUNS and job.kind == "stream" and benches[job.name].median() > SLOW_S):
                with open(Path(workdir) / LEFT_OUT, "a") as dropped_file:
                    dropped_file.write(f"{job.name} #{turn + 1}\n")
                continue
            for reply in (job.reply, warmup_reply(job)):
                if (header := write_reply(workdir, reply)) not in warmed:
                    prewarm(base_url, header)
                    warmed.add(header)
            args.values, t0 = job.values, time.perf_counter()
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # our own progress below
                bench = runner.bench_time_func(f"{job.name} #{turn + 1}", TimeFunc(job, base_url, workdir, server_pid))
            bench.update_metadata({"name": job.name})  # the rounds' runs merged into one pyperf benchmark
            if benches.setdefault(job.name, bench) is not bench:
                benches[job.name].add_runs(bench)
            if job.kind == "stream" and benches[job.name].median() > SLOW_S:
                slow.setdefault(key, size)
            value = f"{bench.median() * 1e3:.3f} ms" if job.kind == "ttft" else f"{bench.median():.4f} s"
            took = f"{time.perf_counter() - t0:6.1f}s"
            print(f"[{number}/{len(schedule)}] {job.name:<38} #{turn + 1} {took}  {value}", file=sys.stderr, flush=True)
        checks = [json.loads(line) for line in (Path(workdir) / "checks.jsonl").read_text().splitlines()]
    jobs = {job.name: job for _, job in schedule}  # the rows in the order of the plan
    report = _report.build(options, [(jobs[name], bench) for name, bench in benches.items()], checks)
    report["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    report["meta"]["skipped"] = skipped
    print(_report.table(report), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    pyperf.BenchmarkSuite(list(benches.values())).dump(str(args.out.with_suffix(".pyperf.json")), replace=True)
    print(f"\nJSON: {args.out}\npyperf: {args.out.with_suffix('.pyperf.json')}")
    if not args.no_chart:  # the committed chart only from a run at the default sizes
        default = not args.quick and options.sizes == Plan().sizes
        paths = [args.out.parent / _report.CHART.name] + [_report.CHART] * default
        print("\n".join(f"chart: {path}" for path in _report.write_chart(report, paths)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    commands = {"accumulator": "_accumulator", "profile": "_profile", "chart": "_report", "governor": "_governor"}
    if module := commands.get(command):
        return int(importlib.import_module(f".{module}", __package__).main(argv[1:]))
    return run_suite(argv)


if __name__ == "__main__":
    sys.exit(main())
