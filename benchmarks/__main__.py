"""``python -m benchmarks``: streamkit against its floors and the official SDK, over loopback.

    python -m benchmarks                 # the default run (about 12 minutes)
    python -m benchmarks --quick         # small sizes, 1 repeat: a CI smoke run
    python -m benchmarks --full          # the official SDK at every size too (many minutes)
    python -m benchmarks accumulator     # MessageAccumulator alone, events per second
    python -m benchmarks chart           # the chart from results/latest.json
    python -m benchmarks profile         # pyinstrument over streamkit's hot path, one event per chunk

Results: a table on stdout (progress on stderr), JSON in benchmarks/results/latest.json
(or ``--out``), the chart in benchmarks/results/cpu_per_event.png and, after a default or
``--full`` run, its committed copy benchmarks/cpu_per_event.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import _run


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted({int(part.replace("k", "000")) for part in text.split(",") if part.strip()}))
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 1k,10k,100k")
    return sizes


def _contenders(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(names) - set(_run.ALL_CONTENDERS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"contenders are some of {', '.join(_run.ALL_CONTENDERS)}")
    return names


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    main.add_argument("--quick", action="store_true", help="small sizes only, 1 repeat (CI smoke)")
    main.add_argument("--full", action="store_true", help="run the official SDK at every size (slow: it is quadratic)")
    main.add_argument("--repeat", type=int, help="runs per figure below 100k deltas (default 5; --quick 1)")
    main.add_argument("--repeat-large", type=int, help="runs per figure from 100k deltas (default 3; --quick 1)")
    main.add_argument("--sizes", type=_sizes, help="text and tool sizes in deltas (default 1k,20k,100k)")
    main.add_argument(
        "--contenders", type=_contenders, help=f"a subset of {','.join(_run.ALL_CONTENDERS)} (default all)"
    )
    main.add_argument("--streams", type=int, help="concurrent paced streams (default 10000; --quick 100)")
    main.add_argument("--stream-deltas", type=int, help="deltas per concurrent stream (default 20)")
    main.add_argument("--mixed-size", type=int, help="deltas of the mixed thinking+text+tool stream (default 30000)")
    main.add_argument("--ttft-runs", type=int, help="runs per time-to-first-text figure (default 15)")
    main.add_argument("--out", type=Path, default=_run.DEFAULT_OUT, help="JSON results (default %(default)s)")
    main.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    main.add_argument("--timeout", type=float, help="seconds per worker process (default 900, --full 3600)")
    commands = main.add_subparsers(dest="command")
    accumulator = commands.add_parser("accumulator", help="MessageAccumulator alone, fed decoded event dicts")
    accumulator.add_argument("--repeat", type=int, default=5)
    accumulator.add_argument("--sizes", type=_sizes, default=(1_000, 10_000, 100_000))
    accumulator.add_argument("--out", type=Path, help="also write the figures as JSON")
    chart = commands.add_parser("chart", help="draw the chart from a results JSON")
    chart.add_argument("--in", dest="source", type=Path, default=_run.DEFAULT_OUT)
    chart.add_argument("--out", type=Path, default=_run.CHART)
    chart.add_argument("--no-copy", action="store_true", help=f"do not also write {_run.COMMITTED_CHART.name}")
    profile = commands.add_parser("profile", help="pyinstrument over streamkit consuming a stream")
    profile.add_argument("--kind", default="text,tool", help="text, tool, mixed (comma-separated)")
    profile.add_argument("--framing", choices=("chunk", "bulk"), default="chunk", help="one event per chunk, or bulk")
    profile.add_argument(
        "--contender", choices=_run.ALL_CONTENDERS, default="streamkit", help="who consumes (default streamkit)"
    )
    profile.add_argument("--size", type=_sizes, default=(100_000,))
    profile.add_argument("--repeat", type=int, default=3)
    profile.add_argument("--out-dir", type=Path, default=_run.RESULTS)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "accumulator":
        from . import _accumulator

        result = _accumulator.main(args.repeat, args.sizes)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if args.command == "chart":
        report = json.loads(args.source.read_text())
        paths = [args.out] if args.no_copy else [args.out, _run.COMMITTED_CHART]
        written = _run.write_chart(report, paths)
        if not written:
            print("matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
            return 1
        print("\n".join(str(path) for path in written))
        return 0
    if args.command == "profile":
        from . import _profile

        _profile.main(args.kind, args.size[0], args.repeat, args.out_dir, args.framing, args.contender)
        return 0

    changes = {
        key: value
        for key, value in {
            "repeat": args.repeat,
            "repeat_large": args.repeat_large,
            "sizes": args.sizes,
            "contenders": args.contenders,
            "streams": args.streams,
            "stream_deltas": args.stream_deltas,
            "mixed_size": args.mixed_size,
            "ttft_runs": args.ttft_runs,
            "timeout": args.timeout,
        }.items()
        if value is not None
    }
    if args.full:
        changes.setdefault("timeout", 3600.0)
    options = _run.Options.quick_mode(**changes) if args.quick else _run.Options(**changes)
    options.full = args.full
    options.out = args.out
    options.chart = not args.no_chart
    try:
        report = _run.run_all(options)
    except KeyboardInterrupt:
        print("interrupted: the mock server and workers were stopped", file=sys.stderr)
        return 130
    print(_run.table(report), flush=True)
    _run.save(report, options.out)
    print(f"\nJSON: {options.out}")
    if options.chart:
        # The committed chart only from a run at the default sizes (not a smoke run).
        default_sizes = not options.quick and options.sizes == _run.SIZES
        paths = [options.out.parent / _run.CHART.name]
        if default_sizes:
            paths.append(_run.COMMITTED_CHART)
        for path in _run.write_chart(report, paths):
            print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
