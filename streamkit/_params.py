"""The Messages API's request parameters, typed, and the per-call options that are not parameters.

``MessageParams`` is the one list of the optional body parameters of ``POST /v1/messages``,
shared by ``stream()`` and ``create()`` through ``**params: Unpack[MessageParams]``
(PEP 692), so a type checker rejects a misspelled keyword.  It follows the official SDK's
``MessageCreateParamsBase`` (``anthropic/types/message_create_params.py``) and the API
reference: everything but ``model``, ``max_tokens`` and ``messages`` (explicit arguments),
``stream`` (streamkit sets it) and ``user_profile_id`` (a header in the SDK, behind a beta:
pass ``extra_headers={"anthropic-user-profile-id": ...}``).  A parameter newer than this
list, or one of the beta API's, goes in ``extra_body=``.

A parameter that is not passed is not sent; one passed as ``None`` is sent as ``null``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

Query = Mapping[str, str | int | float | bool]
"""Query-string parameters added to a request's URL (``extra_query=``, ``default_query=``)."""


class NotGiven:
    """The type of ``NOT_GIVEN``: an argument that was not passed (``None`` means something)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Any = NotGiven()


class MessageParams(TypedDict, total=False):
    """The optional body parameters of the Messages API (see the module docstring)."""

    cache_control: Mapping[str, Any] | None
    """Top-level cache control: a marker on the last cacheable block, e.g. ``{"type": "ephemeral"}``."""
    container: str | Mapping[str, Any] | None
    """A container id (or container parameters) to reuse across requests."""
    inference_geo: str | None
    """The geographic region for inference; the workspace's default when not given."""
    metadata: Mapping[str, Any]
    """``{"user_id": ...}``: an opaque identifier of the end user."""
    output_config: Mapping[str, Any]
    """Options for the model's output, such as the output format."""
    service_tier: Literal["auto", "standard_only"]
    stop_sequences: Sequence[str]
    system: str | Iterable[Mapping[str, Any]]
    """The system prompt: a string, or text blocks."""
    temperature: float
    thinking: Mapping[str, Any]
    """Extended thinking, e.g. ``{"type": "enabled", "budget_tokens": 2048}``."""
    tool_choice: Mapping[str, Any]
    tools: Iterable[Mapping[str, Any]]
    top_k: int
    top_p: float


MESSAGE_PARAMS: frozenset[str] = frozenset(MessageParams.__optional_keys__)


class CountTokensParams(TypedDict, total=False):
    """The optional body parameters of token counting: those of ``MessageParams`` that shape the input.

    Sampling and output parameters (``temperature``, ``stop_sequences`` ...) do not change
    the count and the endpoint does not take them; ``max_tokens`` is not needed.
    """

    cache_control: Mapping[str, Any] | None
    output_config: Mapping[str, Any]
    system: str | Iterable[Mapping[str, Any]]
    thinking: Mapping[str, Any]
    tool_choice: Mapping[str, Any]
    tools: Iterable[Mapping[str, Any]]


COUNT_TOKENS_PARAMS: frozenset[str] = frozenset(CountTokensParams.__optional_keys__)


def message_body(
    caller: str,
    model: str,
    max_tokens: int | None,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any],
    known: frozenset[str] = MESSAGE_PARAMS,
) -> dict[str, Any]:
    """The JSON body of a Messages request: only the parameters given, iterables as lists.

    A keyword that is not one of ``known`` raises ``TypeError`` here too, for callers without
    a type checker: it would otherwise reach the API and come back as a 400.  ``max_tokens``
    None (token counting) is left out.
    """
    unknown = sorted(params.keys() - known)
    if unknown:
        raise TypeError(
            f"{caller}() got an unexpected keyword argument {unknown[0]!r} (not a Messages API parameter "
            "streamkit knows; send a newer one with extra_body={...})"
        )
    body: dict[str, Any] = {"model": model}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body["messages"] = list(messages)
    for name, value in params.items():
        if name in ("tools", "stop_sequences") or (name == "system" and not isinstance(value, str | None)):
            value = list(value)
        body[name] = value
    return body
