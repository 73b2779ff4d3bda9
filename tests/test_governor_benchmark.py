"""Smoke test of ``python -m benchmarks governor``: every mode runs end to end on a short clock.

Not a performance test: it proves the machinery (the mock with limits in the manager, worker
processes, a redis-server of its own, a fault) runs and reports every figure.  Marked ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("fault", [None, "kill-worker", "restart-redis"])
def test_the_governor_benchmark_runs_every_mode(tmp_path: Path, fault: str | None) -> None:
    out = tmp_path / "governor.json"
    command = [sys.executable, "-m", "benchmarks", "governor", "--duration", "8", "--workers", "2"]
    command += ["--concurrency", "4", "--out", str(out), *(["--fault", fault] if fault else [])]
    command += ["--lease-seconds", "6"] if fault == "kill-worker" else []
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [row["mode"] for row in rows] == ["off", "local", "redis"]
    for row in rows:
        assert row["fault"] == fault
        assert row["server_counts"]["admitted"] >= 1, row
        assert 0 <= row["goodput_share"] <= 1.1, row
        assert row["wait_p50_s"] is not None and row["wait_p50_s"] <= row["wait_p99_s"], row
        assert (row["redis_round_trips_per_request"] is not None) == (row["mode"] == "redis"), row
        survivors = ["1"] if fault == "kill-worker" else ["0", "1"]
        assert list(row["worker_shares"]) == survivors, row
        assert row["killed_workers"] == ([0] if fault == "kill-worker" else []), row
        assert row["overload_requests"] <= row["overload_attempts"], row
    if fault == "kill-worker":  # the killed worker's leases, still held when the survivors end, expire
        leases = rows[-1]["leases"]
        assert leases["lease_seconds"] == 6.0 and leases["killed_at_s"] >= 4, leases
        assert leases["all_returned_s_after_kill"] is not None, leases
        assert leases["all_returned_s_after_kill"] <= 6 + 2 + 1, leases  # the lease, the horizon, the sampling
    assert "goodput" in done.stdout
