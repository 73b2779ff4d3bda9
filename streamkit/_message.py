"""The reassembled reply: a Message and its content blocks.

Every model allows extra fields: the API adds fields (``caller``, ``stop_details``,
``service_tier`` ...) without notice, and a client must pass them on, not drop them.
Unknown block types are kept whole as ``UnknownBlock``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag

from ._ratelimits import RateLimits


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    server_tool_use: dict[str, Any] | None = None
    service_tier: str | None = None


class TextBlock(_Model):
    type: Literal["text"] = "text"
    text: str = ""
    citations: list[dict[str, Any]] | None = None


class _ToolCall(_Model):
    id: str
    name: str
    input: Any = Field(default_factory=dict)
    _partial_json: str | Callable[[], str] = PrivateAttr(default="")  # or what joins it, when first read

    @property
    def input_json(self) -> str:
        """The input's JSON text exactly as streamed (also when cut short)."""
        text = self._partial_json
        if not isinstance(text, str):
            text = self._partial_json = text()
        return text

    def __eq__(self, other: object) -> bool:
        """Equal when the API would see them equal: the streamed JSON text does not count."""
        if not isinstance(other, _ToolCall) or type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__ and self.__pydantic_extra__ == other.__pydantic_extra__


class ToolUseBlock(_ToolCall):
    type: Literal["tool_use"] = "tool_use"


class ServerToolUseBlock(_ToolCall):
    type: Literal["server_tool_use"] = "server_tool_use"


class ThinkingBlock(_Model):
    type: Literal["thinking"] = "thinking"
    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(_Model):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class UnknownBlock(_Model):
    """A block type this version does not know (server tool results, compaction, ...), kept as sent."""

    type: str


def open_union(*known: str) -> Discriminator:
    """Pick a union member by ``type``; types not in ``known`` go to the "unknown" member."""
    tags = frozenset(known)

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        # A type that is not a string (a list, from a broken stream) is unknown, not a TypeError.
        return kind if isinstance(kind, str) and kind in tags else "unknown"

    return Discriminator(tag)


ContentBlock: TypeAlias = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ServerToolUseBlock, Tag("server_tool_use")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[UnknownBlock, Tag("unknown")],
    open_union("text", "tool_use", "server_tool_use", "thinking", "redacted_thinking"),
]


class APIObject(_Model):
    """An object the API answered with; knows the response it came from."""

    _request_id: str | None = PrivateAttr(default=None)
    _headers: Mapping[str, str] | None = PrivateAttr(default=None)

    @property
    def request_id(self) -> str | None:
        """The ``request-id`` of the response this object came from."""
        return self._request_id

    @property
    def headers(self) -> Mapping[str, str] | None:
        """The headers of that response; ``None`` for an object built by hand."""
        return self._headers

    @property
    def rate_limits(self) -> RateLimits:
        """The ``anthropic-ratelimit-*`` headers of that response, parsed."""
        return RateLimits.from_headers(self._headers)

    def _received(self, request_id: str | None, headers: Mapping[str, str] | None) -> Self:
        self._request_id = request_id
        self._headers = headers
        return self

    def __eq__(self, other: object) -> bool:
        """Equal when the content is: where an object came from (request id, headers) does not count."""
        if not isinstance(other, APIObject) or type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__ and self.__pydantic_extra__ == other.__pydantic_extra__

    __hash__ = None  # type: ignore[assignment]


class Message(APIObject):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock] = Field(default_factory=list)
    model: str
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = Field(default_factory=Usage)

    @property
    def text(self) -> str:
        """All text blocks joined: what a chat UI shows."""
        return "".join(block.text for block in self.content if isinstance(block, TextBlock))
