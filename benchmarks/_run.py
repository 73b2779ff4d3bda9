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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._scenarios import human, reply_file
from ._server import REPO, child_env, mock_server, raise_file_limit, stop
from ._spec import HEADER, Spec, request_body

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_OUT = RESULTS / "latest.json"
CHART = RESULTS / "cpu_per_event.png"
COMMITTED_CHART = HERE / "cpu_per_event.png"

ALL_CONTENDERS = ("transport", "parser", "anthropic", "streamkit")
LABELS = {
    "transport": "httpx aiter_bytes (transport floor)",
    "parser": "httpx-sse + json.loads (parser floor)",
    "anthropic": "anthropic SDK (peer)",
    "streamkit": "streamkit",
}
SIZES = (1_000, 10_000, 20_000, 100_000)
QUICK_SIZES = (1_000,)
ANTHROPIC_MAX = 20_000  # the SDK is quadratic: bigger sizes only with --full
WARMUP_MAX = 10_000  # deltas of the warm-up stream at most
LARGE = 100_000  # sizes from here on use --repeat-large
MEMORY_NOTE = (
    "peak RSS of the client process over its whole life, warm-up included: VmHWM from /proc/self/status"
    " (ru_maxrss would add the parent's peak, which Linux carries into a child at exec)"
)

# Targets (issue): printed as PASS/MISS, never fail the process.
CPU_RATIO_MAX = 1.25
LINEAR_MAX = 1.3
TTFT_MARGIN_S = 0.002
CONCURRENT_RSS_MAX_MB = 300
RESUME_MAX = 1.05


@dataclass
class Options:
    quick: bool = False
    full: bool = False
    repeat: int = 5
    repeat_large: int = 3
    sizes: tuple[int, ...] = SIZES
    contenders: tuple[str, ...] = ALL_CONTENDERS
    streams: int = 1000
    stream_deltas: int = 200
    concurrent_runs: int = 3
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
    reply: tuple[str, int, float]  # (stream kind, deltas, delay) of the measured reply
    warmup: tuple[str, int, float]
    streams: int = 0


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def plan(options: Options) -> list[Job]:
    """Every job, scenario by scenario (so the server's reply caches stay warm)."""
    jobs: list[Job] = []
    contenders = [c for c in options.contenders if c != "anthropic" or have("anthropic")]
    peer_max = max(options.sizes) if options.full else ANTHROPIC_MAX

    def runs_for(size: int) -> int:
        return options.repeat_large if size >= LARGE else options.repeat

    for kind in ("text", "tool"):
        for size in options.sizes:
            warm = (kind, min(size, WARMUP_MAX), 0.0)
            for name in contenders:
                if name == "anthropic" and size > peer_max:
                    continue
                runs = 1 if name == "anthropic" else runs_for(size)
                jobs.append(Job(f"{kind}-{human(size)}", kind, size, name, runs, (kind, size, 0.0), warm))
    mixed = options.mixed_size
    for name in contenders:
        runs = 1 if name == "anthropic" else runs_for(mixed)
        warm = ("mixed", min(mixed, WARMUP_MAX), 0.0)
        jobs.append(Job(f"mixed-{human(mixed)}", "mixed", mixed, name, runs, ("mixed", mixed, 0.0), warm))
    # Time to first text: the whole reply at once (worst case for a decoder that works a
    # network chunk at a time), and paced 1 ms per event as a live generation arrives.
    for scenario, size, delay in (("ttft-burst-1k", 1000, 0.0), ("ttft-paced", 50, 0.001)):
        for name in contenders:
            reply = ("text", size, delay)
            jobs.append(Job(scenario, "ttft", size, name, options.ttft_runs, reply, reply))
    for name in (c for c in ("parser", "streamkit") if c in contenders):
        reply = ("text", options.stream_deltas, 0.0)
        scenario = f"concurrent-{options.streams}x{options.stream_deltas}"
        jobs.append(
            Job(
                scenario,
                "concurrent",
                options.stream_deltas,
                name,
                options.concurrent_runs,
                reply,
                reply,
                options.streams,
            )
        )
    if "streamkit" in contenders:
        for kind in ("text", "tool"):
            size = max(options.sizes)
            warm = (kind, min(size, WARMUP_MAX), 0.0)
            runs = max(options.repeat, 3) if not options.quick else 1
            jobs.append(Job(f"resume-{kind}-{human(size)}", "resume", size, "streamkit", runs, (kind, size, 0.0), warm))
    return jobs


# -- running ---------------------------------------------------------------------------


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
    jobs = plan(options)
    raise_file_limit(max(4096, 2 * options.streams + 512))
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="streamkit-bench-") as directory, mock_server() as base_url:
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
            )
            t0 = time.perf_counter()
            result = run_worker(job.contender, spec, options.timeout)
            row = {
                "scenario": job.scenario,
                "kind": job.kind,
                "stream_kind": job.reply[0],
                "size": job.size,
                "contender": job.contender,
                **result,
            }
            results.append(row)
            status = f"ERROR {result['error']}" if "error" in result else _brief(row)
            options.log(
                f"[{number}/{len(jobs)}] {job.scenario:<22} {job.contender:<10}"
                f" {time.perf_counter() - t0:6.1f}s  {status}"
            )
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
        "cpu_time": "time.process_time() of the client process around the measured part; medians of runs",
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


