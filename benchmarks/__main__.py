"""``python -m benchmarks``: streamkit against its floors and the official SDK, over loopback, run by pyperf.

    python -m benchmarks                 # the default run (10 to 12 minutes)
    python -m benchmarks --quick         # small sizes, one process each: a smoke run
    python -m benchmarks --full          # the SDK (and the UI over tool input) at every size too
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
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._scenarios import CONTENDERS, QUICK, Plan, in_rounds, warmup_reply

# Our options, passed on to pyperf's workers so that they plan the same benchmarks, and where they find things.
PLAN_OPTIONS = ("repeat", "repeat_large", "sizes", "contenders", "streams", "stream_deltas", "mixed_size", "ttft_runs")
WORKER_OPTIONS = ("base_url", "workdir", "server_pid")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.prog, parser.description = "python -m benchmarks", __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="small sizes, one process each (a smoke run)")
    parser.add_argument("--full", action="store_true", help="the SDK and the UI over tool input at every size (slow)")
    parser.add_argument("--repeat", type=int, help="rounds (a process per contender each) below 100k (default 5)")
    parser.add_argument("--repeat-large", type=int, help="rounds from 100k deltas (default 3)")
    parser.add_argument("--sizes", help="text and tool sizes in deltas (default 1k,20k,100k)")
    parser.add_argument("--contenders", help=f"a subset of {','.join(CONTENDERS)} (default all)")
    parser.add_argument("--streams", type=int, help="concurrent paced streams (default 10000; --quick 100)")
    parser.add_argument("--stream-deltas", type=int, help="deltas per concurrent stream (default 20)")
    parser.add_argument("--mixed-size", type=int, help="deltas of the thinking+text+tool stream (default 30000)")
    parser.add_argument("--ttft-runs", type=int, help="values per time-to-first-text figure (default 15)")
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
        for turn, job in schedule:
            time_func = TimeFunc(job, args.base_url, args.workdir, int(args.server_pid))
            runner.bench_time_func(f"{job.name} #{turn + 1}", time_func)
        return 0
    prepare_environment(max(4096, 2 * options.streams + 512))
    benches: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="streamkit-bench-") as workdir, mock_server() as (base_url, server_pid):
        args.base_url, args.workdir, args.server_pid = base_url, workdir, server_pid
        print(f"mock server at {base_url}; {len(schedule)} pyperf benchmarks", file=sys.stderr)
        warmed: set[str] = set()
        for number, (turn, job) in enumerate(schedule, 1):
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
            value = f"{bench.median() * 1e3:.3f} ms" if job.kind == "ttft" else f"{bench.median():.4f} s"
            took = f"{time.perf_counter() - t0:6.1f}s"
            print(f"[{number}/{len(schedule)}] {job.name:<38} #{turn + 1} {took}  {value}", file=sys.stderr, flush=True)
        checks = [json.loads(line) for line in (Path(workdir) / "checks.jsonl").read_text().splitlines()]
    jobs = {job.name: job for _, job in schedule}  # the rows in the order of the plan
    report = _report.build(options, [(jobs[name], bench) for name, bench in benches.items()], checks)
    report["meta"]["seconds"] = round(time.perf_counter() - started, 1)
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
