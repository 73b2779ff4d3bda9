"""``python -m benchmarks profile``: pyinstrument over a contender consuming streams, after a warm-up."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ._content import CONTENTS
from ._scenarios import CONTENDERS, Job, tag, warmup_reply, write_reply
from ._server import mock_server, prepare_environment
from ._worker import TimeFunc


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks profile")
    parser.add_argument("--kind", default="text,tool", help="text, tool, mixed (comma-separated)")
    parser.add_argument("--framing", choices=("chunk", "bulk"), default="chunk", help="one event per chunk, or bulk")
    parser.add_argument("--contender", choices=CONTENDERS, default="streamkit", help="who consumes (default streamkit)")
    parser.add_argument("--size", default="100k", help="deltas (default 100k)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--content", choices=CONTENTS, default=CONTENTS[0], help="what the deltas carry")
    args = parser.parse_args(argv)
    from pyinstrument import Profiler

    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="streamkit-profile-") as workdir, mock_server(workdir) as (base_url, pid):
        for kind in args.kind.split(","):
            reply = (kind, int(args.size.replace("k", "000")), args.framing, args.content)
            job = Job("profile", "stream", args.contender, reply)
            for reply in (job.reply, warmup_reply(job)):
                write_reply(workdir, reply)
            time_func = TimeFunc(job, base_url, workdir, pid)
            time_func(1)  # set up, warm up, one checked stream
            with Profiler(interval=0.0002, async_mode="disabled") as profiler:
                time_func(args.repeat)
            problems = (Path(workdir) / "checks.jsonl").read_text().count('"problem": "')
            print(f"{kind}: {problems} streams with a problem" if problems else f"{kind}: every stream checked whole")
            name = f"profile-{args.contender}-{args.framing}-{kind}{tag(args.content)}.html"
            path = Path(__file__).resolve().parent / "results" / name
            path.parent.mkdir(exist_ok=True)
            time_func.close()
            path.write_text(profiler.output_html())
            print(profiler.output_text(unicode=True, color=False, show_all=False), f"\nHTML: {path}")
    return 0
