"""Rebuild a Message from stream events: pure code, no I/O.

Feed it each event (the decoded JSON object, or a typed event) and read ``message``.
The cost is linear in the stream: a delta is appended to a list, and text is joined and
tool JSON parsed only when the snapshot is read (and once more at ``content_block_stop``
for tool input).  Reading the snapshot after every delta (what a UI does) validates
nothing again: the changed block is a copy of its validated fields with the text
joined, or the tool input parsed incrementally (``PartialJSON``: only what arrived since
the last read), and unchanged blocks are reused.  Citations and unknown deltas are
appended the same way, each checked alone, not with the whole block.

Every event is checked when fed, so that reading ``message`` never fails, and the reply is
capped (``max_reply_bytes`` of content, ``max_blocks`` blocks) as it grows: a server that
sends without end is refused at the cap instead of exhausting memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, partial
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import from_json, to_json

from ._errors import ProtocolError
from ._limits import MAX_BLOCKS, MAX_REPLY_BYTES
from ._message import (
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
from ._partial import PartialJSON

_M = TypeVar("_M", bound=BaseModel)

_BLOCK_MODELS: dict[str, type[BaseModel]] = {
    "text": TextBlock,
    "tool_use": ToolUseBlock,
    "server_tool_use": ServerToolUseBlock,
    "thinking": ThinkingBlock,
    "redacted_thinking": RedactedThinkingBlock,
}
_TOOL_TYPES = frozenset({"tool_use", "server_tool_use"})
APPEND_FIELD = {  # delta type -> the field whose string it appends to the block
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
}


class _Block:
    """One content block while it streams: appended parts, materialised on demand."""

    __slots__ = ("closed", "extras", "fed", "fields", "model", "partial", "parts", "size", "tails", "template")

    def __init__(self, fields: dict[str, Any], size: int) -> None:
        self.fields = fields
        self.parts: list[str] = []  # text, thinking or tool JSON
        self.tails: dict[str, list[Any]] = {}  # appended to a field: strings to a string, citations to a list
        self.extras = 0  # deltas that set or add a field instead of appending (signature, citations ...)
        self.closed = False
        self.model: ContentBlock | None = None
        self.template: ContentBlock | None = None  # the block validated without its appended parts
        self.partial: PartialJSON | None = None  # tool input parsed so far, for snapshots
        self.fed = 0  # parts already fed to ``partial`` (-1: unknown since they were joined)
        self.size = size  # bytes counted against the reply's cap

    @property
    def type(self) -> str:
        return str(self.fields.get("type"))

    def joined(self) -> str:
        parts = self.parts
        if len(parts) > 1:
            self.fed = 1 if self.fed == len(parts) else -1
            parts[:] = ["".join(parts)]
        return parts[0] if parts else ""

    def prefix(self, length: int) -> str:
        """The first ``length`` characters of the joined parts (a tool block's ``input_json``, built when read)."""
        return self.joined()[:length]

    def _tool_input(self) -> dict[str, Any] | None:
        """The tool input so far, parsed from what arrived since the last read; None before any JSON text."""
        parser = self.partial
        if parser is None:
            parser = self.partial = PartialJSON()
        parts = self.parts
        new = "".join(parts[self.fed :]) if self.fed >= 0 else self.joined()[parser.length :]
        self.fed = len(parts)
        if not new and not parser.length:
            return None
        try:
            value = parser.read(new, self.joined)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def changed(self) -> None:
        """Fields other than the appended parts changed: validate the block again at the next build."""
        self.template = self.model = None

    def build(self) -> ContentBlock:
        """The block as it stands; a delta re-validates nothing (its part was checked when fed).

        The fields are validated once (again after a delta that is no plain append); each
        build copies that template with the joined parts: text and thinking appended to
        the start's, tool input parsed incrementally.
        """
        if self.model is not None:
            return self.model
        kind = self.type
        template = self.template
        if template is None:
            fields = dict(self.fields)
            for key, tail in self.tails.items():
                base = fields.get(key)
                fields[key] = base + "".join(tail) if isinstance(base, str) else [*(base or ()), *tail]
            template = self.template = _model_of(kind).model_validate(fields)  # type: ignore[assignment]
            assert template is not None
        if kind == "text" or kind == "thinking":
            block = _renewed(template, {kind: getattr(template, kind) + self.joined()})
        elif kind in _TOOL_TYPES:
            tool_input = None if self.closed else self._tool_input()
            if tool_input is None:
                block = _renewed(template, {}, {"_partial_json": self.joined()})
            else:  # the JSON text is joined only if the reader asks for it
                text = partial(self.prefix, self.partial.length)  # type: ignore[union-attr]
                block = _renewed(template, {"input": tool_input}, {"_partial_json": text})
        else:
            block = template
        self.model = block
        return block


_new, _set = object.__new__, object.__setattr__


def _renewed(model: _M, changes: dict[str, Any], private: dict[str, Any] | None = None) -> _M:
    """A shallow copy of a validated ``model`` with ``changes``: values of its type, already checked.

    ``model_copy(update=...)`` without its generic handling, as a snapshot is built per read;
    ``private`` sets private attributes.
    """
    new = _new(model.__class__)
    values = model.__dict__.copy()
    values.update(changes)
    _set(new, "__dict__", values)
    extra = model.__pydantic_extra__
    _set(new, "__pydantic_extra__", None if extra is None else extra.copy())
    _set(new, "__pydantic_fields_set__", model.__pydantic_fields_set__.union(changes))
    old = model.__pydantic_private__
    _set(new, "__pydantic_private__", None if old is None and not private else {**(old or {}), **(private or {})})
    return new


def _model_of(kind: object) -> type[BaseModel]:
    return _BLOCK_MODELS.get(kind, UnknownBlock) if isinstance(kind, str) else UnknownBlock


@cache
def _required(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name, field in model.model_fields.items() if field.is_required())


def _checked_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a content block, if they make a valid block; else ValueError."""
    if not isinstance(block, Mapping):
        raise TypeError(f"a content block is {type(block).__name__}, not an object")
    fields = dict(block)
    _model_of(fields.get("type")).model_validate(fields)
    return fields


def _check_changes(fields: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``changes`` are valid values of the block's fields.

    Only the changed fields (and those the model requires) are validated, so a block that
    grows by many deltas is never validated whole again.  A string checked alone stands
    for the longer string it extends: the models constrain types, not lengths.
    """
    model = _model_of(fields["type"])
    model.model_validate({**{key: fields[key] for key in _required(model)}, "type": fields["type"], **changes})


def _size(value: Any) -> int:
    """Bytes ``value`` adds to a reply: its UTF-8 length, or its JSON's.

    Raises ValueError for what JSON cannot hold (a lone surrogate, say): the reply could
    neither be parsed as tool input nor sent back in the next request.
    """
    if value.__class__ is str:
        return len(value) if value.isascii() else len(value.encode())
    return len(to_json(value))


def _checked_message(fields: Mapping[str, Any], usage: Mapping[str, Any]) -> Message:
    """The Message of these fields, without content (the template of every snapshot); else ValueError."""
    return Message.model_validate({**fields, "content": [], "usage": Usage.model_validate(usage)})


class MessageAccumulator:
    """Reassembles one Message; reusable without any network code."""

    __slots__ = (
        "_blocks",
        "_header",
        "_max_blocks",
        "_max_bytes",
        "_message",
        "_size",
        "_snapshot",
        "_usage",
        "finished",
    )

    def __init__(self, *, max_reply_bytes: int = MAX_REPLY_BYTES, max_blocks: int = MAX_BLOCKS) -> None:
        self._message: dict[str, Any] | None = None
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self._snapshot: Message | None = None
        self._header: Message | None = None  # the Message of _message and _usage, validated, without content
        self._size = 0  # bytes of content held, the sum of the blocks' sizes
        self._max_bytes = max_reply_bytes
        self._max_blocks = max_blocks
        self.finished = False

    def feed(self, event: Mapping[str, Any] | BaseModel) -> None:
        """Apply one event.  Raises ``ProtocolError`` for an event that cannot apply, changing nothing."""
        data: object = event
        if data.__class__ is not dict:  # decoded JSON is a dict: the checks below are for the rest
            data = event.model_dump() if isinstance(event, BaseModel) else event
            if not isinstance(data, Mapping):
                raise ProtocolError(f"an event is {type(data).__name__}, not an object")
        kind = data.get("type")
        try:
            if kind == "content_block_delta":
                self._delta(data["index"], data["delta"])
            elif kind == "content_block_start":
                self._block_start(data["index"], data["content_block"])
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
        except ProtocolError:
            raise
        except Exception as exc:  # whatever a malformed event breaks: nothing else may escape
            raise ProtocolError(f"cannot apply {kind} event: {type(exc).__name__}: {exc}") from exc
        self._snapshot = None

    def _checked_size(self, size: int) -> int:
        """``size`` (of the whole reply), if it is within ``max_reply_bytes``; else ProtocolError."""
        if size > self._max_bytes:
            cap = self._max_bytes
            raise ProtocolError(f"the reply holds more than max_reply_bytes={cap:,} bytes of content: refused")
        return size

    def _check_count(self, blocks: int) -> None:
        if blocks > self._max_blocks:
            raise ProtocolError(f"the reply holds more than max_blocks={self._max_blocks:,} content blocks: refused")

    def _start(self, message: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in message.items() if k not in ("content", "usage")}
        usage = dict(message.get("usage") or {})
        header = _checked_message(fields, usage)
        blocks: dict[int, _Block] = {}
        size = 0
        for index, content_block in enumerate(message.get("content") or ()):
            self._check_count(index + 1)
            block = blocks[index] = _Block(_checked_block(content_block), _size(content_block))
            block.closed = True
            size = self._checked_size(size + block.size)
        self._message, self._usage, self._blocks, self._size = fields, usage, blocks, size
        self._header = header

    def _block_start(self, index: int, content_block: Mapping[str, Any]) -> None:
        """A new block, checked here so that building the snapshot later cannot fail."""
        if type(index) is not int:
            raise TypeError(f"index {index!r} is not an integer")
        fields = _checked_block(content_block)
        old = self._blocks.get(index)
        if old is None:
            self._check_count(len(self._blocks) + 1)
        size = _size(fields)
        total = self._checked_size(self._size + size - (old.size if old is not None else 0))
        if fields["type"] == "fallback" and self._message is not None:
            # Another model took over the reply: the Message names the one that wrote it.
            target = fields.get("to")
            model = target.get("model") if isinstance(target, Mapping) else None
            if isinstance(model, str):
                self._message["model"] = model
                self._header = None
        self._blocks[index] = _Block(fields, size)
        self._size = total

    def _delta(self, index: int, delta: Mapping[str, Any]) -> None:
        """Append or set what the delta carries; everything is checked before anything changes."""
        block = self._blocks.get(index)
        if block is None:
            raise KeyError(f"content block {index} was never started")
        kind = delta["type"]
        field = APPEND_FIELD.get(kind)
        if field is not None:  # the hot path: a piece of text, thinking or tool input
            part = delta[field]
            if part.__class__ is not str:
                raise TypeError(f"{kind}.{field} is {type(part).__name__}, not a string")
            size = len(part) if part.isascii() else len(part.encode())  # raises for a lone surrogate
            total = self._size + size
            if total > self._max_bytes:
                self._checked_size(total)
            self._size = total
            block.parts.append(part)
            block.size += size
            block.model = None
            return
        if kind == "citations_delta":
            citation = delta["citation"]
            base = block.fields.get("citations")
            if base is not None and not isinstance(base, list):
                raise TypeError(f"the block's citations are {type(base).__name__}, not a list")
            _check_changes(block.fields, {"citations": [citation]})
            size = _size(citation)
            self._size = self._checked_size(self._size + size)
            block.tails.setdefault("citations", []).append(citation)
        else:
            # signature_delta sets the signature.  An unknown delta's strings extend the block's
            # string field of the same name, as every known delta does; other values replace it.
            if kind == "signature_delta":
                changes = {"signature": delta["signature"]}
            else:
                changes = {key: value for key, value in delta.items() if key != "type"}
            _check_changes(block.fields, changes)
            size = sum(map(_size, changes.values()))
            self._size = self._checked_size(self._size + size)
            for key, value in changes.items():
                if kind != "signature_delta" and isinstance(value, str) and isinstance(block.fields.get(key), str):
                    block.tails.setdefault(key, []).append(value)
                else:
                    block.fields[key] = value
                    block.tails.pop(key, None)
        block.size += size
        block.extras += 1
        block.changed()

    def _stop(self, index: int) -> None:
        block = self._blocks[index]
        if block.type in _TOOL_TYPES and (raw := block.joined()):  # a tool without arguments sends ""
            try:
                block.fields["input"] = from_json(raw)
            except ValueError as exc:
                raise ProtocolError(f"tool input of block {index} is not valid JSON: {exc}", data=raw.encode()) from exc
            block.changed()
        block.closed = True
        block.partial = None

    def _message_delta(self, data: Mapping[str, Any]) -> None:
        """Merge ``delta`` and every other top-level field (``context_management`` ...).

        A null never erases what an earlier event set: the API sends each field with
        null when that event does not change it.
        """
        if self._message is None:
            raise KeyError("message_delta before message_start")
        message = dict(self._message)
        for key, value in data.items():
            if key == "delta":
                message.update((k, v) for k, v in (value or {}).items() if v is not None)
            elif key not in ("type", "usage") and value is not None:
                message[key] = value
        usage = dict(self._usage)
        usage.update((k, v) for k, v in (data.get("usage") or {}).items() if v is not None)
        header = _checked_message(message, usage)
        self._message, self._usage, self._header = message, usage, header

    @property
    def message(self) -> Message | None:
        """The reply so far (None before ``message_start``); a fresh object when it changed.

        What did not change since the last snapshot (a block, the usage) is shared with it.
        """
        if self._message is None:
            return None
        if self._snapshot is None:
            header = self._header
            if header is None:
                header = self._header = _checked_message(self._message, self._usage)
            content = [block.build() for block in self._blocks.values()]
            self._snapshot = _renewed(header, {"content": content})
        return self._snapshot

    @property
    def open_block(self) -> int | None:
        """Index of the block still streaming, if any."""
        for index, block in self._blocks.items():
            if not block.closed:
                return index
        return None

    def blocks_from(self, index: int) -> list[tuple[int, _Block]]:
        """The blocks at ``index`` and after, in order (what a resume is about to drop)."""
        return [(i, block) for i, block in self._blocks.items() if i >= index]

    def is_text(self, index: int) -> bool:
        block = self._blocks.get(index)
        return block is not None and block.type == "text"

    def text_length(self, index: int) -> int:
        """Characters of text in the text blocks before ``index``: what ``text_stream`` showed of them."""
        return sum(
            len(block.fields.get("text") or "") + len(block.joined())
            for i, block in self._blocks.items()
            if i < index and block.type == "text"
        )

    def truncate(self, count: int) -> None:
        """Drop every block from index ``count`` on (a block that cannot be resumed)."""
        for index in [i for i in self._blocks if i >= count]:
            self._size -= self._blocks.pop(index).size
        self._snapshot = None
