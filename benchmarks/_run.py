"""The orchestrator of ``python -m benchmarks``: plan, run the workers, print, judge, save."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._scenarios import FRAMINGS, PACE_HZ, human, reply_file
from ._server import REPO, child_env, mock_server_process, raise_file_limit, stop
from ._spec import HEADER, Spec, request_body
from ._worker import CONTENDERS, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_OUT = RESULTS / "latest.json"
CHART = RESULTS / "cpu_per_event.png"
COMMITTED_CHART = HERE / "cpu_per_event.png"

ALL_CONTENDERS = CONTENDERS
LABELS = {
    "transport": "httpx aiter_bytes (transport floor)",
    "parser": "httpx-sse + json.loads (parser floor)",
    "anthropic": "anthropic SDK get_final_message() (peer)",
    "streamkit": "streamkit get_final_message()",
    "streamkit-text": "streamkit text_stream",
    "streamkit-events": "streamkit async for event (typed)",
    "streamkit-ui": "streamkit UI: current_message after every event",
}
SIZES = (1_000, 20_000, 100_000)
QUICK_SIZES = (1_000,)
BULK_CONTENDERS = ("transport", "parser", "anthropic", "streamkit", "streamkit-events")
BASE_CONTENDERS = ("transport", "parser", "anthropic", "streamkit")  # time to first text
ANTHROPIC_MAX = 20_000  # the SDK costs ~45 us/event: bigger sizes only with --full
# current_message re-reads the partial tool input at every event (quadratic: 147 us/delta at 100k
# pieces vs 71 at 20k): bigger tool streams for the UI contender only with --full.
UI_TOOL_MAX = 20_000
WARMUP_MAX = 10_000  # deltas of the warm-up stream at most
LARGE = 100_000  # sizes from here on use --repeat-large
STREAM_KINDS = ("text", "tool", "mixed")  # jobs and rows of whole-stream scenarios
RESUME_MAX_SIZE = 20_000  # the resume comparison runs 2 x repeat streams: no bigger than this
PEER_STREAMS = 1_000  # concurrent streams of the official SDK (its default pool), and of the like-for-like row
MEMORY_NOTE = (
    "peak RSS of the client process over its whole life, warm-up included: VmHWM from /proc/self/status"
    " (ru_maxrss would add the parent's peak, which Linux carries into a child at exec)"
)
FRAMING_NOTES = {
    "chunk": "one SSE event per HTTP chunk and per socket write, unpaced (the real API's framing, at full speed)",
    "paced": f"one SSE event per HTTP chunk and socket write, {PACE_HZ} events/s per stream (nominal)",
    "bulk": "events packed into 64 KiB socket writes (many events per read)",
}

# Targets (issue 8): printed as PASS/MISS, never fail the process.
CHUNK_FINAL_MAX = 1.0  # streamkit get_final_message() / parser floor, one event per chunk
CHUNK_EVENTS_MAX = 1.3  # streamkit async for event / parser floor, one event per chunk
BULK_RATIO_MAX = 1.25  # streamkit get_final_message() / parser floor, bulk (secondary)
LINEAR_MAX = 1.3
TTFT_MARGIN_S = 0.002
CONCURRENT_RSS_MAX_MB = 1e9 / 2**20  # 1 GB, in MiB (peak_rss_mb is MiB)
PEER_RSS_MAX_MB = 300  # at up to 1,000 streams
RESUME_MAX = 1.05


@dataclass
class Options:
    quick: bool = False
    full: bool = False
    repeat: int = 5
    repeat_large: int = 3
    sizes: tuple[int, ...] = SIZES
    contenders: tuple[str, ...] = ALL_CONTENDERS
    streams: int = 10_000
    stream_deltas: int = 20
    concurrent_runs: int = 1
    ttft_runs: int = 15
    mixed_size: int = 30_000
    out: Path = DEFAULT_OUT
    chart: bool = True
    timeout: float = 900.0
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))

    @classmethod
    def quick_mode(cls, **changes: Any) -> Options:
        base = {
            "quick": True,
            "repeat": 1,
            "repeat_large": 1,
            "sizes": QUICK_SIZES,
            "streams": 100,
            "concurrent_runs": 1,
            "ttft_runs": 3,
            "mixed_size": 300,
        }
        return cls(**{**base, **changes})


@dataclass(frozen=True)
class Job:
    """One worker process: a contender on a scenario."""

    scenario: str
    kind: str
    size: int  # deltas per stream
    contender: str
    runs: int
    reply: tuple[str, int, float, bool]  # (stream kind, deltas, delay, one chunk per event) of the measured reply
    warmup: tuple[str, int, float, bool]
    streams: int = 0
    framing: str = "chunk"


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _shape(kind: str, size: int, framing: str) -> tuple[str, int, float, bool]:
    return (kind, size, *FRAMINGS[framing])


def plan(options: Options) -> list[Job]:
    """Every job, scenario by scenario (so the server's reply caches stay warm)."""
    jobs: list[Job] = []
    contenders = [c for c in options.contenders if c != "anthropic" or have("anthropic")]
    peer_max = max(options.sizes) if options.full else ANTHROPIC_MAX

    def runs_for(size: int) -> int:
        return options.repeat_large if size >= LARGE else options.repeat

    def streams(framing: str, kind: str, sizes: Iterable[int], names: Iterable[str]) -> None:
        for size in sizes:
            reply = _shape(kind, size, framing)
            warm = _shape(kind, min(size, WARMUP_MAX), framing)
            for name in names:
                if name == "anthropic" and size > peer_max:
                    continue
                if name == "streamkit-ui" and kind == "tool" and size > UI_TOOL_MAX and not options.full:
                    continue
                runs = 1 if name == "anthropic" else runs_for(size)
                scenario = f"{framing}-{kind}-{human(size)}"
                jobs.append(Job(scenario, kind, size, name, runs, reply, warm, framing=framing))

    # The headline: one event per chunk, every contender; then the bulk framing, fewer of them.
    for kind in ("text", "tool"):
        streams("chunk", kind, options.sizes, contenders)
    streams("chunk", "mixed", [options.mixed_size], [c for c in contenders if c in BULK_CONTENDERS])
    for kind in ("text",) if options.quick else ("text", "tool"):  # --quick: a smoke run, kept short
        streams("bulk", kind, options.sizes, [c for c in contenders if c in BULK_CONTENDERS])
    # Time to first text: the whole reply in one write (worst case for a decoder that works a
    # network chunk at a time), one event per chunk, and paced 1 ms per event as a live generation.
    ttft = (
        ("ttft-bulk-1k", 1000, 0.0, False),
        ("ttft-chunk-1k", 1000, 0.0, True),
        ("ttft-paced", 50, 0.001, True),
    )
    for scenario, size, delay, per_event in ttft[1:2] if options.quick else ttft:
        for name in (c for c in contenders if c in BASE_CONTENDERS):
            reply = ("text", size, delay, per_event)
            framing = "bulk" if not per_event else "paced" if delay else "chunk"
            jobs.append(Job(scenario, "ttft", size, name, options.ttft_runs, reply, reply, framing=framing))
    # Concurrency: paced streams (each event its own chunk, 50/s nominal) from one process.
    reply = _shape("text", options.stream_deltas, "paced")
    peer = min(PEER_STREAMS, options.streams)
    # At 10,000 streams a run takes a minute per contender: the floors there only with --full.
    rows: list[tuple[int, tuple[str, ...]]] = [
        (options.streams, ("transport", "parser", "streamkit") if options.full else ("streamkit",))
    ]
    if peer < options.streams:
        rows.append((peer, ("parser", "streamkit", "anthropic")))
    else:
        rows[0] = (peer, ("transport", "parser", "streamkit", "anthropic"))
    for count, names in rows:
        scenario = f"paced-{count}x{options.stream_deltas}"
        for name in (c for c in names if c in contenders):
            runs = options.concurrent_runs
            jobs.append(
                Job(scenario, "concurrent", options.stream_deltas, name, runs, reply, reply, count, framing="paced")
            )
    if "streamkit" in contenders:
        size = min(max(options.sizes), RESUME_MAX_SIZE)
        for kind in ("text", "tool"):
            runs = max(options.repeat, 3) if not options.quick else 1
            reply, warm = _shape(kind, size, "chunk"), _shape(kind, min(size, WARMUP_MAX), "chunk")
            jobs.append(Job(f"resume-chunk-{kind}-{human(size)}", "resume", size, "streamkit", runs, reply, warm))
    return jobs


# -- running ---------------------------------------------------------------------------


def in_turns(jobs: list[Job]) -> list[Job]:
    """Whole-stream jobs as one run per worker, the contenders of a scenario taking turns.

    A shared machine's speed drifts over seconds; taking turns spreads a slow spell over
    every contender instead of loading it onto whichever ran during it.
    """
    schedule: list[Job] = []
    group: list[Job] = []

    def flush() -> None:
        for turn in range(max((job.runs for job in group), default=0)):
            schedule.extend(replace(job, runs=1) for job in group if turn < job.runs)
        group.clear()

    for job in jobs:
        if job.kind not in STREAM_KINDS or (group and group[0].scenario != job.scenario):
            flush()
        if job.kind in STREAM_KINDS:
            group.append(job)
        else:
            schedule.append(job)
    flush()
    return schedule


def merge_turns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario and contender: the runs of its turns together (an error wins)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["scenario"], row["contender"])
        first = merged.setdefault(key, row)
        if first is row or "error" in first:
            continue
        if "error" in row:
            merged[key] = row
            continue
        for name in ("cpu_s", "wall_s"):
            first[name] = summary(first[name]["all"] + row[name]["all"])
        first["peak_rss_mb"] = max(first["peak_rss_mb"], row["peak_rss_mb"])
        first["runs"] += row["runs"]
        first["completed"] += row["completed"]
        first["errors"] = (first["errors"] + row["errors"])[:3]
    return list(merged.values())


