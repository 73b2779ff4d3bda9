"""What the mock server answers: declarative, JSON-serialisable reply descriptions.

These are pydantic models so that a reply can be written in a test, queued on an
in-process server, or sent as JSON in the ``x-streamkit-mock-reply`` header to a
server running in another process.  The server turns them into bytes once per
reply (see ``_render``), never per event.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .._errors import _TYPE_BY_STATUS

__all__ = [
    "Block",
    "Fault",
    "RawBlock",
    "Reply",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "check_header",
    "default_error_message",
    "default_error_type",
    "fixture_filename",
]

_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}


# A fixture is named, never located: a name cannot climb out of the fixture directories,
# and only ``.sse`` files can be served, whatever else those directories hold.
_FIXTURE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,250}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110, 5.1)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but HTAB: a CR or LF would split the response


def fixture_filename(name: str) -> str:
    """The file a fixture name stands for (``.sse`` appended if absent); ValueError if it is not a name."""
    if not _FIXTURE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"fixture {name!r} is not a fixture name: a file name of letters, digits, '.', '_' and '-'"
            " (no path, no '..'), looked up in the mock server's fixture directories"
        )
    return name if name.endswith(".sse") else f"{name}.sse"


def check_header(name: str, value: str) -> None:
    """ValueError unless ``name: value`` is one well-formed response header line."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not an HTTP token")
    if _CONTROL.search(value):
        raise ValueError(f"header {name!r} has a control character (CR, LF, NUL...) in its value {value!r}")


def default_error_type(status: int) -> str:
    """The ``error.type`` the real API uses for a status (``api_error`` if unknown)."""
    return _TYPE_BY_STATUS.get(status, "api_error")


def default_error_message(error_type: str) -> str:
    """A plausible message for an error type, so tests need not invent one."""
    return _ERROR_MESSAGES.get(error_type, "Error")


class _Model(BaseModel):
    # Frozen so a queued reply cannot change under a running stream, and extra
    # fields are refused so a typo in a test fails loudly instead of being ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextBlock(_Model):
    """A text block, streamed as ``citations_delta`` events then ``text_delta`` pieces.

    The fixed order (all citations first, then the text in ``chunk_size``
    characters) keeps the byte output predictable for tests.
    """

    kind: Literal["text"] = "text"
    text: str
    chunk_size: int = Field(default=8, ge=1)
    citations: list[dict[str, Any]] = Field(default_factory=list)

    def __init__(self, text: str, **fields: Any) -> None:
        BaseModel.__init__(self, text=text, **fields)


class ThinkingBlock(_Model):
    """An extended-thinking block: ``thinking_delta`` pieces, then one ``signature_delta``."""

    kind: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = "sig_mock"
    chunk_size: int = Field(default=8, ge=1)

    def __init__(self, thinking: str, **fields: Any) -> None:
        BaseModel.__init__(self, thinking=thinking, **fields)


class ToolUseBlock(_Model):
    """A (server) tool call whose input arrives as ``input_json_delta`` fragments.

    The fragments are slices of ``json.dumps(input)``: ``pieces`` equal slices
    if given (some may be empty), else ``chunk_size`` characters each.  Slices
    cut through strings and numbers on purpose, as the real API does.
    ``id`` defaults to a stable id derived from the block, so a retried reply
    names the same tool call.
    """

    kind: Literal["tool_use"] = "tool_use"
    name: str
    input: dict[str, Any]
    id: str | None = None
    server: bool = False
    pieces: int | None = Field(default=None, ge=1)
    chunk_size: int = Field(default=8, ge=1)

    def __init__(self, name: str, input: dict[str, Any], **fields: Any) -> None:
        BaseModel.__init__(self, name=name, input=input, **fields)


