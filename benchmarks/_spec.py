"""What a worker is told to do, and the request every contender sends (no streamkit import here).

Workers of the floors and of the official SDK must not import streamkit (it would cost
them memory and import time that is not theirs), so the reply header and the expected
outcome reach them in a JSON file written by the orchestrator.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HEADER = "x-streamkit-mock-reply"
MODEL = "claude-mock-1"
MAX_TOKENS = 1024
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Write it all."}]


@dataclass(frozen=True)
class Spec:
    """One worker process's job; sent to it as JSON on the command line."""

    scenario: str  # a row of the table, e.g. "text-10k"
    kind: str  # text | tool | mixed | ttft | concurrent | resume
    reply_file: str  # JSON: {"header": ..., "expected": {...}} of the measured stream
    warmup_file: str  # the same for the warm-up stream
    sha: str  # SHA-256 of the header, as the orchestrator computed it
    base_url: str = ""
    runs: int = 3
    streams: int = 0  # concurrent streams (kind "concurrent")
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Expected:
    """What the final message must hold, for checking each contender off the clock."""

    thinking: str | None
    text: str | None
    tool_input: dict[str, Any] | None
    deltas: int  # content_block_delta events in the stream
    stop_reason: str


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def load_reply(path: str) -> tuple[str, Expected]:
    data = json.loads(Path(path).read_text())
    return data["header"], Expected(**data["expected"])


def request_body() -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES, "stream": True}
