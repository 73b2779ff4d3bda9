"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` on tiny sizes, through pyperf.

Not a performance test: it proves the machinery runs end to end (mock server in its own
process, one pyperf worker process per contender, scenario and round) and that every
contender received every reply whole, with the exact delta count.  Marked ``slow`` (about
half a minute): the default ``python -m pytest`` deselects it, CI runs it with ``-m slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SIZE = 120  # deltas per text / tool stream
MIXED = 60  # a third each: thinking, text, tool (+1 signature delta)
STREAMS, STREAM_DELTAS, TTFT_RUNS = 20, 30, 2
CONTENDERS = {"transport", "parser", "streamkit", "streamkit-text", "streamkit-events", "streamkit-ui"}


def run_benchmarks(out: Path, contenders: str, timeout: float = 240) -> dict[str, Any]:
    options = ["--quick", "--sizes", str(SIZE), "--mixed-size", str(MIXED), "--contenders", contenders]
    options += ["--streams", str(STREAMS), "--stream-deltas", str(STREAM_DELTAS), "--ttft-runs", str(TTFT_RUNS)]
    command = [sys.executable, "-m", "benchmarks", *options, "--no-chart", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Targets" in done.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def check_rows(report: dict[str, Any], contenders: set[str]) -> None:
    rows = report["results"]
    assert {row["contender"] for row in rows} == contenders | {"streamkit-resume-off"}
    for row in rows:
        where = f"{row['scenario']} {row['contender']}"
        assert "error" not in row, f"{where}: {row.get('error')}"
        # Every value pyperf got is a stream checked whole: one ledger line per value, no problem in any.
        assert row["completed"] == row["checked"] == row["runs"] >= 1, f"{where}: {row['errors']}"
        assert row["errors"] == [], where
        assert row["processes"] == 1, where  # --quick: one round, one worker process
        if row["kind"] in ("stream", "resume"):
            assert row["runs"] == 1, where
            want = 3 * (MIXED // 3) + 1 if row["stream_kind"] == "mixed" else SIZE  # resume runs at min(size, 20k)
            assert row["deltas"] == want, where
            assert row["cpu_s"]["median"] > 0 and row["wall_s"]["median"] > 0 and row["peak_rss_mb"] > 0, where
        elif row["kind"] == "concurrent":
            assert row["deltas"] == STREAM_DELTAS and row["streams"] == STREAMS, where
            assert row["completed_streams"] == [STREAMS] * row["runs"], where
            assert row["server_cpu_s"]["median"] >= 0, where
        else:
            assert row["kind"] == "ttft" and row["runs"] == TTFT_RUNS and row["deltas"] == 1000, where
            assert 0 < row["ttft_s"]["median"] < 5, where


@pytest.mark.slow
def test_quick_benchmark_floors_and_streamkit(tmp_path: Path) -> None:
    import pyperf  # type: ignore[import-untyped]

    report = run_benchmarks(tmp_path / "quick.json", ",".join(sorted(CONTENDERS)))
    assert set(report) == {"meta", "results", "targets"}
    meta = report["meta"]
    for key in ("cpu", "cores", "python", "os", "versions", "memory", "mode", "framings", "streamkit_tree"):
        assert meta[key], key
    assert set(meta["versions"]) >= {"httpx", "httpx-sse", "pydantic", "anyio", "anthropic", "pyperf", "streamkit"}
    assert meta["mode"] == "quick"
    check_rows(report, CONTENDERS)
    rows = report["results"]
    assert {row["kind"] for row in rows} == {"stream", "ttft", "concurrent", "resume"}
    # The headline framing is one event per chunk, for every contender; bulk is secondary.
    for kind in ("text", "tool"):
        assert {row["contender"] for row in rows if row["scenario"] == f"chunk-{kind}-{SIZE}"} == CONTENDERS, kind
    assert {row["contender"] for row in rows if row["scenario"] == f"bulk-text-{SIZE}"} >= {"parser", "streamkit"}
    assert {row["scenario"] for row in rows if row["kind"] == "ttft"} == {"ttft-chunk-1k"}
    assert {row["framing"] for row in rows if row["kind"] == "concurrent"} == {"paced"}
    for row in rows:
        if row["kind"] == "stream":
            assert row["over_parser_floor"] > 0, row["scenario"] + row["contender"]
    names = [target["target"] for target in report["targets"]]
    assert any("async for event / parser floor <= 0.6 (chunk-text" in name for name in names)
    assert any("get_final_message() / parser floor <= 0.5 (chunk-tool" in name for name in names)
    assert any("UI reader (current_message per event) / parser floor <= 0.7 (chunk-tool" in name for name in names)
    assert any("within 5% of resume=False (resume-chunk-tool" in name for name in names)
    for target in report["targets"]:
        assert set(target) == {"target", "value", "limit", "unit", "pass", "detail"}
        assert target["value"] is not None, target  # every target was measured (PASS or MISS)
    # pyperf's own file: one benchmark per row (its rounds merged), every value there; compare_to reads it.
    pyperf_file = tmp_path / "quick.pyperf.json"
    benchmarks = {bench.get_name(): bench for bench in pyperf.BenchmarkSuite.load(str(pyperf_file))}
    assert set(benchmarks) == {f"{row['scenario']} {row['contender']}" for row in rows}
    for row in rows:
        assert benchmarks[f"{row['scenario']} {row['contender']}"].get_nvalue() == row["runs"]
    compare = [sys.executable, "-m", "pyperf", "compare_to", str(pyperf_file), str(pyperf_file)]
    assert subprocess.run(compare, capture_output=True, text=True, timeout=60).returncode == 0
