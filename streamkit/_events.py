"""Typed stream events: pydantic models for what the Messages API streams.

``parse_event`` turns one decoded JSON object into a typed event.  The stream only builds
typed events for consumers that ask for them: the accumulator works on the decoded JSON
directly, which keeps pydantic off the hot path of ``get_final_message()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, Tag

from ._message import ContentBlock, Message, open_union


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- deltas -------------------------------------------------------------------------


class TextDelta(_Model):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJSONDelta(_Model):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(_Model):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(_Model):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class CitationsDelta(_Model):
    type: Literal["citations_delta"] = "citations_delta"
    citation: dict[str, Any]


class UnknownDelta(_Model):
    """A delta type this version does not know (``compaction_delta`` ...), kept as sent."""

    type: str


Delta: TypeAlias = Annotated[
    Annotated[TextDelta, Tag("text_delta")]
    | Annotated[InputJSONDelta, Tag("input_json_delta")]
    | Annotated[ThinkingDelta, Tag("thinking_delta")]
    | Annotated[SignatureDelta, Tag("signature_delta")]
    | Annotated[CitationsDelta, Tag("citations_delta")]
    | Annotated[UnknownDelta, Tag("unknown")],
    open_union("text_delta", "input_json_delta", "thinking_delta", "signature_delta", "citations_delta"),
]


# -- events -------------------------------------------------------------------------


class MessageStartEvent(_Model):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStartEvent(_Model):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class ContentBlockDeltaEvent(_Model):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: Delta


class ContentBlockStopEvent(_Model):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(_Model):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDeltaEvent(_Model):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta = Field(default_factory=MessageDelta)
    usage: dict[str, Any] = Field(default_factory=dict)


class MessageStopEvent(_Model):
    type: Literal["message_stop"] = "message_stop"


class PingEvent(_Model):
    """Liveness only: keeps the connection open, is never progress."""

    type: Literal["ping"] = "ping"


class ErrorDetail(_Model):
    type: str = "api_error"
    message: str = ""


class ErrorEvent(_Model):
    type: Literal["error"] = "error"
    error: ErrorDetail = Field(default_factory=ErrorDetail)


class UnknownEvent(BaseModel):
    """An event type this version does not know: yielded with its decoded data, never dropped."""

    type: str
    data: dict[str, Any]


class RewindEvent(BaseModel):
    """streamkit's own event, never sent by the API: a resumed reply departs from what was shown.

    Everything handed out from block ``index`` at ``offset`` on is withdrawn; ``text_offset``
    is that point in the reply's text.  See ``Rewind``.
    """

    type: Literal["rewind"] = "rewind"
    index: int
    offset: int
    text_offset: int


StreamEvent: TypeAlias = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | PingEvent
    | ErrorEvent
    | UnknownEvent
    | RewindEvent
)

_EVENT_MODELS: dict[str, type[_Model]] = {
    model.model_fields["type"].default: model
    for model in (
        MessageStartEvent,
        ContentBlockStartEvent,
        ContentBlockDeltaEvent,
        ContentBlockStopEvent,
        MessageDeltaEvent,
        MessageStopEvent,
        PingEvent,
        ErrorEvent,
    )
}
# What ``model_validate`` calls, without its keyword handling: this runs once per event handed out.
_VALIDATE: dict[str, Callable[[Any], Any]] = {
    kind: model.__pydantic_validator__.validate_python for kind, model in _EVENT_MODELS.items()
}


def parse_event(data: dict[str, Any]) -> StreamEvent:
    """Type one decoded event; raises ``pydantic.ValidationError`` for a malformed known event."""
    kind = data.get("type")
    validate = _VALIDATE.get(kind) if isinstance(kind, str) else None
    if validate is None:
        return UnknownEvent(type=str(kind), data=data)
    return validate(data)  # type: ignore[no-any-return]
