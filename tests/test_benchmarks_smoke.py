"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` on tiny sizes, through pyperf.

Not a performance test: it proves the machinery runs end to end (mock server in its own
process, one pyperf worker process per contender, scenario and round) and that every
contender received every reply whole, with the exact delta count.  Marked ``slow`` (about
half a minute): the default ``python -m pytest`` deselects it, CI runs it with ``-m slow``.
The checks of what the streams carry (``benchmarks/_content.py``) are fast and always run.
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
WARMUP = 50  # deltas of a worker's warm-up stream at most: fewer than the measured ones, as at the default sizes
FLOORS = {"transport", "transport-aiohttp", "transport-loop", "parser"}
CONTENDERS = FLOORS | {"streamkit", "streamkit-text", "streamkit-events", "streamkit-ui"}


def run_benchmarks(out: Path, contenders: str, timeout: float = 240) -> dict[str, Any]:
    options = ["--quick", "--sizes", str(SIZE), "--mixed-size", str(MIXED), "--contenders", contenders]
    options += ["--streams", str(STREAMS), "--stream-deltas", str(STREAM_DELTAS), "--ttft-runs", str(TTFT_RUNS)]
    options += ["--warmup-max", str(WARMUP)]
    command = [sys.executable, "-m", "benchmarks", *options, "--no-chart", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unclosed" not in done.stderr, done.stderr[-3000:]  # every worker closed its client
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
    assert meta["mode"] == "quick" and meta["loop"] == "asyncio"
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
    # The event loop's floor runs wherever the other transport floors do, and the chunk targets show it.
    for kind in ("ttft", "concurrent"):
        assert {"transport-aiohttp", "transport-loop"} <= {row["contender"] for row in rows if row["kind"] == kind}
    chunk = [target for target in report["targets"] if "/ parser floor <= 0.5 (chunk-text" in target["target"]]
    assert chunk and all("; loop floor " in target["detail"] for target in chunk)
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


def transcript_deltas(kind: str, content: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict[str, Any]]:
    """The pieces of a 1,000-delta benchmark stream, in order, and what the stream holds."""
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks._content import transcript

    body, outcome = transcript(kind, 1000, content)
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
    deltas = [event["delta"] for event in events if event["type"] == "content_block_delta"]
    assert [event["type"] for event in events[-2:]] == ["message_delta", "message_stop"]
    assert events[-2]["usage"] == {"output_tokens": outcome["deltas"]} and len(deltas) == outcome["deltas"] == 1000
    return [delta.get("text", delta.get("partial_json")) for delta in deltas], outcome


def test_realistic_text_is_prose_in_token_sized_deltas_with_some_non_ascii(monkeypatch: pytest.MonkeyPatch) -> None:
    pieces, outcome = transcript_deltas("text", "realistic", monkeypatch)
    assert "".join(pieces) == outcome["text"] and outcome["stop_reason"] == "end_turn"
    assert (sum(map(len, pieces)), min(map(len, pieces)), max(map(len, pieces))) == (15238, 3, 28)
    assert sum(any(ord(char) > 0x7F for char in piece) for piece in pieces) == 32  # é, —, “ ”, emoji
    assert sum(any(ord(char) > 0xFFFF for char in piece) for piece in pieces) == 3  # emoji: 4 bytes a character
    assert all(mark in outcome["text"] for mark in ("\n\n## ", "\n- **", ", ", ". ", " (", "? ", "`"))


def test_realistic_tool_input_is_nested_utf8_json_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    pieces, outcome = transcript_deltas("tool", "realistic", monkeypatch)
    assert json.loads("".join(pieces)) == outcome["tool_input"] and outcome["stop_reason"] == "tool_use"
    assert (sum(map(len, pieces)), min(map(len, pieces)), max(map(len, pieces))) == (15445, 5, 26)
    assert sum(any(ord(char) > 0x7F for char in piece) for piece in pieces) == 18  # raw UTF-8, not \\u escapes
    section = outcome["tool_input"]["sections"][0]
    assert set(section) == {"heading", "paragraphs", "tags", "metrics", "links"}
    assert set(section["metrics"]) == {"words", "score", "reviewed"}


def test_ascii_content_is_lorem_in_four_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkit.testing import lorem

    pieces, outcome = transcript_deltas("text", "ascii", monkeypatch)
    assert set(map(len, pieces)) == {4} and "".join(pieces) == outcome["text"] == lorem(4000, seed=0)
    pieces, outcome = transcript_deltas("tool", "ascii", monkeypatch)
    assert outcome["tool_input"] == {"path": "notes/draft.md", "content": lorem(4000, seed=1)}
    assert json.loads("".join(pieces)) == outcome["tool_input"] and set(map(len, pieces)) == {4, 5}


@pytest.mark.parametrize(("value", "message"), [("0", "0"), ("-3", "-3"), ("many", "'many'")])
def test_warmup_max_takes_a_whole_number_of_at_least_one(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from benchmarks.__main__ import add_options

    parser = argparse.ArgumentParser()
    add_options(parser)
    assert parser.parse_args(["--warmup-max", "1"]).warmup_max == 1
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--warmup-max", value])
    assert exited.value.code == 2
    expected = f"python -m benchmarks: error: argument --warmup-max: expected a whole number >= 1, not {message}"
    assert capsys.readouterr().err.splitlines()[-1] == expected


def test_loop_is_asyncio_or_uvloop_where_installed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from benchmarks.__main__ import add_options

    parser = argparse.ArgumentParser()
    add_options(parser)
    assert parser.parse_args([]).loop is None  # the plan's default: asyncio
    assert parser.parse_args(["--loop", "asyncio"]).loop == "asyncio"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--loop", "trio"])
    assert exited.value.code == 2
    expected = "python -m benchmarks: error: argument --loop: expected one of asyncio, uvloop, not 'trio'"
    assert capsys.readouterr().err.splitlines()[-1] == expected
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: neither found nor importable
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--loop", "uvloop"])
    assert exited.value.code == 2
    expected = "argument --loop: uvloop is not installed (pip install -e '.[bench]'; not on Windows)"
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m benchmarks: error: {expected}"