def prewarm(base_url: str, header: str) -> None:
    """One request so the server renders (and caches) the reply before any worker's clock runs."""
    import httpx

    with (
        httpx.Client(timeout=120, trust_env=False) as client,
        client.stream("POST", f"{base_url}/v1/messages", json=request_body(), headers={HEADER: header}) as response,
    ):
        for _ in response.iter_bytes():
            pass


def run_worker(contender: str, spec: Spec, timeout: float) -> dict[str, Any]:
    """``python -m benchmarks._worker`` in a clean process; its one JSON line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._worker", contender, spec.to_json()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        return {"error": f"worker timed out after {timeout:.0f} s"}
    finally:
        stop(process)  # also on Ctrl-C
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"worker exited {process.returncode} without a result: {err.strip()[-1500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if err.strip() and "error" in result:
        result["stderr"] = err.strip()[-1500:]
    return result


def run_all(options: Options) -> dict[str, Any]:
    jobs = in_turns(plan(options))
    raise_file_limit(max(4096, 2 * options.streams + 512))
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="streamkit-bench-") as directory,
        mock_server_process() as (base_url, server),
    ):
        options.log(f"mock server at {base_url}; {len(jobs)} worker processes")
        warmed: set[str] = set()
        for number, job in enumerate(jobs, 1):
            reply_path, reply_sha = reply_file(directory, *job.reply)
            warm_path, warm_sha = reply_file(directory, *job.warmup)
            for path, digest in ((reply_path, reply_sha), (warm_path, warm_sha)):
                if digest not in warmed:
                    prewarm(base_url, json.loads(Path(path).read_text())["header"])
                    warmed.add(digest)
            spec = Spec(
                scenario=job.scenario,
                kind=job.kind,
                reply_file=reply_path,
                warmup_file=warm_path,
                sha=reply_sha,
                base_url=base_url,
                runs=job.runs,
                streams=job.streams,
                options={"server_pid": server.pid},
            )
            t0 = time.perf_counter()
            result = run_worker(job.contender, spec, options.timeout)
            row = {
                "scenario": job.scenario,
                "kind": job.kind,
                "framing": job.framing,
                "stream_kind": job.reply[0],
                "size": job.size,
                "contender": job.contender,
                **result,
            }
            results.append(row)
            status = f"ERROR {result['error']}" if "error" in result else _brief(row)
            options.log(
                f"[{number}/{len(jobs)}] {job.scenario:<22} {job.contender:<16}"
                f" {time.perf_counter() - t0:6.1f}s  {status}"
            )
    results = merge_turns(results)
    report = {
        "meta": machine(options, time.perf_counter() - started),
        "results": results,
    }
    report["ratios"] = ratios(results)
    report["targets"] = targets(results, options)
    return report


def _brief(row: dict[str, Any]) -> str:
    if "ttft_s" in row:
        return f"ttft {row['ttft_s']['median'] * 1e3:.2f} ms"
    cpu = row.get("cpu_s", {})
    if "median" in cpu:
        return f"cpu {cpu['median']:.4f} s"
    return "cpu " + " ".join(f"{k}={v['median']:.4f}s" for k, v in cpu.items())


# -- machine and versions -----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _streamkit_tree() -> str | None:
    """The last commit that touched streamkit/ (what the figures measure), "+dirty" if it has local edits."""
    log = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "streamkit/"], cwd=REPO, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "streamkit/"], cwd=REPO, capture_output=True, text=True
    )
    return (log.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) or None


def machine(options: Options, seconds: float) -> dict[str, Any]:
    import streamkit

    versions = {name: _version(name) for name in ("httpx", "httpx-sse", "pydantic", "anyio", "anthropic")}
    versions["streamkit"] = streamkit.__version__
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "versions": versions,
        "streamkit_commit": git.stdout.strip() or None,
        "mode": "quick" if options.quick else "full" if options.full else "default",
        "repeat": options.repeat,
        "repeat_large": options.repeat_large,
        "anthropic_runs_per_size": 1,
        "anthropic_max_size": max(options.sizes) if options.full else ANTHROPIC_MAX,
        "memory": MEMORY_NOTE,
        "cpu_time": (
            "time.process_time() of the client process around the measured part; medians of runs;"
            " whole streams: one run per worker process, after a warm-up, the contenders of a scenario taking turns"
        ),
        "framings": FRAMING_NOTES,
        "streamkit_tree": _streamkit_tree(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seconds": round(seconds, 1),
    }


# -- judging ------------------------------------------------------------------------------


def _find(results: Iterable[dict[str, Any]], scenario: str, contender: str) -> dict[str, Any] | None:
    for row in results:
        if row["scenario"] == scenario and row["contender"] == contender and "error" not in row:
            return row
    return None


def _cpu(row: dict[str, Any] | None) -> float | None:
    if row is None or "median" not in row.get("cpu_s", {}):
        return None
    return float(row["cpu_s"]["median"])


def stream_scenarios(results: list[dict[str, Any]], framing: str | None = None) -> list[str]:
    seen: list[str] = []
    for row in results:
        wanted = framing is None or row["framing"] == framing
        if wanted and row["kind"] in STREAM_KINDS and row["scenario"] not in seen:
            seen.append(row["scenario"])
    return seen


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per stream scenario: each contender's CPU over the parser floor's, and the SDK's over streamkit's."""
    out: dict[str, dict[str, float | None]] = {}
    for scenario in stream_scenarios(results):
        parser = _cpu(_find(results, scenario, "parser"))
        values: dict[str, float | None] = {}
        for name in ALL_CONTENDERS:
            cpu = _cpu(_find(results, scenario, name))
            if name != "parser" and cpu is not None:
                values[f"{name}_over_parser_floor"] = cpu / parser if parser else None
        sk, peer = _cpu(_find(results, scenario, "streamkit")), _cpu(_find(results, scenario, "anthropic"))
        values["anthropic_over_streamkit"] = peer / sk if peer and sk else None
        out[scenario] = values
    return out


