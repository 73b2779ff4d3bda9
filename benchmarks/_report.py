"""From pyperf's benchmarks and the ledger of checks to rows, ratios to the parser floor, targets, table and chart."""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ._content import ASCII_CHARS_PER_DELTA, REALISTIC_CHARS_PER_DELTA, TOKENS_PER_DELTA
from ._scenarios import FRAMINGS, PACE_HZ, PEER_STREAMS, UI_READERS, Job, Plan, human, tag

# The versions reported.
PACKAGES = ("httpx", "httpx-sse", "pydantic", "anyio", "aiohttp", "uvloop", "anthropic", "pyperf", "streamkit")
# Targets (issues 8 and 14): printed as PASS/MISS, never fail the process.  One event per chunk, the first content:
# get_final_message(), async for event, and a UI reading current_message per event, over the parser floor.
CHUNK_FINAL_MAX, CHUNK_EVENTS_MAX, CHUNK_UI_MAX = 0.5, 0.6, 0.7
BULK_RATIO_MAX, LINEAR_MAX = 1.25, 1.3  # LINEAR_MAX: CPU per delta (or the UI's ratio) at the largest size / smallest
TTFT_MARGIN_S, RESUME_MAX = 0.002, 1.05
SYNC_MAX = 1.2  # the sync client's CPU over the async client's, get_final_message(), one event per chunk
CONCURRENT_RSS_MAX_MB, PEER_RSS_MAX_MB = 1e9 / 2**20, 300  # 1 GB in MiB; up to 1,000 streams


def stats(values: list[float], bench: Any = None) -> dict[str, Any]:
    """Median and spread: pyperf's (median, median absolute deviation) for its values, else statistics'."""
    median = bench.median() if bench else statistics.median(values)
    mad = bench.median_abs_dev() if bench else statistics.median(abs(value - median) for value in values)
    return {"median": median, "mad": mad, "min": min(values), "max": max(values), "all": values}


