"""Replay: a regenerated block is not handed out again where it repeats what was shown.

A resume keeps only what can be sent back to the API; a block it cannot send back (a
client tool call, an unfinished thinking block, and everything after them) is generated
again.  What was already handed out of those blocks (text, thinking, tool input) is kept
here, and the regeneration's events are hidden while they repeat it, so ``text_stream``
and the hooks see every piece once.  Where the regeneration departs from what was shown,
a ``Rewind`` says exactly which part of the output it withdraws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._accumulate import APPEND_FIELD, MessageAccumulator


@dataclass(frozen=True, slots=True)
class Rewind:
    """The regenerated reply departs from what was already handed out (the ``on_rewind`` argument).

    Everything handed out from block ``index`` at ``offset`` (characters of that block's text,
    thinking or tool input) on is withdrawn, and what follows replaces it.  ``text_offset`` is
    the same point in the text that ``text_stream`` and ``on_text`` showed: a UI keeps that many
    characters of the reply's text and appends what comes next.
    """

    index: int
    offset: int
    text_offset: int


@dataclass(slots=True)
class _Shown:
    """What was handed out of one block before the failure."""

    type: str
    name: Any
    content: str  # text, thinking or tool input, as appended
    extras: int  # other deltas (citations, signature ...)
    closed: bool
    matched: int = 0  # characters of ``content`` the regeneration has repeated so far
    extras_matched: int = 0
    started: bool = False


def shown_blocks(accumulator: MessageAccumulator, keep: int) -> dict[int, _Shown]:
    """What the blocks a resume drops had handed out (they are about to be truncated)."""
    return {
        index: _Shown(block.type, block.fields.get("name"), block.joined(), block.extras, block.closed)
        for index, block in accumulator.blocks_from(keep)
    }


class Replay:
    """Filters a continuation's events (already spliced) against what was shown."""

    __slots__ = ("_accumulator", "_shown")

    def __init__(self, shown: dict[int, _Shown], accumulator: MessageAccumulator) -> None:
        self._shown = shown
        self._accumulator = accumulator

    @property
    def active(self) -> bool:
        return bool(self._shown)

    def carry_into(self, shown: dict[int, _Shown], keep: int) -> dict[int, _Shown]:
        """The blocks a further resume must not show again, when it breaks in during this replay.

        The accumulator holds only the part of a block that was regenerated (and hidden) so
        far; what this replay still holds is what the reader was shown, so it wins.
        """
        for index, record in self._shown.items():
            if index >= keep:
                record.matched = record.extras_matched = 0
                record.started = False
                shown[index] = record
        return dict(sorted(shown.items()))

    def filter(self, event: dict[str, Any]) -> list[dict[str, Any] | Rewind]:
        """What to hand out for ``event``, which the accumulator has already applied."""
        kind = event["type"]
        if kind == "message_stop":  # the regeneration ended before reaching some block that was shown
            unreached = [i for i, shown in self._shown.items() if not shown.started]
            return [self._rewind(min(unreached), 0), event] if unreached else [event]
        if kind not in ("content_block_start", "content_block_delta", "content_block_stop"):
            return [event]
        index = event["index"]
        shown = self._shown.get(index)
        if shown is None:
            return [event]
        if kind == "content_block_start":
            block = event["content_block"]
            shown.started = True
            if block.get("type") == shown.type and block.get("name") == shown.name:
                return []
            return [self._rewind(index, 0), event]
        if kind == "content_block_stop":
            if shown.matched < len(shown.content):
                return [self._rewind(index, shown.matched), event]
            if shown.closed:
                del self._shown[index]
                return []
            del self._shown[index]
            return [event]
        delta = event["delta"]
        field = APPEND_FIELD.get(delta["type"])
        if field is None:
            if shown.extras_matched < shown.extras:
                shown.extras_matched += 1
                return []
            return [event]
        return self._delta(index, shown, event, delta[field], field)

    def _delta(
        self, index: int, shown: _Shown, event: dict[str, Any], piece: str, field: str
    ) -> list[dict[str, Any] | Rewind]:
        content, at = shown.content, shown.matched
        if content.startswith(piece, at):
            shown.matched = at + len(piece)
            return []
        rest = content[at:]
        same = 0
        limit = min(len(rest), len(piece))
        while same < limit and rest[same] == piece[same]:
            same += 1
        shown.matched = at + same
        new = {**event, "delta": {**event["delta"], field: piece[same:]}}
        if same == len(rest) and not shown.closed:
            del self._shown[index]  # the regeneration caught up with what was shown and goes on
            return [new]
        return [self._rewind(index, at + same), new]

    def _rewind(self, index: int, offset: int) -> Rewind:
        """Withdraw everything shown from ``index`` at ``offset`` on: nothing after it is a repeat."""
        self._shown.clear()
        text_offset = self._accumulator.text_length(index) + (offset if self._accumulator.is_text(index) else 0)
        return Rewind(index, offset, text_offset)
