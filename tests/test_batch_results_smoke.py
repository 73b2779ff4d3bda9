"""Smoke run of ``python -m benchmarks.batch_results`` on a 20 MiB results file (the measurement itself reads 1 GiB).

Marked ``slow`` (a few seconds, two client subprocesses): the default run deselects it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_results_file_is_read_in_bounded_memory_and_resumed_without_rereading() -> None:
    command = [sys.executable, "-m", "benchmarks.batch_results", "--size-mb", "20", "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout)
    for name, run in runs.items():
        assert run["complete"] is True, name
        assert run["file_bytes"] == run["lines"] * run["line_bytes"] == run["bytes_served"], name
        assert run["lines"] == 20 * 2**20 // run["line_bytes"], name
        assert run["client"]["rss_growth_mb"] < 50, name
        assert run["bytes_served_twice"] == 0, name
    whole, cut = runs["whole"], runs["cut"]
    assert (whole["results_requests"], whole["ranges"], whole["client"]["resumes"]) == (1, [None], 0)
    assert cut["cut_at"] == int(cut["file_bytes"] * 0.6)
    assert (cut["results_requests"], cut["ranges"], cut["client"]["resumes"]) == (
        2,
        [None, f"bytes={cut['cut_at']}-"],
        1,
    )
