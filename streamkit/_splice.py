"""Splicing: a continuation's events rewritten into the next events of the interrupted reply.

Same block indexes, no second start for the text block that goes on, whitespace stripped
for a prefill restored once, words repeated at a continue-turn seam removed, usage summed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import ProtocolError

OVERLAP_WINDOW = 400  # how much of the continuation is held back to look for a repeat


def _remove_repeat(tail: str, text: str) -> str:
    """Drop the start of ``text`` that repeats ``tail``, the end of the kept text.

    Told to continue exactly where it stopped, a model that starts with the words the
    kept text ended with is repeating them, however short (a cut often falls mid-word:
    "... small pa" + "part bright" is one repeat of "pa").  The repeat must start at a
    word boundary of the kept text, so "... small pa" + "art" is not one.  A single
    character is too ambiguous to drop: "say é" + "éü" may well be "say ééü", "🎉🌍" + "🌍🚀"
    may be "🎉🌍🌍🚀" (both found by the chaos soak), so it is kept.
    """
    body = text.lstrip()
    for size in range(min(len(tail), len(body), OVERLAP_WINDOW), 1, -1):
        if (size == len(tail) or not tail[-size - 1].isalnum()) and tail.endswith(body[:size]):
            return body[size:]
    return text


def _merge_whitespace(trailing: str, text: str) -> str:
    """Whitespace stripped before a prefill (``trailing``) comes back at the start of the continuation."""
    leading = text[: len(text) - len(text.lstrip())]
    if not trailing or not leading:
        return text
    return text[len(trailing) :] if leading.startswith(trailing) else text[len(leading) :]


class Splicer:
    """Rewrites a continuation's events into the next events of the interrupted reply."""

    def __init__(
        self,
        *,
        usage: dict[str, Any],
        target: int = -1,
        target_open: bool = False,
        next_index: int = 0,
        kept_text: str = "",
        remove_overlap: bool = False,
    ) -> None:
        self._target = target  # the text block the continuation extends (-1: none)
        self._target_open = target_open
        self._next = next_index  # index the continuation's other blocks start from
        kept = kept_text.rstrip()
        self._tail = kept[-OVERLAP_WINDOW - 1 :]  # room for a repeat and the character before it
        self._trailing = kept_text[len(kept) :]
        self._remove_overlap = remove_overlap
        self._base = {k: v for k, v in usage.items() if isinstance(v, int)}
        self._usage: dict[str, Any] = {}
        self._offset: int | None = None
        self._held: list[str] | None = None  # text held back until the seam is decided
        # Thinking that opens a continue turn (the model thinks again before it goes on) is not part of
        # the reply: the cut text block goes on where it stopped.  Its tokens still count in usage.
        self._rethought: set[int] = set()

    def _summed(self, usage: Mapping[str, Any]) -> dict[str, Any]:
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        summed = dict(self._usage)
        for key, value in self._base.items():
            if isinstance(summed.get(key), int):
                summed[key] += value
        return summed

    def _release(self, done: bool) -> list[dict[str, Any]]:
        held = "".join(self._held or ())
        if self._remove_overlap:
            body = held.lstrip()
            if not done and len(body) < OVERLAP_WINDOW and body in self._tail[-OVERLAP_WINDOW:]:
                return []  # could still be a repeat of the kept text: wait for more
            held = _remove_repeat(self._tail, held)
        if not done and not held.strip():
            return []  # only whitespace so far (a repeat may end in it): the seam is not decided yet
        self._held = None
        held = _merge_whitespace(self._trailing, held)
        if not held:
            return []
        return [{"type": "content_block_delta", "index": self._target, "delta": {"type": "text_delta", "text": held}}]

    def splice(self, batch: list[dict[str, Any]], out: list[dict[str, Any]]) -> None:
        """Append the rewritten ``batch`` to ``out``; a malformed event raises ``ProtocolError``.

        The events before the malformed one are in ``out``; the splicer is as it was before it.
        """
        for event in batch:
            kind = _checked(event)
            if kind == "message_start":
                usage = self._summed(event["message"].get("usage") or {})
                out.append({"type": "message_delta", "delta": {}, "usage": usage})
            elif kind == "message_delta":
                out.append({**event, "usage": self._summed(event.get("usage") or {})})
            elif kind in ("content_block_start", "content_block_delta", "content_block_stop"):
                index = event["index"]
                if index in self._rethought:
                    continue
                if self._offset is None:
                    block = event.get("content_block") or {}
                    if self._target >= 0 and block.get("type") in ("thinking", "redacted_thinking"):
                        self._rethought.add(index)
                        continue
                    if self._target >= 0 and block.get("type") == "text":
                        self._offset = self._target - index
                        self._held = []
                        continue  # the kept block stays open: no second start
                    self._offset = self._next - index
                    if self._target_open:  # the reply moved on: close the cut text block
                        out.append({"type": "content_block_stop", "index": self._target})
                mapped = index + self._offset
                if mapped == self._target and self._held is not None:
                    if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                        self._held.append(event["delta"]["text"])
                        out.extend(self._release(done=False))
                        continue
                    if kind == "content_block_stop":
                        out.extend(self._release(done=True))
                out.append({**event, "index": mapped})
            else:
                out.append(event)


_BLOCK_EVENTS = ("content_block_start", "content_block_delta", "content_block_stop")


def _checked(event: dict[str, Any]) -> Any:
    """The event's type, once every field the splicer reads from it has the right shape."""
    kind = event["type"]
    if kind in _BLOCK_EVENTS:
        problem = None
        if type(event.get("index")) is not int:
            problem = f"its index is {event.get('index')!r}, not an integer"
        elif kind == "content_block_start" and not isinstance(event.get("content_block"), dict):
            problem = "its content_block is not an object"
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                problem = "its delta is not an object"
            elif delta.get("type") == "text_delta" and not isinstance(delta.get("text"), str):
                problem = "its text is not a string"
    elif kind == "message_start":
        message = event.get("message")
        if not isinstance(message, dict):
            problem = "its message is not an object"
        else:
            problem = _usage_problem(message.get("usage"))
    elif kind == "message_delta":
        problem = _usage_problem(event.get("usage"))
    else:
        return kind
    if problem is not None:
        message = f"cannot continue the reply with a malformed {kind} event: {problem}"
        raise ProtocolError(message, data=repr(event).encode())
    return kind


def _usage_problem(usage: Any) -> str | None:
    """Usage is an object, or null (as the accumulator takes it on a first attempt)."""
    return None if usage is None or isinstance(usage, dict) else "its usage is not an object"
