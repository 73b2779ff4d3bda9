"""Resume planning: what a broken stream delivered, and the request that continues it.

``ResumePlanner`` is pure: it looks at the reassembled reply and the request that was
sent, and returns a ``ResumePlan`` (the next request body, what to keep, how to splice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._accumulate import MessageAccumulator
from ._errors import IncompleteStreamError, InvalidRequestError, StreamError, StreamkitError
from ._message import ContentBlock, ServerToolUseBlock, TextBlock
from ._replay import Rewind
from ._retry import RetryPolicy
from ._splice import Splicer

ResumeStrategy = Literal["auto", "prefill", "continue"]

RESUMABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})
PREFILL_REJECTED = "does not support assistant message prefill"
CONTINUE_PROMPT = (
    "Your previous reply was cut off. Continue it exactly where it stopped: do not repeat "
    "anything, do not add a preamble."
)


@dataclass(slots=True)
class ResumeInfo:
    """One resume of a stream that broke after delivering content (the ``on_resume`` argument).

    ``rewind`` is set later, if the regenerated part of the reply departed from what had
    already been handed out (see ``Rewind``).  ``governor_wait``: the seconds the rate governor
    held the continuation request after the resume's delay (0.0 when it went at once), as
    ``RetryInfo.governor_wait`` says of a retry; a refused prefill's wait is added in.
    """

    attempt: int
    cause: StreamkitError
    strategy: Literal["prefill", "continue"]
    failed_request_id: str | None
    request_id: str | None
    kept_chars: int
    dropped_block: str | None = None
    rewind: Rewind | None = None
    governor_wait: float = 0.0


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


_THINKING = ("thinking", "redacted_thinking")


def _kept_blocks(blocks: list[ContentBlock], open_index: int | None) -> int:
    """How many leading blocks can be sent back to the API as the start of the assistant turn.

    Text, closed thinking, and a closed server tool call with its result (the API takes those
    back as they came, as it does to go on after ``pause_turn``), as long as a text block
    follows them: a client tool call needs a tool_result from the user, so it and what
    follows are generated again.  Server tool blocks are not kept beside thinking, whose
    blocks would then have to be sent back with their signatures.
    """
    keep = index = 0
    thinking = server = pending = False
    while index < len(blocks):
        block = blocks[index]
        closed = index != open_index
        if isinstance(block, TextBlock):
            index += 1
            if block.text.strip() or not pending:
                keep, pending = index, False
        elif closed and block.type in _THINKING and not server:
            thinking = True
            index += 1
            keep = index
        elif not thinking and closed and _answered_server_call(blocks, index, open_index):
            server = pending = True
            index += 2  # kept only once text follows
        else:
            break
    return keep


def _answered_server_call(blocks: list[ContentBlock], index: int, open_index: int | None) -> bool:
    """A server tool call at ``index`` followed by its closed result block."""
    call = blocks[index]
    result = blocks[index + 1] if index + 1 < len(blocks) else None
    return (
        isinstance(call, ServerToolUseBlock)
        and result is not None
        and index + 1 != open_index
        and getattr(result, "tool_use_id", None) == call.id
    )


def _server_tool_kept(blocks: list[ContentBlock]) -> bool:
    return any(isinstance(block, ServerToolUseBlock) for block in blocks)


def _assistant_content(prefix: str, blocks: list[ContentBlock]) -> str | list[dict[str, Any]]:
    """The assistant turn to send back: a string of text, or blocks when server tool blocks are kept.

    Its trailing whitespace is stripped, as the API requires of a final assistant turn.
    """
    if not _server_tool_kept(blocks):
        return (prefix + "".join(b.text for b in blocks if isinstance(b, TextBlock))).rstrip()
    content: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
    for block in blocks:
        if isinstance(block, TextBlock):
            content.append({"type": "text", "text": block.text})
        elif block.type not in _THINKING:
            content.append(block.model_dump(exclude={"_partial_json"}))
    content[-1]["text"] = content[-1]["text"].rstrip()
    return [part for part in content if part["type"] != "text" or part["text"]]


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
        keep = _kept_blocks(blocks, open_index)
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
        sent = _assistant_content(prefix, blocks[:keep])
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