def stream_scenarios(results: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in results:
        if row["kind"] in ("text", "tool", "mixed") and row["scenario"] not in seen:
            seen.append(row["scenario"])
    return seen


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for scenario in stream_scenarios(results):
        sk = _cpu(_find(results, scenario, "streamkit"))
        parser = _cpu(_find(results, scenario, "parser"))
        peer = _cpu(_find(results, scenario, "anthropic"))
        out[scenario] = {
            "streamkit_over_parser_floor": sk / parser if sk and parser else None,
            "anthropic_over_streamkit": peer / sk if peer and sk else None,
        }
    return out


def _target(name: str, value: float | None, limit: float, unit: str, detail: str = "") -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"target": name, "value": value, "limit": limit, "unit": unit, "pass": ok, "detail": detail}


def targets(results: list[dict[str, Any]], options: Options) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ratio = ratios(results)
    for scenario, values in ratio.items():
        out.append(
            _target(
                f"CPU streamkit/parser-floor <= {CPU_RATIO_MAX} ({scenario})",
                values["streamkit_over_parser_floor"],
                CPU_RATIO_MAX,
                "x",
            )
        )
    for kind in ("text", "tool"):
        small, large = min(options.sizes), max(options.sizes)
        if small == large:
            continue
        a = _find(results, f"{kind}-{human(small)}", "streamkit")
        b = _find(results, f"{kind}-{human(large)}", "streamkit")
        cpu_a, cpu_b = _cpu(a), _cpu(b)
        per_a = cpu_a / small if cpu_a else None
        per_b = cpu_b / large if cpu_b else None
        value = per_b / per_a if per_a and per_b else None
        detail = f"{per_a * 1e6:.2f} -> {per_b * 1e6:.2f} us/delta" if per_a and per_b else ""
        out.append(
            _target(
                f"linear: streamkit CPU/delta at {human(large)} / at {human(small)} <= {LINEAR_MAX} ({kind})",
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
            detail = f"completed streams per run: {row.get('completed_streams')} of {row.get('streams')}"
            out.append(
                _target(
                    f"{row['scenario']}: all complete, peak RSS < {CONCURRENT_RSS_MAX_MB} MB",
                    value,
                    CONCURRENT_RSS_MAX_MB,
                    "MB",
                    detail,
                )
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


def table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["results"]
    v = meta["versions"]
    lines = [
        "streamkit benchmarks",
        f"machine: {meta['cpu']}, {meta['cores']} cores; {meta['implementation']} {meta['python']}; {meta['os']}",
        "versions: " + ", ".join(f"{name} {v.get(name) or '-'}" for name in v),
        f"mode: {meta['mode']}; medians of {meta['repeat']} runs (sizes >= 100k: {meta['repeat_large']}); "
        f"anthropic: 1 run per size, sizes <= {human(meta['anthropic_max_size'])}",
        f"CPU: {meta['cpu_time']}",
        f"memory: {meta['memory']}",
        "",
        "Whole stream, consumed and final message built",
        f"{'scenario':<12} {'contender':<10} {'runs':>4} {'CPU s':>9} {'us/delta':>9} {'wall s':>9}"
        f" {'peak MB':>8}  check",
    ]
    for scenario in stream_scenarios(results):
        for row in results:
            if row["scenario"] != scenario:
                continue
            if "error" in row:
                lines.append(f"{scenario:<12} {row['contender']:<10} ERROR: {row['error']}")
                continue
            cpu = row["cpu_s"]["median"]
            check = "ok" if row["completed"] == row["runs"] else f"MISMATCH {row['errors']}"
            lines.append(
                f"{scenario:<12} {row['contender']:<10} {row['runs']:>4} {cpu:>9.4f} {cpu / row['deltas'] * 1e6:>9.2f}"
                f" {row['wall_s']['median']:>9.4f} {row['peak_rss_mb']:>8.1f}  {check} ({row['deltas']} deltas)"
            )
    lines += ["", "CPU ratios", f"{'scenario':<12} {'streamkit/parser-floor':>22} {'anthropic/streamkit':>20}"]
    for scenario, values in report["ratios"].items():
        lines.append(
            f"{scenario:<12} {_fmt(values['streamkit_over_parser_floor'], '.2f'):>22}"
            f" {_fmt(values['anthropic_over_streamkit'], '.1f'):>20}"
        )
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
            "Concurrent streams from one process",
            f"{'scenario':<22} {'contender':<10} {'runs':>4} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}"
            f" {'base MB':>8}  completed",
        ]
        for row in concurrent:
            if "error" in row:
                lines.append(f"{row['scenario']:<22} {row['contender']:<10} ERROR: {row['error']}")
                continue
            lines.append(
                f"{row['scenario']:<22} {row['contender']:<10} {row['runs']:>4} {row['wall_s']['median']:>8.3f}"
                f" {row['cpu_s']['median']:>8.3f} {row['peak_rss_mb']:>8.1f} {row['baseline_rss_mb']:>8.1f}"
                f"  {row['completed_streams']} of {row['streams']} per run"
                + (f" ERRORS {row['errors']}" if row["errors"] else "")
            )
    resume = [row for row in results if row["kind"] == "resume"]
    if resume:
        lines += [
            "",
            "Resume in steady state (no fault), streamkit, interleaved runs",
            f"{'scenario':<16} {'runs':>4} {'auto CPU s':>10} {'off CPU s':>10} {'auto/off':>8}",
        ]
        for row in resume:
            if "error" in row:
                lines.append(f"{row['scenario']:<16} ERROR: {row['error']}")
                continue
            a, o = row["cpu_s"]["auto"]["median"], row["cpu_s"]["off"]["median"]
            lines.append(f"{row['scenario']:<16} {row['runs']:>4} {a:>10.4f} {o:>10.4f} {a / o:>8.3f}")
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
