"""Callback hooks: plain functions or coroutine functions, called in order as the stream goes.

Kept apart from the stream so that the request layer (``on_retry``) and the stream shell
call them the same way without importing each other.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Hook = Callable[[Any], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callbacks fired as events arrive; each takes one argument and may be async."""

    on_text: Hook | None = None
    on_thinking: Hook | None = None
    on_tool_input: Hook | None = None
    on_event: Hook | None = None
    on_message: Hook | None = None
    on_error: Hook | None = None
    on_retry: Hook | None = None
    on_resume: Hook | None = None
    on_rewind: Hook | None = None

    @property
    def per_event(self) -> bool:
        return any((self.on_text, self.on_thinking, self.on_tool_input, self.on_event, self.on_message))


async def call_hook(hook: Hook | None, argument: Any) -> None:
    if hook is not None:
        result = hook(argument)
        if inspect.isawaitable(result):
            await result
