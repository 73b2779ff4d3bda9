"""Turning a Reply into wire bytes, and working out which part of it a request asks for.

Rendering happens once per (reply, continuation) and is cached by the server:
a benchmark streaming 100,000 deltas must find the bytes ready, not wait for
100,000 pydantic or ``json.dumps`` calls per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._replies import RawBlock, Reply, TextBlock, ThinkingBlock, ToolUseBlock

__all__ = [
    "PING",
    "Plan",
    "Rendered",
    "assistant_text",
    "chunk_frames",
    "error_event",
    "frame",
    "message_json",
    "message_start",
    "plan_for",
    "random_id",
    "render",
    "split_events",
]

_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

CHUNK_SIZE = 64 * 1024
"""Payload size of one chunked-encoding chunk on the fast path."""

PING = b'event: ping\ndata: {"type": "ping"}\n\n'
MALFORMED = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_del\n\n'
)

Plan = tuple[tuple[int, int], ...]
"""Which blocks a response sends: (block index, offset into a text block's text)."""


def random_id(prefix: str, rng: random.Random) -> str:
    """``prefix`` + 24 base62 characters, the shape of the API's request and message ids."""
    return prefix + "".join(rng.choices(_B62, k=24))


def _stable_id(prefix: str, *parts: str) -> str:
    # Derived from the block so that a retried or continued reply names the same tool call.
    digest = int.from_bytes(hashlib.blake2b("\x00".join(parts).encode(), digest_size=18).digest())
    chars = []
    for _ in range(24):
        digest, rem = divmod(digest, 62)
        chars.append(_B62[rem])
    return prefix + "".join(chars)


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


def error_event(error_type: str, message: str) -> bytes:
    """The ``error`` event the API sends when a stream fails after its 200."""
    return _event(
        "error",
        _ENCODE({"type": "error", "error": {"type": error_type, "message": message}}),
    )


def frame(data: bytes) -> bytes:
    """One chunked-encoding chunk; ``data`` must not be empty (that would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def chunk_frames(data: bytes) -> list[bytes]:
    """``data`` as chunked-encoding chunks of at most CHUNK_SIZE bytes."""
    return [frame(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def split_events(raw: bytes) -> list[bytes]:
    """Split a transcript after each blank line, keeping every byte (for fault timing)."""
    events: list[bytes] = []
    start = 0
    for match in _EVENT_END.finditer(raw):
        events.append(raw[start : match.end()])
        start = match.end()
    if start < len(raw):
        events.append(raw[start:])
    return events


# --- continuation -----------------------------------------------------------------


def assistant_text(content: Any) -> str:
    """The concatenated text of an assistant turn's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
    return ""


def _walk(blocks: Sequence[Any], consumed: str) -> Plan | None:
    """The blocks left once ``consumed`` is taken off the front of the answer, or None.

    Text blocks must match ``consumed``; a partly consumed one continues at its
    offset; other blocks met while ``consumed`` is not exhausted were (or could
    not have been) sent, so they are skipped.  None when ``consumed`` is not a
    prefix of the answer's text.
    """
    rest = consumed
    plan: list[tuple[int, int]] = []
    for index, block in enumerate(blocks):
        if not rest:
            plan.append((index, 0))
        elif isinstance(block, TextBlock):
            n = min(len(rest), len(block.text))
            if not block.text.startswith(rest[:n]):
                return None
            rest = rest[n:]
            if n < len(block.text):
                plan.append((index, n))
    return None if rest else tuple(plan)


def _repeat_start(text: str, words: int) -> int:
    """Index in ``text`` where its last ``words`` whitespace-separated words start."""
    if words <= 0:
        return len(text)
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    if not starts:
        return len(text)
    return starts[-min(words, len(starts))]


class PrefillError(Exception):
    """A request the real API would refuse with 400 invalid_request_error."""


_REJECT_PREFILL = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


def plan_for(reply: Reply, body: Any) -> Plan:
    """Which part of ``reply`` a request body asks for (prefill, continue turn, or all).

    Raises PrefillError with the API's message for a refused prefill.
    """
    whole: Plan = tuple((i, 0) for i in range(len(reply.blocks)))
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return whole
    last = messages[-1]
    if _role(last) == "assistant":
        if reply.reject_prefill:
            raise PrefillError(_REJECT_PREFILL)
        prefill = assistant_text(last.get("content"))
        if prefill != prefill.rstrip():
            raise PrefillError("final assistant content cannot end with trailing whitespace")
        if reply.fixture is not None:
            return whole
        plan = _walk(reply.blocks, prefill)
        if plan is None:
            raise PrefillError("mock server: the assistant prefill does not match the queued reply's text")
        return plan
    if _role(last) == "user" and len(messages) >= 2 and _role(messages[-2]) == "assistant":
        previous = assistant_text(messages[-2].get("content"))
        plan = _walk(reply.blocks, previous)
        # Nothing left means the earlier turn was complete: a new question, not a resume.
        if plan and reply.repeat_words:
            # A prefix of a matching prefix matches too, so this is never None.
            plan = _walk(reply.blocks, previous[: _repeat_start(previous, reply.repeat_words)])
        if plan:
            return _think_again(reply, body, plan)
    return whole


def _think_again(reply: Reply, body: dict[str, Any], plan: Plan) -> Plan:
    """A continue turn is a new turn: with thinking enabled, the model thinks before it goes on.

    The continuation then starts with a thinking block (the reply's first one, sent again).
    """
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") in (None, "disabled"):
        return plan
    first = next((i for i, block in enumerate(reply.blocks) if isinstance(block, ThinkingBlock)), None)
    if first is None or isinstance(reply.blocks[plan[0][0]], ThinkingBlock):
        return plan
    return ((first, 0), *plan)


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


# --- rendering --------------------------------------------------------------------


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _json_fragments(block: ToolUseBlock) -> list[str]:
    text = json.dumps(block.input)
    if block.pieces is not None:
        n = block.pieces
        return [text[k * len(text) // n : (k + 1) * len(text) // n] for k in range(n)]
    return _pieces(text, block.chunk_size)


def _tool_id(block: ToolUseBlock, index: int) -> str:
    if block.id is not None:
        return block.id
    prefix = "srvtoolu_" if block.server else "toolu_"
    return _stable_id(prefix, block.name, json.dumps(block.input, sort_keys=True), str(index))


def _block_events(block: Any, index: int, offset: int, out_index: int) -> tuple[list[bytes], int]:
    """content_block_start, deltas, content_block_stop of one block; and the delta count."""
    head = f'{{"type":"content_block_start","index":{out_index},"content_block":'
    delta_head = f'event: content_block_delta\ndata: {{"type":"content_block_delta","index":{out_index},"delta":'
    events: list[bytes] = []
    if isinstance(block, TextBlock):
        events.append(_event("content_block_start", head + '{"type":"text","text":""}}'))
        citations = block.citations if offset == 0 else []
        deltas = [_ENCODE({"type": "citations_delta", "citation": c}) for c in citations]
        prefix = '{"type":"text_delta","text":'
        deltas += [prefix + _ENCODE(p) + "}" for p in _pieces(block.text[offset:], block.chunk_size)]
    elif isinstance(block, ThinkingBlock):
        events.append(
            _event(
                "content_block_start",
                head + '{"type":"thinking","thinking":"","signature":""}}',
            )
        )
        prefix = '{"type":"thinking_delta","thinking":'
        deltas = [prefix + _ENCODE(p) + "}" for p in _pieces(block.thinking, block.chunk_size)]
        deltas.append(_ENCODE({"type": "signature_delta", "signature": block.signature}))
    elif isinstance(block, ToolUseBlock):
        start: dict[str, Any] = {
            "type": "server_tool_use" if block.server else "tool_use",
            "id": _tool_id(block, index),
            "name": block.name,
            "input": {},
        }
        events.append(_event("content_block_start", head + _ENCODE(start) + "}"))
        prefix = '{"type":"input_json_delta","partial_json":'
        deltas = [prefix + _ENCODE(p) + "}" for p in _json_fragments(block)]
    else:
        assert isinstance(block, RawBlock)
        events.append(_event("content_block_start", head + _ENCODE(block.content_block) + "}"))
        deltas = [_ENCODE(d) for d in block.deltas]
    events.extend(f"{delta_head}{d}}}\n\n".encode() for d in deltas)
    events.append(_event("content_block_stop", f'{{"type":"content_block_stop","index":{out_index}}}'))
    return events, len(deltas)


@dataclass
class Rendered:
    """The events of one (reply, plan) after message_start, pings included."""

    events: list[bytes]
    n_deltas: int
    _frames: list[bytes] | None = field(default=None, repr=False)

    @property
    def frames(self) -> list[bytes]:
        """All events as large chunked-encoding chunks: the fast path's body."""
        if self._frames is None:
            self._frames = chunk_frames(b"".join(self.events))
        return self._frames


def render(reply: Reply, plan: Plan) -> Rendered:
    """Build every event after message_start for ``plan`` (the costly part, cached by the server)."""
    events: list[bytes] = []
    n_deltas = 0
    for out_index, (index, offset) in enumerate(plan):
        block_events, count = _block_events(reply.blocks[index], index, offset, out_index)
        events += block_events
        n_deltas += count
    output_tokens = reply.output_tokens if reply.output_tokens is not None else n_deltas
    delta = {
        "type": "message_delta",
        "delta": {
            "stop_reason": reply.stop_reason,
            "stop_sequence": reply.stop_sequence,
        },
        "usage": {"output_tokens": output_tokens},
    }
    events.append(_event("message_delta", _ENCODE(delta)))
    events.append(_event("message_stop", '{"type":"message_stop"}'))
    if reply.ping_every:
        # message_start (not in this list) is event number 1 of the stream.
        with_pings: list[bytes] = []
        for number, event in enumerate(events, start=2):
            with_pings.append(event)
            if number % reply.ping_every == 0 and number <= len(events):
                with_pings.append(PING)
        if reply.ping_every == 1:
            with_pings.insert(0, PING)
        events = with_pings
    return Rendered(events, n_deltas)


def message_start(reply: Reply, message_id: str) -> bytes:
    """The first event; rendered per response because the message id may be fresh."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
    }
    return _event("message_start", _ENCODE({"type": "message_start", "message": message}))


def _raw_content(block: RawBlock) -> dict[str, Any]:
    """A raw block with the well-known delta types applied; unknown deltas are ignored."""
    content = dict(block.content_block)
    partial_json = ""
    for delta in block.deltas:
        kind = delta.get("type")
        if kind == "text_delta":
            content["text"] = content.get("text", "") + delta.get("text", "")
        elif kind == "thinking_delta":
            content["thinking"] = content.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            content["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            content["citations"] = [
                *content.get("citations", []),
                delta.get("citation"),
            ]
        elif kind == "input_json_delta":
            partial_json += delta.get("partial_json", "")
    if partial_json:
        with contextlib.suppress(ValueError):  # a cut-off input stays {} as it started
            content["input"] = json.loads(partial_json)
    return content


def message_json(reply: Reply, plan: Plan, message_id: str, n_deltas: int) -> bytes:
    """The non-streaming Message holding the same content the stream would send."""
    content: list[dict[str, Any]] = []
    for index, offset in plan:
        block = reply.blocks[index]
        if isinstance(block, TextBlock):
            item: dict[str, Any] = {"type": "text", "text": block.text[offset:]}
            if block.citations and offset == 0:
                item["citations"] = block.citations
            content.append(item)
        elif isinstance(block, ThinkingBlock):
            content.append(
                {
                    "type": "thinking",
                    "thinking": block.thinking,
                    "signature": block.signature,
                }
            )
        elif isinstance(block, ToolUseBlock):
            content.append(
                {
                    "type": "server_tool_use" if block.server else "tool_use",
                    "id": _tool_id(block, index),
                    "name": block.name,
                    "input": block.input,
                }
            )
        else:
            content.append(_raw_content(block))
    output_tokens = reply.output_tokens if reply.output_tokens is not None else n_deltas
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": output_tokens},
    }
    return _ENCODE(message).encode()