def _target(name: str, value: float | None, limit: float, unit: str, detail: str = "") -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"target": name, "value": value, "limit": limit, "unit": unit, "pass": ok, "detail": detail}


def _per_delta(row: dict[str, Any] | None) -> str:
    cpu = _cpu(row)
    return f"{cpu / row['deltas'] * 1e6:.2f} us/delta" if cpu and row else "-"


def targets(results: list[dict[str, Any]], options: Options) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ratio = ratios(results)
    checks = (
        ("chunk", "streamkit", CHUNK_FINAL_MAX, "get_final_message()"),
        ("chunk", "streamkit-events", CHUNK_EVENTS_MAX, "async for event"),
        ("bulk", "streamkit", BULK_RATIO_MAX, "get_final_message()"),
    )
    for framing, name, limit, how in checks:
        for scenario in stream_scenarios(results, framing):
            if _find(results, scenario, name) is None and _find(results, scenario, "parser") is None:
                continue
            detail = f"{_per_delta(_find(results, scenario, name))} vs {_per_delta(_find(results, scenario, 'parser'))}"
            out.append(
                _target(
                    f"CPU streamkit {how} / parser floor <= {limit} ({scenario})",
                    ratio[scenario].get(f"{name}_over_parser_floor"),
                    limit,
                    "x",
                    detail,
                )
            )
    for kind in ("text", "tool"):
        small, large = min(options.sizes), max(options.sizes)
        if small == large:
            continue
        a = _find(results, f"chunk-{kind}-{human(small)}", "streamkit")
        b = _find(results, f"chunk-{kind}-{human(large)}", "streamkit")
        cpu_a, cpu_b = _cpu(a), _cpu(b)
        per_a = cpu_a / small if cpu_a else None
        per_b = cpu_b / large if cpu_b else None
        value = per_b / per_a if per_a and per_b else None
        detail = f"{per_a * 1e6:.2f} -> {per_b * 1e6:.2f} us/delta" if per_a and per_b else ""
        out.append(
            _target(
                f"linear: streamkit CPU/delta at {human(large)} / at {human(small)} <= {LINEAR_MAX} (chunk-{kind})",
                value,
                LINEAR_MAX,
                "x",
                detail,
            )
        )
    for scenario in sorted({row["scenario"] for row in results if row["kind"] == "ttft"}):
        sk, parser = _find(results, scenario, "streamkit"), _find(results, scenario, "parser")
        value = sk["ttft_s"]["median"] - parser["ttft_s"]["median"] if sk and parser else None
        detail = (
            f"{sk['ttft_s']['median'] * 1e3:.2f} ms vs {parser['ttft_s']['median'] * 1e3:.2f} ms"
            if sk and parser
            else ""
        )
        out.append(
            _target(
                f"time to first text within 2 ms of the parser floor ({scenario})", value, TTFT_MARGIN_S, "s", detail
            )
        )
    for row in results:
        if row["kind"] == "concurrent" and row["contender"] == "streamkit":
            complete = "error" not in row and row["completed"] == row["runs"]
            value = row.get("peak_rss_mb") if complete else None
            limit = CONCURRENT_RSS_MAX_MB if row.get("streams", 0) > PEER_STREAMS else PEER_RSS_MAX_MB
            shown = "1 GB" if limit == CONCURRENT_RSS_MAX_MB else f"{limit} MB"
            detail = f"completed streams per run: {row.get('completed_streams')} of {row.get('streams')}"
            out.append(
                _target(f"{row['scenario']}: all complete, client peak RSS < {shown}", value, limit, "MB", detail)
            )
    for row in results:
        if row["kind"] == "resume":
            cpu = row.get("cpu_s", {})
            ok = "auto" in cpu and "off" in cpu
            value = cpu["auto"]["median"] / cpu["off"]["median"] if ok else None
            detail = f"auto {cpu['auto']['median']:.4f} s vs off {cpu['off']['median']:.4f} s" if ok else ""
            out.append(
                _target(
                    f"resume='auto' (no fault) within 5% of resume=False ({row['scenario']})",
                    value,
                    RESUME_MAX,
                    "x",
                    detail,
                )
            )
    for row in results:
        if "error" in row or row.get("completed") != row.get("runs"):
            out.append(
                _target(
                    f"{row['scenario']} {row['contender']}: every run received the whole reply",
                    None,
                    0,
                    "",
                    str(row.get("error") or row.get("errors")),
                )
            )
    return out


