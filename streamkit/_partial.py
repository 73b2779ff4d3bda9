"""Tool input while it streams: partial JSON parsed incrementally, pure code, no I/O.

A UI reads the snapshot after every delta.  Re-parsing the whole partial JSON on each
read makes that quadratic in the size of the input; ``PartialJSON`` scans each character
once, keeps the values already complete, and on a read copies only the containers still
open.  What it returns is exactly what ``from_json(text, allow_partial=True)`` returns
(every complete scalar is decoded by ``from_json`` itself).  Whatever it is not sure to
reproduce (text that is not a prefix of strict JSON, ``NaN``, nesting deeper than
``from_json`` allows) switches it to that whole re-parse for good: a broken stream costs
what it did before, a real one stays linear.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import from_json

# A string's characters up to its end or up to what needs a closer look: escapes are checked
# here (a high surrogate only with its low one), so a string matched whole decodes without error.
_HEX = "[0-9a-fA-F]"
_STRING = re.compile(
    rf'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?![dD][89a-fA-F]){_HEX}{{4}}'
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
    """The value of a growing JSON text; ``read(text)`` with each longer version of it."""

    __slots__ = ("_done", "_fallback", "_pos", "_stack", "_string", "_tail", "_top")

    def __init__(self) -> None:
        self._pos = 0  # characters consumed: everything before is complete tokens
        self._stack: list[_Frame] = []
        self._top: Any = _MISSING  # the whole value, once complete
        self._done = False
        self._string = -1  # where the scan of an unfinished string (starting at _pos) resumes
        self._tail: Any = _MISSING  # the unfinished scalar at the end, as from_json keeps it
        self._fallback = False

    def read(self, text: str) -> Any:
        """What ``from_json(text, allow_partial=True)`` returns (``ValueError`` as it would raise).

        ``text`` must extend the text of the previous call.
        """
        if not self._fallback:
            try:
                self._scan(text)
                return self._value()
            except _Fallback:
                self._fallback = True
        return from_json(text, allow_partial=True)

    def _value(self) -> Any:
        if self._done:
            top = self._top
            return top.copy() if top.__class__ is dict or top.__class__ is list else top
        child = self._tail
        for frame in reversed(self._stack):
            value = frame.value.copy()
            if child is not _MISSING:
                if value.__class__ is list:
                    value.append(child)
                elif frame.expect == _VALUE:
                    value[frame.key] = child
            child = value
        if child is _MISSING:
            raise ValueError("no value yet")  # what from_json says of blank text
        return child

    def _complete(self, value: Any) -> None:
        """A value is complete: it becomes a member of the innermost open container."""
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

    def _scan(self, text: str) -> None:
        """Consume the complete tokens of ``text`` after ``_pos``; note the unfinished one at its end."""
        pos, end, stack = self._pos, len(text), self._stack
        self._tail = _MISSING
        while True:
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= end:
                break
            char = text[pos]
            frame = stack[-1] if stack else None
            if frame is None and (self._done or char != "{"):
                # Text after the value (from_json's leniency there is its own), or a value that is no object.
                raise _Fallback
            expect = frame.expect if frame is not None else _VALUE
            if char == '"':
                start = pos
                scan = self._string if self._string > pos else pos + 1
                stop = _STRING.match(text, scan).end()  # type: ignore[union-attr]
                if stop >= end or text[stop] != '"':
                    if stop < end and not _ESCAPE_PREFIX.fullmatch(text, stop):
                        raise _Fallback
                    if expect in (_COLON, _COMMA_OR_END):
                        raise _Fallback
                    self._string = stop  # unfinished: a partial string is left out
                    break
                self._string = -1
                try:
                    value = from_json(text[start : stop + 1])
                except ValueError:
                    raise _Fallback from None
                pos = stop + 1
                if expect in (_KEY_OR_END, _KEY):
                    assert frame is not None
                    frame.key, frame.expect = value, _COLON
                elif expect in _VALUES:
                    self._complete(value)
                else:
                    raise _Fallback
            elif char == "{" or char == "[":
                if expect not in _VALUES or len(stack) >= MAX_DEPTH:
                    raise _Fallback
                stack.append(_Frame({} if char == "{" else []))
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
                        break  # unfinished: left out
                    raise _Fallback
                run = _NUMBER_RUN.match(text, pos)
                if run is None:
                    raise _Fallback
                token = run.group()
                if run.end() >= end:  # it may go on: from_json keeps it if it is a number already
                    if _NUMBER.fullmatch(token):
                        self._tail = from_json(token)
                    elif not _NUMBER_PREFIX.fullmatch(token):
                        raise _Fallback
                    break
                if not _NUMBER.fullmatch(token):
                    raise _Fallback
                pos = run.end()
                self._complete(from_json(token))
        self._pos = pos
