"""The mock replies: which one each scenario streams and what a client must end up with.

Built once by the orchestrator and written to a JSON file per reply, so every
contender sends the same header and receives the same bytes (fixed message and
request ids), and each worker checks the header's SHA-256.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from streamkit.testing import Reply, TextBlock, ThinkingBlock, ToolUseBlock, lorem

from ._spec import Expected, sha

CHARS_PER_DELTA = 4
TOOL_NAME = "write_file"
PACE_HZ = 50  # events per second per stream in the paced framing, as a live generation flushes tokens

# How the server frames a stream: (seconds between events, one HTTP chunk and socket write per event).
# "chunk" is what the real API does minus the pacing, so it isolates the client's per-chunk cost;
# "paced" adds the real API's pace; "bulk" packs events into 64 KiB writes (many events per read).
FRAMINGS: dict[str, tuple[float, bool]] = {
    "chunk": (0.0, True),
    "paced": (1 / PACE_HZ, True),
    "bulk": (0.0, False),
}


def _tool_input(pieces: int) -> dict[str, Any]:
    # About CHARS_PER_DELTA characters of JSON per piece, like the text scenarios.
    return {"path": "notes/draft.md", "content": lorem(CHARS_PER_DELTA * pieces, seed=1)}


def build(kind: str, size: int, delay: float = 0.0, per_event: bool = False) -> tuple[Reply, Expected]:
    """The reply for a stream shape (text, tool or mixed) of ``size`` deltas, and its outcome."""
    common: dict[str, Any] = {
        "message_id": "msg_benchmark",
        "request_id": "req_benchmark",
        "delay": delay,
        "chunk_per_event": per_event,
    }
    if kind == "text":
        text = lorem(CHARS_PER_DELTA * size)
        reply = Reply(blocks=[TextBlock(text, chunk_size=CHARS_PER_DELTA)], **common)
        return reply, Expected(None, text, None, size, "end_turn")
    if kind == "tool":
        data = _tool_input(size)
        reply = Reply(blocks=[ToolUseBlock(TOOL_NAME, data, pieces=size)], stop_reason="tool_use", **common)
        return reply, Expected(None, None, data, size, "tool_use")
    if kind == "mixed":
        third = max(1, size // 3)
        thinking = lorem(CHARS_PER_DELTA * third, seed=2)
        text = lorem(CHARS_PER_DELTA * third, seed=3)
        data = _tool_input(third)
        reply = Reply(
            blocks=[
                ThinkingBlock(thinking, chunk_size=CHARS_PER_DELTA),
                TextBlock(text, chunk_size=CHARS_PER_DELTA),
                ToolUseBlock(TOOL_NAME, data, pieces=third),
            ],
            stop_reason="tool_use",
            **common,
        )
        # + 1: the thinking block's signature_delta
        return reply, Expected(thinking, text, data, 3 * third + 1, "tool_use")
    raise ValueError(f"unknown stream kind {kind!r}")


@lru_cache(maxsize=64)
def reply_file(directory: str, kind: str, size: int, delay: float = 0.0, per_event: bool = False) -> tuple[str, str]:
    """Write the reply's header and expected outcome to a file; its path and the header's SHA-256."""
    reply, expected = build(kind, size, delay, per_event)
    value = reply.header_value()
    path = Path(directory) / f"{kind}-{size}-{delay:g}-{'event' if per_event else 'bulk'}.json"
    path.write_text(json.dumps({"header": value, "expected": asdict(expected)}))
    return str(path), sha(value)


def human(size: int) -> str:
    """1000 -> "1k", 100000 -> "100k", 1500 -> "1500"."""
    return f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else str(size)
