"""``python -m benchmarks.batch_results``: a large batch results file read through the client, in bounded memory.

The mock server (this process) serves a synthetic ended batch of ``--size-mb`` of results
lines, generated while sent; a client in a subprocess reads every result with
``client.messages.batches.results()`` and reports the growth of its peak RSS (``VmHWM``)
over the read.  Then the same again with the connection cut once at ``--cut`` of the file:
the client resumes with ``Range``, and the server's counters say how many bytes it served
in all (the target: the file once, nothing before the cut sent twice).

    python -m benchmarks.batch_results                      # 1 GiB, cut at 60%
    python -m benchmarks.batch_results --size-mb 20 --json  # a smoke run; JSON on stdout

Not part of ``python -m benchmarks`` (pyperf's repeated timing is not the point here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RSS_TARGET_MB = 50.0


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` figure (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def _read(base_url: str, batch_id: str) -> dict[str, Any]:
    """In the client process: read every result, check the ids, measure the peak RSS growth."""
    import streamkit

    async with streamkit.AsyncClient(api_key="sk-benchmark", base_url=base_url, max_resumes=3) as client:
        results = client.messages.batches.results(batch_id)
        before_kb = _status_kb("VmHWM")
        start = time.perf_counter()
        count = index_sum = 0
        async with results:
            async for result in results:
                count += 1
                index_sum += int(result.custom_id.rsplit("-", 1)[1])
        seconds = time.perf_counter() - start
        resumes = results.resumes
    return {
        "results": count,
        "index_sum": index_sum,
        "resumes": resumes,
        "seconds": seconds,
        "rss_growth_mb": (_status_kb("VmHWM") - before_kb) / 1024,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
    }


def client_main(base_url: str, batch_id: str) -> None:
    import asyncio

    print(json.dumps(asyncio.run(_read(base_url, batch_id))))


async def measure(size_mb: float, message_size: int, cut: float | None) -> dict[str, Any]:
    """Serve one synthetic batch to a client subprocess (cut once at ``cut`` of the file if given)."""
    import anyio

    from streamkit.testing import MockServer

    async with MockServer() as server:
        store = server.batches
        width = store.results_size(store.synthetic(1, message_size))  # one line
        count = max(1, int(size_mb * 1024 * 1024) // width)
        batch_id = store.synthetic(count, message_size)
        size = store.results_size(batch_id)
        cut_at = None if cut is None else int(size * cut)
        if cut_at is not None:
            store.cut_results(cut_at)
        server_before_kb = _status_kb("VmHWM")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "benchmarks.batch_results", "--client", server.base_url, batch_id]
        done = await anyio.run_process(command, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the client failed: {done.stderr.decode()[-3000:]}")
        client = json.loads(done.stdout.decode().strip().splitlines()[-1])
        ranges = [r.headers.get("range") for r in server.requests if r.path.endswith("/results")]
        return {
            "file_bytes": size,
            "line_bytes": width,
            "lines": count,
            "cut_at": cut_at,
            "results_requests": store.results_requests,
            "bytes_served": store.results_bytes_sent,
            "bytes_served_twice": store.results_bytes_sent - size,
            "ranges": ranges,
            "server_rss_growth_mb": (_status_kb("VmHWM") - server_before_kb) / 1024,
            "client": client,
            "complete": client["results"] == count and client["index_sum"] == count * (count - 1) // 2,
        }


def report(runs: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, run in runs.items():
        client = run["client"]
        rate = run["file_bytes"] / client["seconds"] / 2**20
        lines.append(
            f"{name}: {run['file_bytes']:,} bytes, {run['lines']:,} lines of {run['line_bytes']:,} bytes; "
            f"all results read once: {run['complete']}; {client['seconds']:.1f} s ({rate:.0f} MiB/s)"
        )
        lines.append(
            f"  client peak RSS growth {client['rss_growth_mb']:.1f} MB (target < {RSS_TARGET_MB:.0f}), "
            f"peak RSS {client['peak_rss_mb']:.1f} MB; server peak RSS growth {run['server_rss_growth_mb']:.1f} MB"
        )
        lines.append(
            f"  requests {run['results_requests']}, ranges {run['ranges']}, resumes {client['resumes']}; "
            f"bytes served {run['bytes_served']:,} = the file + {run['bytes_served_twice']:,}"
            + (f" (cut at byte {run['cut_at']:,})" if run["cut_at"] is not None else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_results", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--size-mb", type=float, default=1024.0, help="results file size in MiB (default 1024)")
    parser.add_argument("--message-size", type=int, default=10_000, help="characters of each message's text")
    parser.add_argument("--cut", type=float, default=0.6, help="where the second read is cut (fraction; default 0.6)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a report")
    parser.add_argument("--client", nargs=2, metavar=("BASE_URL", "BATCH_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(*args.client)
        return 0
    import anyio

    runs = {
        "whole": anyio.run(measure, args.size_mb, args.message_size, None),
        "cut": anyio.run(measure, args.size_mb, args.message_size, args.cut),
    }
    print(json.dumps(runs, indent=2) if args.json else report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
