"""Rebuild a Message from stream events: pure code, no I/O.

Feed it each event (the decoded JSON object, or a typed event) and read ``message``.
The cost is linear in the stream: a delta is appended to a list, and text is joined and
tool JSON parsed only when the snapshot is read (and once more at ``content_block_stop``
for tool input).  Reading the snapshot after every delta therefore costs what the
caller asks for, never a re-concatenation behind their back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json

from .errors import ProtocolError
from .message import (
    ContentBlock,
    Message,
    RedactedThinkingBlock,
    ServerToolUseBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    UnknownBlock,
    Usage,
)

_BLOCK_MODELS: dict[str, type[BaseModel]] = {
    "text": TextBlock,
    "tool_use": ToolUseBlock,
    "server_tool_use": ServerToolUseBlock,
    "thinking": ThinkingBlock,
    "redacted_thinking": RedactedThinkingBlock,
}
_TOOL_TYPES = frozenset({"tool_use", "server_tool_use"})
_APPEND_FIELD = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


class _Block:
    """One content block while it streams: appended parts, materialised on demand."""

    __slots__ = ("closed", "fields", "model", "parts")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.parts: list[str] = []
        self.closed = False
        self.model: ContentBlock | None = None

    @property
    def type(self) -> str:
        return str(self.fields.get("type"))

    def joined(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def build(self) -> ContentBlock:
        if self.model is not None:
            return self.model
        fields = dict(self.fields)
        kind = self.type
        raw = self.joined()
        if kind == "text":
            fields["text"] = fields.get("text", "") + raw
        elif kind == "thinking":
            fields["thinking"] = fields.get("thinking", "") + raw
        elif kind in _TOOL_TYPES and raw and not self.closed:
            fields["input"] = _parse_tool_input(raw)
        model_cls = _BLOCK_MODELS.get(kind, UnknownBlock)
        block: ContentBlock = model_cls.model_validate(fields)  # type: ignore[assignment]
        if isinstance(block, ToolUseBlock | ServerToolUseBlock):
            block._partial_json = raw
        self.model = block
        return block


def _parse_tool_input(raw: str) -> Any:
    """Parse unfinished tool JSON: complete values are kept, a trailing partial one dropped."""
    try:
        value = from_json(raw, allow_partial=True)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class MessageAccumulator:
    """Reassembles one Message; reusable without any network code."""

    __slots__ = ("_blocks", "_message", "_snapshot", "_usage", "finished")

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self._snapshot: Message | None = None
        self.finished = False

    def feed(self, event: Mapping[str, Any] | BaseModel) -> None:
        """Apply one event.  Raises ``ProtocolError`` for an event that cannot apply."""
        data: Mapping[str, Any] = event.model_dump() if isinstance(event, BaseModel) else event
        kind = data.get("type")
        try:
            if kind == "content_block_delta":
                self._delta(data["index"], data["delta"])
            elif kind == "content_block_start":
                self._blocks[data["index"]] = _Block(dict(data["content_block"]))
            elif kind == "content_block_stop":
                self._stop(data["index"])
            elif kind == "message_delta":
                self._message_delta(data)
            elif kind == "message_start":
                self._start(data["message"])
            elif kind == "message_stop":
                self.finished = True
            else:
                return  # ping, error and unknown events change nothing here
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"cannot apply {kind} event: {type(exc).__name__}: {exc}") from exc
        self._snapshot = None

    def _start(self, message: Mapping[str, Any]) -> None:
        self._message = {k: v for k, v in message.items() if k not in ("content", "usage")}
        self._usage = dict(message.get("usage") or {})
        self._blocks = {}
        for index, block in enumerate(message.get("content") or ()):
            self._blocks[index] = _Block(dict(block))
            self._blocks[index].closed = True

    def _delta(self, index: int, delta: Mapping[str, Any]) -> None:
        block = self._blocks.get(index)
        if block is None:
            raise KeyError(f"content block {index} was never started")
        block.model = None
        kind = delta["type"]
        field = _APPEND_FIELD.get(kind)
        if field is not None:
            block.parts.append(delta[field])
        elif kind == "signature_delta":
            block.fields["signature"] = delta["signature"]
        elif kind == "citations_delta":
            citations = block.fields.get("citations")
            block.fields["citations"] = [*(citations or ()), delta["citation"]]
        else:
            # Unknown delta: strings extend the block's field of the same name, as every
            # known delta does; other values replace it.
            for key, value in delta.items():
                old = block.fields.get(key)
                if key != "type":
                    block.fields[key] = old + value if isinstance(old, str) and isinstance(value, str) else value

    def _stop(self, index: int) -> None:
        block = self._blocks[index]
        block.closed = True
        if block.type in _TOOL_TYPES and (raw := block.joined()):  # a tool without arguments sends ""
            try:
                block.fields["input"] = from_json(raw)
            except ValueError as exc:
                raise ProtocolError(f"tool input of block {index} is not valid JSON: {exc}", data=raw.encode()) from exc
            block.model = None

    def _message_delta(self, data: Mapping[str, Any]) -> None:
        if self._message is None:
            raise KeyError("message_delta before message_start")
        self._message.update(data.get("delta") or {})
        for key, value in (data.get("usage") or {}).items():
            if value is not None:
                self._usage[key] = value

    @property
    def message(self) -> Message | None:
        """The reply so far (None before ``message_start``); a fresh object when it changed."""
        if self._message is None:
            return None
        if self._snapshot is None:
            self._snapshot = Message.model_validate(
                {**self._message, "content": [], "usage": Usage.model_validate(self._usage)}
            )
            self._snapshot.content = [block.build() for block in self._blocks.values()]
        return self._snapshot

    @property
    def open_block(self) -> int | None:
        """Index of the block still streaming, if any."""
        for index, block in self._blocks.items():
            if not block.closed:
                return index
        return None

    def truncate(self, count: int) -> None:
        """Drop every block from index ``count`` on (a block that cannot be resumed)."""
        for index in [i for i in self._blocks if i >= count]:
            del self._blocks[index]
        self._snapshot = None
