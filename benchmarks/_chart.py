"""CPU per delta against stream length, one event per chunk: ``python -m benchmarks chart`` (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE = {
    "streamkit": {"color": "#1b7837", "marker": "o", "label": "streamkit get_final_message()"},
    "streamkit-text": {"color": "#5aae61", "marker": "v", "label": "streamkit text_stream"},
    "streamkit-events": {"color": "#762a83", "marker": "P", "label": "streamkit async for event"},
    "streamkit-ui": {"color": "#c2a5cf", "marker": "X", "label": "streamkit current_message per event"},
    "parser": {"color": "#2166ac", "marker": "s", "label": "parser floor: httpx-sse + json.loads"},
    "transport": {"color": "#878787", "marker": "^", "label": "transport floor: httpx aiter_bytes"},
    "anthropic": {"color": "#b2182b", "marker": "D", "label": "anthropic SDK get_final_message()"},
}


def points(report: dict[str, Any], kind: str, contender: str, framing: str = "chunk") -> tuple[list[int], list[float]]:
    pairs = sorted(
        (row["size"], row["cpu_s"]["median"] / row["deltas"] * 1e6)
        for row in report["results"]
        if row["kind"] == kind
        and row["contender"] == contender
        and row.get("framing", "bulk") == framing
        and "error" not in row
    )
    return [size for size, _ in pairs], [value for _, value in pairs]


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    meta = report["meta"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for axis, kind, title in zip(
        axes,
        ("text", "tool"),
        ("text: N text_delta events", "tool_use: input in N input_json_delta pieces"),
        strict=True,
    ):
        for contender, style in STYLE.items():
            xs, ys = points(report, kind, contender)
            if xs:
                axis.plot(xs, ys, linewidth=1.8, markersize=5, **style)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"))
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("stream length (deltas)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("client CPU per delta (µs), whole stream")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.suptitle(
        "CPU per event, one SSE event per HTTP chunk, over loopback; "
        f"{meta['cpu']}, Python {meta['python']}; "
        f"anthropic {meta['versions'].get('anthropic') or '-'}, streamkit {meta['versions']['streamkit']}"
        f" ({meta.get('streamkit_tree') or '-'})",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