class RawBlock(_Model):
    """A block sent verbatim: for block and delta types the library does not know."""

    kind: Literal["raw"] = "raw"
    content_block: dict[str, Any]
    deltas: list[dict[str, Any]] = Field(default_factory=list)

    def __init__(
        self,
        content_block: dict[str, Any],
        deltas: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        if deltas is not None:
            fields["deltas"] = deltas
        BaseModel.__init__(self, content_block=content_block, **fields)


Block = Annotated[TextBlock | ThinkingBlock | ToolUseBlock | RawBlock, Field(discriminator="kind")]


class Fault(_Model):
    """A failure injected into a 200 stream after ``after`` events (pings and message_start count).

    - ``error``: an ``error`` event, then a clean end of the body, then the connection closes.
    - ``cut``: half of the next event, then the connection closes mid chunked body.  With
      ``at_byte`` the body is cut there instead (``after`` is then ignored): the first
      ``at_byte`` bytes of the event stream, message_start's first byte being byte 0, so a
      cut can fall anywhere, mid-line or inside a UTF-8 character.
    - ``truncate``: a clean end of the body without the remaining events.
    - ``malformed``: one event whose data is not valid JSON, then a clean end.
    - ``stall``: a ``ping`` every ``ping_interval`` seconds until the client leaves.
    - ``hang``: nothing more until the client leaves.
    """

    kind: Literal["error", "cut", "truncate", "malformed", "stall", "hang"]
    after: int = Field(default=0, ge=0)
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    ping_interval: float = Field(default=0.05, gt=0)
    at_byte: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _at_byte_cuts(self) -> Self:
        if self.at_byte is not None and self.kind != "cut":
            raise ValueError(f"at_byte applies to a cut, not to {self.kind!r}")
        return self

    def __init__(
        self,
        kind: Literal["error", "cut", "truncate", "malformed", "stall", "hang"],
        after: int = 0,
        **fields: Any,
    ) -> None:
        BaseModel.__init__(self, kind=kind, after=after, **fields)


class Reply(_Model):
    """One answer of the mock server; see the package docstring for precedence rules."""

    # raw_body travels as base64 in the override header.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    status: int = Field(default=200, ge=100, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    request_id: str | None = None
    request_id_header: bool = True

    error_type: str | None = None
    error_message: str | None = None

    body: str | None = None
    raw_body: bytes | None = None  # a body that is not UTF-8 text (compressed, say), sent as-is
    content_type: str | None = None

    blocks: list[Block] = Field(default_factory=list)
    model: str = "claude-mock-1"
    message_id: str | None = None
    input_tokens: int = 10
    output_tokens: int | None = None
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None

    ping_every: int = Field(default=0, ge=0)
    delay: float = Field(default=0.0, ge=0)
    # One HTTP chunk and one socket write per event, as the real API flushes tokens
    # (always so when ``delay`` is set); otherwise events are packed in 64 KiB writes.
    chunk_per_event: bool = False

    fixture: str | None = None
    fault: Fault | None = None
    reject_prefill: bool = False
    repeat_words: int = Field(default=0, ge=0)

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            check_header(name, value)
        return headers

    @field_validator("request_id", "content_type")
    @classmethod
    def _header_values(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:  # sent as the value of the request-id or content-type header
            check_header(str(info.field_name).replace("_", "-"), value)
        return value

    @field_validator("fixture")
    @classmethod
    def _fixture_name(cls, name: str | None) -> str | None:
        if name is not None:
            fixture_filename(name)
        return name

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        if self.body is not None and self.raw_body is not None:
            raise ValueError("set body or raw_body, not both")
        return self

    @classmethod
    def text(cls, text: str, *, chunk_size: int = 8, **fields: Any) -> Self:
        """A plain text answer in ``chunk_size``-character deltas."""
        return cls(blocks=[TextBlock(text, chunk_size=chunk_size)], **fields)

    @classmethod
    def error(
        cls,
        status: int,
        error_type: str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> Self:
        """An error before the stream: a JSON error body with this status."""
        return cls(status=status, error_type=error_type, error_message=message, **fields)

    @classmethod
    def html(cls, status: int, html: str, **fields: Any) -> Self:
        """An HTML page as a CDN in front of the API sends it: no request-id header."""
        fields.setdefault("request_id_header", False)
        return cls(status=status, body=html, content_type="text/html", **fields)

    @classmethod
    def tool_use(
        cls,
        name: str,
        input: dict[str, Any],
        *,
        text: str | None = None,
        tool_id: str | None = None,
        **fields: Any,
    ) -> Self:
        """A tool call (after an optional text block), with ``stop_reason`` ``tool_use``."""
        blocks: list[TextBlock | ThinkingBlock | ToolUseBlock | RawBlock] = []
        if text:
            blocks.append(TextBlock(text))
        blocks.append(ToolUseBlock(name, input, id=tool_id))
        fields.setdefault("stop_reason", "tool_use")
        return cls(blocks=blocks, **fields)

    @classmethod
    def from_fixture(cls, name: str, **fields: Any) -> Self:
        """Replay the recorded transcript ``name`` (``.sse`` optional) from the server's fixture directories."""
        return cls(fixture=name, **fields)

    def header_value(self) -> str:
        """This reply as an ASCII JSON string for the ``x-streamkit-mock-reply`` header."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))