def row(job: Job, bench: Any, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """One result row: pyperf's values (every process, every value) and what the ledger says of each stream."""
    mine = [check for check in checks if check["bench"] == job.name]
    runs = [check for check in mine if check["phase"] == "run"]
    values = [float(value) for value in bench.get_values()]
    out: dict[str, Any] = {"scenario": job.scenario, "kind": job.kind, "framing": job.reply[2]}
    out |= {"stream_kind": job.reply[0], "size": job.reply[1], "content": job.reply[3], "contender": job.contender}
    out |= {"deltas": runs[0]["deltas"] if runs else None, "runs": len(values), "processes": bench.get_nrun()}
    out |= {"checked": len(runs), "completed": sum(check["problem"] is None for check in runs)}
    out |= {"errors": [check["problem"] for check in runs if check["problem"]][:3]}
    out["ttft_s" if job.kind == "ttft" else "cpu_s"] = stats(values, bench)
    out["wall_s"] = stats([check["wall"] for check in runs])
    out["peak_rss_mb"] = max(check["rss"] for check in mine)
    if problems := [check["problem"] for check in mine if check["phase"] == "setup" and check["problem"]]:
        out["error"] = f"warm-up: {problems[0]}"
    if job.kind == "concurrent":
        out |= {"streams": job.streams, "completed_streams": [check["completed"] for check in runs]}
        out["server_cpu_s"] = stats([check["server_cpu"] for check in runs])
    return out


def build(plan: Plan, benches: list[tuple[Job, Any]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The report: machine and versions (pyperf's metadata, git), rows, ratios and targets."""
    results, first = [row(job, bench, checks) for job, bench in benches], benches[0][1].get_metadata()
    installed = {dist.metadata["Name"].lower(): dist.version for dist in metadata.distributions()}
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    tree = subprocess.run([*git, "log", "-1", "--format=%h", "--", "streamkit/"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "streamkit/"], capture_output=True, text=True)
    meta = {
        "cpu": first.get("cpu_model_name"),
        "cores": first.get("cpu_count"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "versions": {name: installed.get(name) for name in PACKAGES},
        "streamkit_tree": (tree.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) or None,
        "mode": "quick" if plan.quick else "full" if plan.full else "default",
        "loop": plan.loop,  # every worker's event loop (--loop)
        "cpu_time": "time.process_time() of the client process per stream; pyperf worker processes, one per"
        " contender per round, the contenders of a scenario taking turns; medians of every value",
        "memory": "peak RSS of the client process over its whole life, warm-up included (VmHWM)",
        "framings": FRAMINGS,  # (seconds between events, one chunk and write per event)
        "contents": {
            "realistic": f"English prose, {TOKENS_PER_DELTA[0]}-{TOKENS_PER_DELTA[1]} tokens a delta (about"
            f" {REALISTIC_CHARS_PER_DELTA} characters), with the odd em-dash, curly quote, accented word and emoji;"
            f" tool input: nested JSON in raw UTF-8, about {REALISTIC_CHARS_PER_DELTA} characters a delta",
            "ascii": f"lorem in {ASCII_CHARS_PER_DELTA}-character ASCII deltas; tool input in slices of the same size",
        },
        "content_order": list(plan.contents),  # the first: the targets, and the other scenarios' content
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    for r in (r for r in results if r["kind"] == "stream"):  # the ratios: CPU over the parser floor's
        parser = cpu(find(results, r["scenario"], "parser"))
        r["over_parser_floor"] = cpu(r) / parser if parser and cpu(r) and "error" not in r else None  # type: ignore[operator]
    return {"meta": meta, "results": results, "targets": targets(results, plan)}


def find(results: Iterable[dict[str, Any]], scenario: str, contender: str) -> dict[str, Any] | None:
    rows = (r for r in results if r["scenario"] == scenario and r["contender"] == contender)
    return next((r for r in rows if "error" not in r), None)


def cpu(r: dict[str, Any] | None) -> float | None:
    return float(r["cpu_s"]["median"]) if r and "cpu_s" in r else None


def _target(name: str, value: float | None, limit: float, unit: str, detail: str = "") -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"target": name, "value": value, "limit": limit, "unit": unit, "pass": ok, "detail": detail}


def _per_delta(r: dict[str, Any] | None) -> str:
    return f"{cpu(r) / r['deltas'] * 1e6:.2f} us/delta" if r and cpu(r) else "-"


def targets(results: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    out = []
    main = plan.contents[0]
    for framing, name, limit, how in (
        ("chunk", "streamkit", CHUNK_FINAL_MAX, "get_final_message()"),
        ("chunk", "streamkit-events", CHUNK_EVENTS_MAX, "async for event"),
        ("chunk", "streamkit-ui", CHUNK_UI_MAX, "UI reader (current_message per event)"),
        ("bulk", "streamkit", BULK_RATIO_MAX, "get_final_message()"),
    ):
        streams = (r for r in results if r["kind"] == "stream" and r["framing"] == framing and r["content"] == main)
        for scenario in dict.fromkeys(r["scenario"] for r in streams):
            mine, parser = find(results, scenario, name), find(results, scenario, "parser")
            if (mine or parser) and not (name == "streamkit-ui" and "mixed" in scenario):
                value = mine["over_parser_floor"] if mine else None
                label = f"CPU streamkit {how} / parser floor <= {limit} ({scenario})"
                detail = f"{_per_delta(mine)} vs {_per_delta(parser)}"
                if loop := find(results, scenario, "transport-loop"):  # what the event loop alone costs a stream
                    detail += f"; loop floor {_per_delta(loop)} ({_fmt(loop.get('over_parser_floor'), '.2f')}x)"
                out.append(_target(label, value, limit, "x", detail))
    small, large = min(plan.sizes), max(plan.sizes)
    for kind in ("text", "tool") if small != large else ():
        scenarios = [f"chunk-{kind}-{human(size)}{tag(main)}" for size in (small, large)]
        a, b = (cpu(find(results, scenario, "streamkit")) for scenario in scenarios)
        per = (a / small, b / large) if a and b else None
        detail = f"{per[0] * 1e6:.2f} -> {per[1] * 1e6:.2f} us/delta" if per else ""
        label = f"linear: streamkit CPU/delta at {human(large)} / at {human(small)} <= {LINEAR_MAX} ({scenarios[0]})"
        out.append(_target(label, per[1] / per[0] if per else None, LINEAR_MAX, "x", detail))
        ui = [(find(results, scenario, "streamkit-ui") or {}).get("over_parser_floor") for scenario in scenarios]
        detail = f"{ui[0]:.2f} -> {ui[1]:.2f} of the parser floor" if ui[0] and ui[1] else ""
        label = f"flat: UI reader over the floor at {human(large)} / at {human(small)} <= {LINEAR_MAX} ({scenarios[0]})"
        out.append(_target(label, ui[1] / ui[0] if ui[0] and ui[1] else None, LINEAR_MAX, "x", detail))
    for scenario in dict.fromkeys(r["scenario"] for r in results if r["kind"] == "ttft"):
        sk, parser = find(results, scenario, "streamkit"), find(results, scenario, "parser")
        both = (sk["ttft_s"]["median"], parser["ttft_s"]["median"]) if sk and parser else None
        detail = f"{both[0] * 1e3:.2f} ms vs {both[1] * 1e3:.2f} ms" if both else ""
        label = f"time to first text within 2 ms of the parser floor ({scenario})"
        out.append(_target(label, both[0] - both[1] if both else None, TTFT_MARGIN_S, "s", detail))
    for r in results:
        if r["kind"] == "concurrent" and r["contender"] == "streamkit":
            whole = "error" not in r and r["completed"] == r["runs"]
            limit = CONCURRENT_RSS_MAX_MB if r["streams"] > PEER_STREAMS else PEER_RSS_MAX_MB
            label = f"{r['scenario']}: all complete, client peak RSS < {'1 GB' if limit > 900 else f'{limit} MB'}"
            detail = f"completed streams per run: {r['completed_streams']} of {r['streams']}"
            out.append(_target(label, r["peak_rss_mb"] if whole else None, limit, "MB", detail))
    for scenario in dict.fromkeys(r["scenario"] for r in results if r["contender"] == "streamkit-sync"):
        sync, asyn = cpu(find(results, scenario, "streamkit-sync")), cpu(find(results, scenario, "streamkit"))
        detail = f"sync {sync:.4f} s vs async {asyn:.4f} s" if sync and asyn else ""
        label = f"streamkit.Client CPU / AsyncClient CPU <= {SYNC_MAX} ({scenario})"
        out.append(_target(label, sync / asyn if sync and asyn else None, SYNC_MAX, "x", detail))
    for scenario in dict.fromkeys(r["scenario"] for r in results if r["kind"] == "resume"):
        auto, off = cpu(find(results, scenario, "streamkit")), cpu(find(results, scenario, "streamkit-resume-off"))
        detail = f"auto {auto:.4f} s vs off {off:.4f} s" if auto and off else ""
        label = f"resume='auto' (no fault) within 5% of resume=False ({scenario})"
        out.append(_target(label, auto / off if auto and off else None, RESUME_MAX, "x", detail))
    for r in results:
        if "error" in r or r["completed"] != r["runs"] or r["checked"] != r["runs"]:
            label = f"{r['scenario']} {r['contender']}: every run received the whole reply"
            out.append(_target(label, None, 0, "", str(r.get("error") or r["errors"])))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def figure(r: dict[str, Any]) -> list[str]:
    """A row's figures: the median, its spread (pyperf's median absolute deviation), and the ratio or the extras."""
    if r["kind"] == "ttft":
        return [f"{r['ttft_s']['median'] * 1e3:.3f} ms", f"± {r['ttft_s']['mad'] * 1e3:.3f}", ""]
    cpu_s, wall = r["cpu_s"], r["wall_s"]["median"]
    if r["kind"] == "concurrent":  # CPU over wall near 100%: that process was the bottleneck
        busy = f"client {cpu_s['median'] / wall:.0%}, server {r['server_cpu_s']['median'] / wall:.0%}"
        rate = f"{r['streams'] * r['deltas'] / wall:.0f} deltas/s of {r['streams'] * PACE_HZ} nominal"
        return [f"{cpu_s['median']:.2f} s CPU", f"{wall:.2f} s wall", f"{rate}, {busy} busy"]
    per = 1e6 / r["deltas"]
    over = _fmt(r.get("over_parser_floor"), ".2f")
    return [f"{cpu_s['median'] * per:.2f} us/delta", f"± {cpu_s['mad'] * per:.2f}", over]


def aligned(rows: list[list[str]], right: Iterable[int] = ()) -> list[str]:
    widths, right = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))], set(right)
    pairs = (enumerate(zip(row, widths, strict=True)) for row in rows)
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in row).rstrip() for row in pairs]


def _chunk(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r["kind"] == "stream" and r["framing"] == "chunk" and "error" not in r]


def by_content(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """One event per chunk, a grid per content (the first first): CPU per delta (over the parser floor) of every
    contender, a stream a line; with two contents, each contender's CPU on the first over its CPU on the second."""
    rows, lines = _chunk(results), []
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    grids = {
        content: {(r["stream_kind"], r["size"], r["contender"]): r for r in rows if r["content"] == content}
        for content in meta.get("content_order", [])
    }
    for content, grid in grids.items():
        lines += ["", f"One event per chunk, {content} content: CPU per delta (over the parser floor)"]
        lines += [f"  ({meta['contents'][content]})"]
        table = [["stream", *contenders]]
        for kind, size in dict.fromkeys(key[:2] for key in grid):
            cells = [grid.get((kind, size, name)) for name in contenders]
            show = [
                f"{cpu(r) / r['deltas'] * 1e6:.1f} us ({_fmt(r.get('over_parser_floor'), '.2f')})" if r else "-"
                for r in cells
            ]
            table.append([f"{kind} {human(size)}", *show])
        lines += aligned(table, right=range(1, len(table[0])))
    if len(grids) == 2:
        (first, a), (second, b) = grids.items()
        lines += ["", f"CPU on {first} content / on {second} content, the same number of deltas"]
        table = [["stream", *contenders]]
        for kind, size in dict.fromkeys(key[:2] for key in a if key in b):
            pairs = [(cpu(a.get((kind, size, name))), cpu(b.get((kind, size, name)))) for name in contenders]
            table.append([f"{kind} {human(size)}", *(f"{x / y:.2f}" if x and y else "-" for x, y in pairs)])
        lines += aligned(table, right=range(1, len(table[0])))
    return lines


def ui_reader(results: list[dict[str, Any]]) -> list[str]:
    """A UI reading the message so far after every event, over the parser floor at each size: flat is linear."""
    rows = [r for r in _chunk(results) if r["contender"] in (*UI_READERS, "streamkit", "anthropic")]
    lines: list[str] = []
    for content in dict.fromkeys(r["content"] for r in rows):
        mine = [r for r in rows if r["content"] == content and r["stream_kind"] != "mixed"]
        sizes = sorted({r["size"] for r in mine})
        lines += ["", f"UI reader ({content} content), one event per chunk: CPU over the parser floor by size"]
        table = [["stream", "contender", *map(human, sizes), "largest/smallest"]]
        for kind in dict.fromkeys(r["stream_kind"] for r in mine):
            for name in ("streamkit-ui", "anthropic-ui", "streamkit", "anthropic"):
                ratio = {
                    r["size"]: r.get("over_parser_floor")
                    for r in mine
                    if r["contender"] == name and r["stream_kind"] == kind
                }
                if ratio:
                    ends = (ratio.get(sizes[0]), ratio.get(sizes[-1]))
                    flat = ends[1] / ends[0] if ends[0] and ends[1] and len(sizes) > 1 else None
                    table.append([kind, name, *(_fmt(ratio.get(size), ".2f") for size in sizes), _fmt(flat, ".2f")])
        lines += aligned(table, right=range(2, len(table[0])))
    return lines


def table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["results"]
    versions = ", ".join(f"{name} {version or '-'}" for name, version in meta["versions"].items())
    lines = [f"streamkit benchmarks ({meta['mode']}); {meta['cpu']}, {meta['cores']} cores; {meta['python']}"]
    lines[0] += f"; event loop: {meta.get('loop', 'asyncio')}"  # older reports: asyncio's
    lines += [f"versions: {versions}; streamkit/ at {meta['streamkit_tree']}", f"CPU: {meta['cpu_time']}"]
    lines += [f"memory: {meta['memory']}", ""]
    rows = [["scenario", "contender", "runs", "median", "spread", "/parser", "peak MB", "check"]]
    for r in results:
        whole = "ok" if r["completed"] == r["runs"] == r["checked"] else f"MISMATCH {r['errors']}"
        cells = figure(r) if "error" not in r else ["-", "-", ""]
        rows.append([r["scenario"], r["contender"], str(r["runs"]), *cells, f"{r['peak_rss_mb']:.1f}"])
        rows[-1].append(r.get("error") or whole)
    lines += aligned(rows, right=(2, 3, 4, 6))
    lines += by_content(results, meta) + ui_reader(results)
    lines += ["", "Not run (--full runs them):"] if meta.get("skipped") else []
    lines += [f"  {name}: {why}" for name, why in meta.get("skipped", {}).items()]
    lines += ["", "Targets"]
    for t in report["targets"]:
        value, unit = t["value"], t["unit"]
        shown = "n/a" if value is None else f"{value * 1e3:+.3f} ms" if unit == "s" else f"{value:.3f}x"
        shown = f"{value:.1f} MB" if unit == "MB" and value is not None else shown
        detail = f"  [{t['detail']}]" if t["detail"] else ""
        lines.append(f"{'PASS' if t['pass'] else 'MISS'}  {t['target']}: {shown}{detail}")
    return "\n".join(lines)


# -- the chart: ``python -m benchmarks chart`` -------------------------------------------------------------
CHART = Path(__file__).resolve().parent / "cpu_per_event.png"  # the committed copy, from a default run
STYLE = {
    "streamkit": {"color": "#1b7837", "marker": "o", "label": "streamkit get_final_message()"},
    "streamkit-text": {"color": "#5aae61", "marker": "v", "label": "streamkit text_stream"},
    "streamkit-events": {"color": "#762a83", "marker": "P", "label": "streamkit async for event"},
    "streamkit-ui": {"color": "#c2a5cf", "marker": "X", "label": "streamkit current_message per event"},
    "anthropic-ui": {"color": "#f4a582", "marker": "d", "label": "anthropic SDK current_message_snapshot per event"},
    "parser": {"color": "#2166ac", "marker": "s", "label": "parser floor: httpx-sse + json.loads"},
    "transport": {"color": "#878787", "marker": "^", "label": "transport floor: httpx aiter_bytes"},
    "transport-loop": {"color": "#bababa", "marker": "<", "label": "event loop floor: asyncio.Protocol counting bytes"},
    "anthropic": {"color": "#b2182b", "marker": "D", "label": "anthropic SDK get_final_message()"},
}


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    meta, main = report["meta"], report["meta"].get("content_order", ["ascii"])[0]  # older reports: ASCII only
    rows = [r for r in _chunk(report["results"]) if r.get("content", main) == main]
    figure, axes = plt.subplots(1, 2, figsize=(11, 5.0), sharey=True)
    titles = ("text: N text_delta events", "tool_use: input in N input_json_delta pieces")
    for axis, kind, title in zip(axes, ("text", "tool"), titles, strict=True):
        for contender, style in STYLE.items():
            mine = (r for r in rows if (r["stream_kind"], r["framing"], r["contender"]) == (kind, "chunk", contender))
            if points := sorted((r["size"], r["cpu_s"]["median"] / r["deltas"] * 1e6) for r in mine):
                axis.plot(*zip(*points, strict=True), linewidth=1.8, markersize=5, **style)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"))
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("stream length (deltas)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("client CPU per delta (µs), whole stream")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    versions = meta["versions"]
    figure.suptitle(
        f"CPU per event ({main} content), one SSE event per HTTP chunk, over loopback\n{meta['cpu']}, {meta['python']}"
        f" on {meta.get('loop', 'asyncio')};"
        f" anthropic {versions.get('anthropic') or '-'},"
        f" streamkit {versions['streamkit']} ({meta.get('streamkit_tree') or '-'})",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_chart(report: dict[str, Any], paths: list[Path]) -> list[Path]:
    """The chart at the first path, copied to the others; none without matplotlib (a benchmark extra)."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    chart(report, paths[0])
    for path in paths[1:]:
        shutil.copyfile(paths[0], path)
    return paths


def main(argv: list[str]) -> int:
    """``python -m benchmarks chart [RESULTS_JSON]``: the chart in benchmarks/results/ and its committed copy."""
    source = Path(argv[0]) if argv else CHART.parent / "results" / "latest.json"
    written = write_chart(json.loads(source.read_text()), [CHART.parent / "results" / CHART.name, CHART])
    print("\n".join(map(str, written)) or "matplotlib is not installed (pip install -e '.[bench]')")
    return 0 if written else 1
