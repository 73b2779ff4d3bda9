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
        if row["kind"] in ("text", "tool", "resume"):
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


def test_quick_benchmark_floors_and_streamkit(tmp_path: Path) -> None:
    report = run_benchmarks(tmp_path / "quick.json", "transport,parser,streamkit")
    assert set(report) == {"meta", "results", "ratios", "targets"}
    meta = report["meta"]
    for key in ("cpu", "cores", "python", "os", "versions", "memory", "mode"):
        assert meta[key], key
    assert set(meta["versions"]) >= {"httpx", "httpx-sse", "pydantic", "anyio", "anthropic", "streamkit"}
    assert meta["mode"] == "quick"
    check_rows(report, {"transport", "parser", "streamkit"})
    kinds = {row["kind"] for row in report["results"]}
    assert kinds == {"text", "tool", "mixed", "ttft", "concurrent", "resume"}
    for scenario in (f"text-{SIZE}", f"tool-{SIZE}", f"mixed-{MIXED}"):
        assert report["ratios"][scenario]["streamkit_over_parser_floor"] > 0
        assert report["ratios"][scenario]["anthropic_over_streamkit"] is None
    for target in report["targets"]:
        assert set(target) == {"target", "value", "limit", "unit", "pass", "detail"}
        assert target["value"] is not None, target  # every target was measured (PASS or MISS)