# -- printing -----------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def concurrency(row: dict[str, Any]) -> dict[str, float | None]:
    """What a concurrent run achieved: deltas per second in aggregate, CPU per delta, who was busy."""
    wall, cpu = row["wall_s"]["median"], row["cpu_s"]["median"]
    deltas = row["streams"] * row["deltas"]
    server = row.get("server_cpu_s", {}).get("median")
    return {
        "deltas_per_s": deltas / wall,
        "nominal_deltas_per_s": row["streams"] * PACE_HZ,
        "client_us_per_delta": cpu / deltas * 1e6,
        "client_busy": cpu / wall,
        "server_busy": server / wall if server is not None else None,
    }


def _stream_rows(results: list[dict[str, Any]], framing: str, ratio: dict[str, dict[str, float | None]]) -> list[str]:
    lines = [
        f"{'scenario':<16} {'contender':<16} {'runs':>4} {'CPU s':>9} {'us/delta':>9} {'/parser':>8} {'wall s':>9}"
        f" {'peak MB':>8}  check",
    ]
    for scenario in stream_scenarios(results, framing):
        for row in results:
            if row["scenario"] != scenario:
                continue
            if "error" in row:
                lines.append(f"{scenario:<16} {row['contender']:<16} ERROR: {row['error']}")
                continue
            cpu = row["cpu_s"]["median"]
            over = 1.0 if row["contender"] == "parser" else ratio[scenario].get(f"{row['contender']}_over_parser_floor")
            check = "ok" if row["completed"] == row["runs"] else f"MISMATCH {row['errors']}"
            lines.append(
                f"{scenario:<16} {row['contender']:<16} {row['runs']:>4} {cpu:>9.4f}"
                f" {cpu / row['deltas'] * 1e6:>9.2f} {_fmt(over, '.2f'):>8} {row['wall_s']['median']:>9.4f}"
                f" {row['peak_rss_mb']:>8.1f}  {check} ({row['deltas']} deltas)"
            )
    return lines


