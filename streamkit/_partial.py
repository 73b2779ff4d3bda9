"""Tool input while it streams: partial JSON parsed incrementally, pure code, no I/O.

A UI reads the snapshot after every delta.  Re-parsing the whole partial JSON on each
read makes that quadratic in the size of the input; ``PartialJSON`` is fed only what
arrived since the last read, scans each character once (a string's pieces are joined
when it ends) and keeps the values already complete.  A read shares them: it returns the
last value itself when no value changed (a string still streaming is not part of it yet),
else new containers along the open path only, every complete member shared.  No value it
returned is changed afterwards (later members go into new containers), so a snapshot a
reader holds stays what it was; an open container's copy is its one cost that grows with
the input (a plain ``list`` cannot share its members with an earlier one).

What it returns is exactly what ``from_json(text, allow_partial=True)`` returns (every
complete scalar is decoded by ``from_json`` itself).  Whatever it is not sure to
reproduce (text that is not a prefix of strict JSON, ``NaN``, nesting deeper than
``from_json`` allows, a number longer than ``MAX_TOKEN``) switches it to that whole
re-parse for good: a broken stream costs what it did before, a real one stays linear.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json

# A string's characters up to its end or up to what needs a closer look: escapes are checked
# here (a high surrogate only with its low one), so a string matched whole decodes without error.
_HEX = "[0-9a-fA-F]"
_STRING = re.compile(
    rf'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u(?![dD][89a-fA-F]){_HEX}{{4}}'
    rf"|\\u[dD][89abAB]{_HEX}{{2}}\\u[dD][c-fC-F]{_HEX}{{2}})*"
)
# What may still become an escape when more text arrives.
_ESCAPE_PREFIX = re.compile(
    rf"\\(?:u(?:[dD](?:[89abAB](?:{_HEX}(?:{_HEX}(?:\\(?:u(?:[dD](?:[c-fC-F]{_HEX}{{0,1}})?)?)?)?)?)?)?"
    rf"|(?![dD][89a-fA-F]){_HEX}{{0,3}})?)?"
)
_NUMBER_RUN = re.compile(r"[-+.eE0-9]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.(?:[0-9]+(?:[eE][+-]?[0-9]*)?)?|[eE][+-]?[0-9]*)?)?")
_SPACE = re.compile(r"[ \t\n\r]*")
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}
MAX_DEPTH = 200
"""Containers ``PartialJSON`` follows one inside another; ``from_json`` refuses a little deeper."""
MAX_TOKEN = 1024
"""Characters of an unfinished number ``PartialJSON`` holds back (it scans them again on the next read)."""

# What a container expects next.
_KEY_OR_END, _KEY, _COLON, _VALUE, _COMMA_OR_END, _ITEM_OR_END, _ITEM = range(7)
_VALUES = (_VALUE, _ITEM_OR_END, _ITEM)  # where a value may start
_MISSING: Any = object()


class _Frame:
    """An open object or array: its complete members, and where parsing stands in it."""

    __slots__ = ("expect", "key", "value")

    def __init__(self, value: dict[str, Any] | list[Any]) -> None:
        self.value: Any = value
        self.expect = _KEY_OR_END if value.__class__ is dict else _ITEM_OR_END
        self.key: str | None = None


class _Fallback(Exception):
    """The text leaves strict JSON: from here on, re-parse it whole."""


class PartialJSON:
    """The value of a growing JSON text, fed what it grew by on each read.

    A read that finds no new value returns the very object the last one did, and a member
    completed earlier is shared by every value returned since: callers treat them as read-only.
    """

    __slots__ = ("_buffer", "_done", "_fallback", "_last", "_stack", "_string", "_tail", "_top", "length")

    def __init__(self) -> None:
        self.length = 0  # characters fed so far
        self._buffer = ""  # what is not consumed yet: an unfinished token (or the unchecked end of a string)
        self._string: list[str] | None = None  # the checked part of an unfinished string, from its quote
        self._stack: list[_Frame] = []
        self._top: Any = _MISSING  # the whole value, once complete
        self._done = False
        self._tail: Any = _MISSING  # the unfinished scalar at the end, as from_json keeps it
        self._last: Any = _MISSING  # the value last returned, while no value changed since
        self._fallback = False

    def read(self, new: str, text: Callable[[], str]) -> Any:
        """What ``from_json(text(), allow_partial=True)`` returns (``ValueError`` as it would raise).

        ``new`` is what the text grew by since the last read; ``text()`` is the whole of it,
        asked for only once the parser has left strict JSON.
        """
        self.length += len(new)
        if not self._fallback:
            try:
                tail = self._tail
                self._scan(new)
                if self._tail is not tail:
                    self._last = _MISSING
                return self._value()
            except _Fallback:
                self._fallback = True
                self._stack, self._string, self._buffer = [], None, ""
        return from_json(text(), allow_partial=True)

    def _value(self) -> Any:
        if self._last is not _MISSING:
            return self._last
        if self._done:
            self._last = self._top  # closed: never changed again
            return self._top
        child = self._tail
        for frame in reversed(self._stack):
            members = frame.value
            if child is _MISSING:
                value = members.copy()
            elif members.__class__ is list:
                value = [*members, child]  # a copy then an append may copy the list twice
            else:
                value = members.copy()
                if frame.expect == _VALUE:
                    value[frame.key] = child
            child = value
        if child is _MISSING:
            raise ValueError("no value yet")  # what from_json says of blank text
        self._last = child
        return child

    def _complete(self, value: Any) -> None:
        """A value is complete: it becomes a member of the innermost open container."""
        self._last = _MISSING
        stack = self._stack
        if not stack:
            self._top, self._done = value, True
            return
        frame = stack[-1]
        if frame.expect == _VALUE:
            frame.value[frame.key] = value
        else:
            frame.value.append(value)
        frame.expect = _COMMA_OR_END

    def _string_done(self, token: str) -> None:
        """A string (its quotes included) is complete: a key, or a value."""
        try:
            value = from_json(token)
        except ValueError:
            raise _Fallback from None
        frame = self._stack[-1]
        if frame.expect in (_KEY_OR_END, _KEY):
            frame.key, frame.expect = value, _COLON
        else:
            self._complete(value)

    def _string_end(self, text: str, start: int) -> int | None:
        """Where the string at ``start`` (after its quote) closes in ``text``; None if it goes on.

        An unfinished string keeps its checked characters in ``_string`` and the rest (an
        escape cut short) in ``_buffer``.
        """
        stop = _STRING.match(text, start).end()  # type: ignore[union-attr]
        if stop < len(text) and text[stop] == '"':
            return stop
        if stop < len(text) and not _ESCAPE_PREFIX.fullmatch(text, stop):
            raise _Fallback
        self._buffer = text[stop:]
        return None

    def _scan(self, new: str) -> None:
        """Consume the complete tokens of the text so far; note the unfinished one at its end."""
        text = self._buffer + new
        self._buffer = ""
        self._tail = _MISSING
        pos, end, stack = 0, len(text), self._stack
        string = self._string
        if string is not None:  # inside a string: only its end is looked for
            stop = self._string_end(text, 0)
            if stop is None:
                string.append(text[: end - len(self._buffer)])
                return
            self._string = None
            self._string_done("".join(string) + text[: stop + 1])
            pos = stop + 1
        while True:
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= end:
                return
            char = text[pos]
            frame = stack[-1] if stack else None
            if frame is None and (self._done or char != "{"):
                # Text after the value (from_json's leniency there is its own), or a value that is no object.
                raise _Fallback
            expect = frame.expect if frame is not None else _VALUE
            if char == '"':
                if expect in (_COLON, _COMMA_OR_END):
                    raise _Fallback
                stop = self._string_end(text, pos + 1)
                if stop is None:
                    self._string = [text[pos : end - len(self._buffer)]]  # left out of the value until it ends
                    return
                self._string_done(text[pos : stop + 1])
                pos = stop + 1
            elif char == "{" or char == "[":
                if expect not in _VALUES or len(stack) >= MAX_DEPTH:
                    raise _Fallback
                stack.append(_Frame({} if char == "{" else []))
                self._last = _MISSING
                pos += 1
            elif char == "}" or char == "]":
                if frame is None or (char == "}") != (frame.value.__class__ is dict):
                    raise _Fallback
                if expect not in (_KEY_OR_END, _ITEM_OR_END, _COMMA_OR_END):
                    raise _Fallback
                stack.pop()
                pos += 1
                self._complete(frame.value)
            elif char == ",":
                if expect != _COMMA_OR_END:
                    raise _Fallback
                assert frame is not None
                frame.expect = _KEY if frame.value.__class__ is dict else _ITEM
                pos += 1
            elif char == ":":
                if expect != _COLON:
                    raise _Fallback
                assert frame is not None
                frame.expect = _VALUE
                pos += 1
            else:
                if expect not in _VALUES:
                    raise _Fallback
                literal = _LITERALS.get(char)
                if literal is not None:
                    word, value = literal
                    if text.startswith(word, pos):
                        pos += len(word)
                        self._complete(value)
                        continue
                    if end - pos < len(word) and word.startswith(text[pos:]):
                        self._buffer = text[pos:]  # unfinished: left out
                        return
                    raise _Fallback
                run = _NUMBER_RUN.match(text, pos)
                if run is None:
                    raise _Fallback
                token = run.group()
                if run.end() < end:
                    if not _NUMBER.fullmatch(token):
                        raise _Fallback
                    pos = run.end()
                    self._complete(from_json(token))
                    continue
                # It may go on: from_json keeps it if it is a number already, drops it if it may become one.
                if _NUMBER.fullmatch(token):
                    self._tail = from_json(token)
                elif not _NUMBER_PREFIX.fullmatch(token):
                    raise _Fallback
                if len(token) > MAX_TOKEN:
                    raise _Fallback  # no number is that long: do not hold it back read after read
                self._buffer = token
                return
