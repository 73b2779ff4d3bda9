"""Callback hooks: plain functions or coroutine functions, called in order as the stream goes.

The sync client takes plain functions only: ``call_hook_sync`` refuses an awaitable result.

Kept apart from the stream so that the request layer (``on_retry``) and the stream shell
call them the same way without importing each other.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._errors import StreamkitError
from ._events import StreamEvent
from ._message import Message
from ._replay import Rewind
from ._resume import ResumeInfo
from ._retry import RetryInfo

_T = TypeVar("_T")

Hook = Callable[[_T], object]
"""A callback of one argument: a plain function, or a coroutine function (its result is awaited).

``Hook[str]`` accepts ``def f(text: str) -> None`` and ``async def f(text: str) -> None`` alike,
and any return value (ignored); a function of another argument type is a type error.
"""


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callbacks fired as events arrive; each takes one argument and may be async."""

    on_text: Hook[str] | None = None
    on_thinking: Hook[str] | None = None
    on_tool_input: Hook[str] | None = None
    on_event: Hook[StreamEvent] | None = None
    on_message: Hook[Message] | None = None
    on_error: Hook[StreamkitError] | None = None
    on_retry: Hook[RetryInfo] | None = None
    on_resume: Hook[ResumeInfo] | None = None
    on_rewind: Hook[Rewind] | None = None

    @property
    def per_event(self) -> bool:
        return any((self.on_text, self.on_thinking, self.on_tool_input, self.on_event, self.on_message))


async def call_hook(hook: Hook[_T] | None, argument: _T) -> None:
    if hook is not None:
        result: Any = hook(argument)
        if inspect.isawaitable(result):
            await result


def call_hook_sync(hook: Hook[_T] | None, argument: _T) -> None:
    """Call a hook of the sync client; an async hook there is a ``TypeError`` (nothing would await it)."""
    if hook is not None:
        result: Any = hook(argument)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # no "never awaited" warning on top of the error
            raise TypeError(
                f"hook {getattr(hook, '__qualname__', hook)!r} returned an awaitable: streamkit.Client calls "
                "hooks as plain functions (use streamkit.AsyncClient for async hooks)"
            )


def check_sync_hooks(hooks: Hooks) -> None:
    """Refuse coroutine functions as hooks of the sync client up front, before any request."""
    for name in Hooks.__slots__:
        check_sync_hook(name, getattr(hooks, name))


def check_sync_hook(name: str, hook: Hook[Any] | None) -> None:
    """Refuse a coroutine function as the sync client's hook ``name``."""
    if hook is not None and inspect.iscoroutinefunction(hook):
        raise TypeError(
            f"{name}={hook.__qualname__} is an async function: streamkit.Client calls hooks as plain "
            "functions (use streamkit.AsyncClient for async hooks)"
        )