def table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["results"]
    v = meta["versions"]
    lines = [
        "streamkit benchmarks",
        f"machine: {meta['cpu']}, {meta['cores']} cores; {meta['implementation']} {meta['python']}; {meta['os']}",
        "versions: " + ", ".join(f"{name} {v.get(name) or '-'}" for name in v),
        f"streamkit measured: commit {meta.get('streamkit_tree')} (last change under streamkit/)",
        f"mode: {meta['mode']}; medians of {meta['repeat']} runs (sizes >= 100k: {meta['repeat_large']}); "
        f"anthropic: 1 run per size, sizes <= {human(meta['anthropic_max_size'])}",
        f"CPU: {meta['cpu_time']}",
        f"memory: {meta['memory']}",
        "contenders: " + "; ".join(f"{name} = {label}" for name, label in LABELS.items()),
    ]
    for framing, title in (
        ("chunk", "One event per chunk: whole stream consumed, final message built (the headline)"),
        ("bulk", "Bulk framing (secondary): the same streams in 64 KiB writes"),
    ):
        if stream_scenarios(results, framing):
            lines += ["", f"{title}", f"framing: {FRAMING_NOTES[framing]}"]
            lines += _stream_rows(results, framing, report["ratios"])
    ttft = [row for row in results if row["kind"] == "ttft"]
    if ttft:
        lines += [
            "",
            "Time to first text delta (request sent -> first text delta), ms",
            f"{'scenario':<14} {'contender':<10} {'runs':>4} {'median':>8} {'min':>8} {'max':>8}  check",
        ]
        for row in ttft:
            if "error" in row:
                lines.append(f"{row['scenario']:<14} {row['contender']:<10} ERROR: {row['error']}")
                continue
            t = row["ttft_s"]
            check = "ok" if row["completed"] == row["runs"] else f"MISMATCH {row['errors']}"
            lines.append(
                f"{row['scenario']:<14} {row['contender']:<10} {row['runs']:>4} {t['median'] * 1e3:>8.3f}"
                f" {t['min'] * 1e3:>8.3f} {t['max'] * 1e3:>8.3f}  {check}"
            )
    concurrent = [row for row in results if row["kind"] == "concurrent"]
    if concurrent:
        lines += [
            "",
            f"Concurrent paced streams from one process ({FRAMING_NOTES['paced']}); server in its own process",
            f"{'scenario':<16} {'contender':<10} {'runs':>4} {'wall s':>7} {'CPU s':>7} {'us/delta':>8}"
            f" {'peak MB':>8} {'deltas/s':>9} {'nominal':>9} {'client':>6} {'server':>6}  completed",
        ]
        for row in concurrent:
            if "error" in row:
                lines.append(f"{row['scenario']:<16} {row['contender']:<10} ERROR: {row['error']}")
                continue
            c = concurrency(row)
            lines.append(
                f"{row['scenario']:<16} {row['contender']:<10} {row['runs']:>4} {row['wall_s']['median']:>7.2f}"
                f" {row['cpu_s']['median']:>7.2f} {c['client_us_per_delta']:>8.1f} {row['peak_rss_mb']:>8.1f}"
                f" {c['deltas_per_s']:>9.0f} {c['nominal_deltas_per_s']:>9.0f} {c['client_busy']:>6.0%}"
                f" {_fmt(c['server_busy'], '.0%'):>6}  {row['completed_streams']} of {row['streams']} per run"
                + (f" ERRORS {row['errors']}" if row["errors"] else "")
            )
        lines.append(
            "(client/server: CPU time over wall time of that process during the runs; near 100% = that process"
            " was the bottleneck; deltas/s achieved in aggregate vs nominal = streams x pace; all streams"
            " share one client, up to 1,000 connections)"
        )
    resume = [row for row in results if row["kind"] == "resume"]
    if resume:
        lines += [
            "",
            "Resume in steady state (no fault), streamkit, one event per chunk, interleaved runs",
            f"{'scenario':<22} {'runs':>4} {'auto CPU s':>10} {'off CPU s':>10} {'auto/off':>8}",
        ]
        for row in resume:
            if "error" in row:
                lines.append(f"{row['scenario']:<22} ERROR: {row['error']}")
                continue
            a, o = row["cpu_s"]["auto"]["median"], row["cpu_s"]["off"]["median"]
            lines.append(f"{row['scenario']:<22} {row['runs']:>4} {a:>10.4f} {o:>10.4f} {a / o:>8.3f}")
    lines += ["", "Targets"]
    for target in report["targets"]:
        value = target["value"]
        if value is None:
            shown = "n/a"
        elif target["unit"] == "s":
            shown = f"{value * 1e3:+.3f} ms"
        elif target["unit"] == "MB":
            shown = f"{value:.1f} MB"
        else:
            shown = f"{value:.3f}x"
        detail = f"  [{target['detail']}]" if target["detail"] else ""
        lines.append(f"{'PASS' if target['pass'] else 'MISS'}  {target['target']}: {shown}{detail}")
    return "\n".join(lines)


def save(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def write_chart(report: dict[str, Any], paths: Iterable[Path]) -> list[Path]:
    """The CPU-per-delta chart (needs matplotlib, a benchmark extra); the paths written."""
    if not have("matplotlib"):
        return []
    from ._chart import chart

    written = []
    targets = list(paths)
    first = targets[0]
    chart(report, first)
    written.append(first)
    for path in targets[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, path)
        written.append(path)
    return written
