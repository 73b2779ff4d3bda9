"""``python -m benchmarks accumulator``: streamkit.MessageAccumulator alone, fed pre-decoded event dicts.

No network, no JSON decoding: the events are built once as dicts, then fed to a fresh
accumulator per run and the final ``message`` read (that builds the pydantic Message).
The floor is the least any accumulator does: dispatch on type, append the delta's
string to a list, join at the end (and ``json.loads`` tool input).  Plain timing loop,
``time.perf_counter``, median of runs; well under a minute.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from streamkit import MessageAccumulator
from streamkit.testing import lorem

from ._scenarios import CHARS_PER_DELTA, human
from ._worker import Outcome, _apply, _finish

SIZES = (1_000, 10_000, 100_000)


def _pieces(text: str, n: int) -> list[str]:
    return [text[k * len(text) // n : (k + 1) * len(text) // n] for k in range(n)]


def events(kind: str, size: int) -> list[dict[str, Any]]:
    """A whole stream as decoded JSON objects: message_start ... message_stop."""
    out: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_benchmark",
                "type": "message",
                "role": "assistant",
                "model": "claude-mock-1",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
        }
    ]
    blocks: list[tuple[dict[str, Any], str, list[str]]] = []
    third = max(1, size // 3)
    if kind in ("thinking", "mixed"):
        n = third if kind == "mixed" else size
        blocks.append(
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                "thinking_delta",
                _pieces(lorem(CHARS_PER_DELTA * n, seed=2), n),
            )
        )
    if kind in ("text", "mixed"):
        n = third if kind == "mixed" else size
        blocks.append(({"type": "text", "text": ""}, "text_delta", _pieces(lorem(CHARS_PER_DELTA * n), n)))
    if kind in ("tool", "mixed"):
        n = third if kind == "mixed" else size
        raw = json.dumps({"path": "notes/draft.md", "content": lorem(CHARS_PER_DELTA * n, seed=1)})
        start = {"type": "tool_use", "id": "toolu_benchmark", "name": "write_file", "input": {}}
        blocks.append((start, "input_json_delta", _pieces(raw, n)))
    field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
    for index, (start, delta_type, pieces) in enumerate(blocks):
        out.append({"type": "content_block_start", "index": index, "content_block": start})
        out.extend(
            {"type": "content_block_delta", "index": index, "delta": {"type": delta_type, field[delta_type]: piece}}
            for piece in pieces
        )
        if delta_type == "thinking_delta":
            out.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": "sig"},
                }
            )
        out.append({"type": "content_block_stop", "index": index})
    out.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": size},
        }
    )
    out.append({"type": "message_stop"})
    return out


def streamkit_run(stream: list[dict[str, Any]]) -> Any:
    accumulator = MessageAccumulator()
    feed = accumulator.feed
    for event in stream:
        feed(event)
    return accumulator.message


def floor_run(stream: list[dict[str, Any]]) -> Any:
    parts: list[list[str]] = []
    kinds: list[str] = []
    outcome = Outcome()
    for event in stream:
        _apply(event, parts, kinds, outcome)
    _finish(parts, kinds, outcome)
    return outcome


def measure(run: Callable[[list[dict[str, Any]]], Any], stream: list[dict[str, Any]], repeat: int) -> float:
    times = []
    run(stream)  # warm-up
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run(stream)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeat: int = 5, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    rows = []
    print(
        f"{'stream':<12} {'events':>8} {'streamkit ev/s':>15} {'us/event':>9}"
        f" {'floor ev/s':>12} {'us/event':>9} {'ratio':>6}"
    )
    for kind in ("text", "tool", "mixed"):
        for size in sizes:
            stream = events(kind, size)
            message = streamkit_run(stream)
            if kind == "text":
                assert message.text == lorem(CHARS_PER_DELTA * size), "accumulated text differs"
            sk = measure(streamkit_run, stream, repeat)
            floor = measure(floor_run, stream, repeat)
            row = {
                "stream": f"{kind}-{human(size)}",
                "events": len(stream),
                "streamkit_s": sk,
                "streamkit_events_per_s": len(stream) / sk,
                "floor_s": floor,
                "floor_events_per_s": len(stream) / floor,
                "ratio": sk / floor,
            }
            rows.append(row)
            print(
                f"{row['stream']:<12} {len(stream):>8} {row['streamkit_events_per_s']:>15,.0f}"
                f" {sk / len(stream) * 1e6:>9.3f}"
                f" {row['floor_events_per_s']:>12,.0f} {floor / len(stream) * 1e6:>9.3f} {row['ratio']:>6.2f}",
                flush=True,
            )
    return {"repeat": repeat, "rows": rows}
