"""Retry and resume policy: plain data and pure functions, no I/O.

``RetryPolicy`` decides whether a failure before the stream is worth another request
and how long to wait.  ``ResumePlanner`` looks at what a broken stream delivered and
builds the request that continues it; ``Splicer`` rewrites the continuation's events so
that they extend the first reply (same block indexes, no repeated text, usage summed).
The loop that drives them is ``MessageStream._next``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .accumulate import MessageAccumulator
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    IncompleteStreamError,
    InvalidRequestError,
    StreamError,
    StreamkitError,
)
from .message import TextBlock

ResumeStrategy = Literal["auto", "prefill", "continue"]

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
RESUMABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})
PREFILL_REJECTED = "does not support assistant message prefill"
CONTINUE_PROMPT = (
    "Your previous reply was cut off. Continue it exactly where it stopped: do not repeat "
    "anything, do not add a preamble."
)
OVERLAP_WINDOW = 400  # how much of the continuation is held back to look for a repeat


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """One retry of a request that failed before any content (the ``on_retry`` argument)."""

    attempt: int
    error: StreamkitError
    delay: float


@dataclass(frozen=True, slots=True)
class ResumeInfo:
    """One resume of a stream that broke after delivering content (the ``on_resume`` argument)."""

    attempt: int
    cause: StreamkitError
    strategy: Literal["prefill", "continue"]
    failed_request_id: str | None
    request_id: str | None
    kept_chars: int
    dropped_block: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; the server's own hints win."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0

    def should_retry(self, error: StreamkitError, retries_done: int) -> bool:
        if retries_done >= self.max_retries:
            return False
        if isinstance(error, APIConnectionError | StreamError | IncompleteStreamError):
            return True  # for a failure inside a stream, the caller checked it is resumable
        if isinstance(error, APIStatusError):
            if error.should_retry is not None:
                return error.should_retry
            return error.status_code in RETRYABLE_STATUS
        return False

    def delay(self, retries_done: int, error: StreamkitError | None = None) -> float:
        hinted = error.retry_after if isinstance(error, APIError) else None
        if hinted is not None:
            return min(hinted, 60.0)
        return random.uniform(0.0, min(self.max_delay, self.initial_delay * 2**retries_done))


@dataclass(slots=True)
class ResumePlan:
    """What to send next and how to merge what comes back."""

    body: dict[str, Any]
    keep_blocks: int
    strategy: Literal["prefill", "continue", "retry"]
    delay: float
    kept_chars: int
    dropped_block: str | None
    splicer: Splicer | None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        str(block.get("text", ""))
        for block in content or ()
        if isinstance(block, Mapping) and block.get("type") == "text"
    )


def resumable(error: StreamkitError) -> bool:
    """A failure after a 200 that a new request can repair."""
    if isinstance(error, StreamError):
        return error.error_type in RESUMABLE_STREAM_ERRORS
    return isinstance(error, IncompleteStreamError)


@dataclass(slots=True)
class ResumePlanner:
    strategy: ResumeStrategy | Literal[False]
    max_resumes: int
    retry: RetryPolicy
    prefill_rejected: set[str] = field(default_factory=set)  # shared with the client

    def rejects_prefill(self, error: StreamkitError) -> bool:
        """The 400 of a model without prefill: switch to continue and do not surface it."""
        return isinstance(error, InvalidRequestError) and PREFILL_REJECTED in error.message

    def plan(
        self,
        error: StreamkitError,
        accumulator: MessageAccumulator,
        body: dict[str, Any],
        resumes_done: int,
        retries_done: int,
    ) -> ResumePlan | None:
        if not self.strategy or not resumable(error):
            return None
        message = accumulator.message
        blocks = message.content if message is not None else []
        open_index = accumulator.open_block
        keep = 0
        for index, block in enumerate(blocks):
            closed_thinking = index != open_index and block.type in ("thinking", "redacted_thinking")
            if not (isinstance(block, TextBlock) or closed_thinking):
                break
            keep = index + 1
        kept_text = "".join(b.text for b in blocks[:keep] if isinstance(b, TextBlock))
        dropped = blocks[keep].type if keep < len(blocks) else None
        usage = message.usage.model_dump(exclude_none=True) if message is not None else {}
        if not kept_text.strip():
            if not self.retry.should_retry(error, retries_done):
                return None
            # Same request again; once a message_start arrived, its usage is kept and summed.
            splicer = None if message is None else Splicer(usage=usage)
            return ResumePlan(body, 0, "retry", self.retry.delay(retries_done), 0, dropped, splicer)
        if resumes_done >= self.max_resumes:
            return None
        messages = list(body.get("messages") or ())
        prefix = ""
        if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
            prefix = _text_of(messages.pop().get("content"))
        sent = (prefix + kept_text).rstrip()
        thinking = isinstance(body.get("thinking"), Mapping) and body["thinking"].get("type") != "disabled"
        strategy: Literal["prefill", "continue"] = "prefill"
        if self.strategy == "continue" or thinking or body.get("model") in self.prefill_rejected:
            strategy = "continue"
        messages.append({"role": "assistant", "content": sent})
        if strategy == "continue":
            messages.append({"role": "user", "content": CONTINUE_PROMPT})
        continues_text = isinstance(blocks[keep - 1], TextBlock)
        splicer = Splicer(
            usage=usage,
            target=keep - 1 if continues_text else -1,
            target_open=open_index == keep - 1,
            next_index=keep,
            # all the assistant text sent back: a repeat may reach into an earlier block or the prefill
            kept_text=prefix + kept_text if continues_text else "",
            remove_overlap=strategy == "continue",
        )
        return ResumePlan(
            {**body, "messages": messages},
            keep,
            strategy,
            self.retry.delay(resumes_done, error),
            len(kept_text),
            dropped,
            splicer,
        )


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

    def splice(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in batch:
            kind = event["type"]
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
        return out
