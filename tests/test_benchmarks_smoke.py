"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` on tiny sizes.

Not a performance test: it proves the machinery runs end to end (mock server in its own
process, one worker process per contender and scenario) and that every contender
received every reply whole, with the exact delta count.  Deliberately unmarked, so it
runs with the default ``python -m pytest``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SIZE = 120  # deltas per text / tool stream
MIXED = 60  # a third each: thinking, text, tool (+1 signature delta)
STREAMS, STREAM_DELTAS = 20, 30


def run_benchmarks(out: Path, contenders: str, timeout: float = 120) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--sizes",
        str(SIZE),
        "--mixed-size",
        str(MIXED),
        "--contenders",
        contenders,
        "--streams",
        str(STREAMS),
        "--stream-deltas",
        str(STREAM_DELTAS),
        "--ttft-runs",
        "2",
        "--no-chart",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Targets" in done.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def check_rows(report: dict[str, Any], contenders: set[str]) -> None:
    rows = report["results"]
    assert {row["contender"] for row in rows} == contenders
    for row in rows:
        where = f"{row['scenario']} {row['contender']}"
        assert "error" not in row, f"{where}: {row.get('error')}"
        assert row["completed"] == row["runs"] >= 1, f"{where}: {row['errors']}"
        assert row["errors"] == [], where
        if row["kind"] in ("text", "tool", "resume"):  # resume runs at min(size, 20k)
            assert row["deltas"] == SIZE, where
        elif row["kind"] == "mixed":
            assert row["deltas"] == 3 * (MIXED // 3) + 1, where
        elif row["kind"] == "concurrent":
            assert row["deltas"] == STREAM_DELTAS, where
            assert row["completed_streams"] == [STREAMS] * row["runs"], where
        if row["kind"] == "ttft":
            assert 0 < row["ttft_s"]["median"] < 5, where
        elif row["kind"] == "resume":
            assert set(row["cpu_s"]) == {"auto", "off"}, where
        else:
            assert row["cpu_s"]["median"] > 0 and row["wall_s"]["median"] > 0, where
            assert row["peak_rss_mb"] > 0, where


CONTENDERS = {"transport", "parser", "streamkit", "streamkit-text", "streamkit-events", "streamkit-ui"}


def test_quick_benchmark_floors_and_streamkit(tmp_path: Path) -> None:
    report = run_benchmarks(tmp_path / "quick.json", ",".join(sorted(CONTENDERS)))
    assert set(report) == {"meta", "results", "ratios", "targets"}
    meta = report["meta"]
    for key in ("cpu", "cores", "python", "os", "versions", "memory", "mode", "framings", "streamkit_tree"):
        assert meta[key], key
    assert set(meta["versions"]) >= {"httpx", "httpx-sse", "pydantic", "anyio", "anthropic", "streamkit"}
    assert meta["mode"] == "quick"
    check_rows(report, CONTENDERS)
    rows = report["results"]
    kinds = {row["kind"] for row in rows}
    assert kinds == {"text", "tool", "mixed", "ttft", "concurrent", "resume"}
    # The headline framing is one event per chunk, for every contender; bulk is secondary.
    for kind in ("text", "tool"):
        chunk = {row["contender"] for row in rows if row["scenario"] == f"chunk-{kind}-{SIZE}"}
        assert chunk == CONTENDERS, kind
    assert {row["contender"] for row in rows if row["scenario"] == f"bulk-text-{SIZE}"} >= {"parser", "streamkit"}
    assert {row["scenario"] for row in rows if row["kind"] == "ttft"} == {"ttft-chunk-1k"}
    assert {row["framing"] for row in rows if row["kind"] == "concurrent"} == {"paced"}
    for scenario in (f"chunk-text-{SIZE}", f"chunk-tool-{SIZE}", f"chunk-mixed-{MIXED}", f"bulk-text-{SIZE}"):
        assert report["ratios"][scenario]["streamkit_over_parser_floor"] > 0
        assert report["ratios"][scenario]["anthropic_over_streamkit"] is None
    for name in ("streamkit-text", "streamkit-events", "streamkit-ui"):
        assert report["ratios"][f"chunk-text-{SIZE}"][f"{name}_over_parser_floor"] > 0
    names = [target["target"] for target in report["targets"]]
    assert any("async for event / parser floor <= 1.3 (chunk-text" in name for name in names)
    assert any("get_final_message() / parser floor <= 1.0 (chunk-tool" in name for name in names)
    for target in report["targets"]:
        assert set(target) == {"target", "value", "limit", "unit", "pass", "detail"}
        assert target["value"] is not None, target  # every target was measured (PASS or MISS)
