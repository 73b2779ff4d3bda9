"""AsyncClient: configuration, and the ``messages`` endpoints built on the request layer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Literal

import httpx

from ._accumulate import MessageAccumulator
from ._errors import StreamingRequiredError, StreamkitError
from ._hooks import Hook, Hooks
from ._limits import MAX_BLOCKS, MAX_REPLY_BYTES
from ._message import Message
from ._request import API_VERSION, Requester, stream_opener, with_retries
from ._resume import ResumePlanner, ResumeStrategy
from ._retry import RetryPolicy
from ._stream import MessageStream
from ._transport import DEFAULT_DRAIN_TIMEOUT, default_http_client

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-5-5"
"""The model the README, the examples and the demo use (``STREAMKIT_MODEL`` overrides it there).

Claude Sonnet 5.5, the current Sonnet model in the models overview
(https://platform.claude.com/docs/en/about-claude/models/overview).  ``model=`` is always
required: streamkit never picks a model for a request.
"""
MESSAGES_PATH = "/v1/messages"
NONSTREAMING_LIMIT_S = 600  # the API asks that anything longer be streamed


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


class AsyncClient:
    """Client for the Messages API.  Use as ``async with AsyncClient() as client``.

    ``api_key`` and ``base_url`` default to ``ANTHROPIC_API_KEY`` and
    ``ANTHROPIC_BASE_URL``.  A caller's own ``http_client`` is used as given and left
    open; the default one (keep-alive sockets, long read timeout) is closed on exit.
    Every request says ``User-Agent: streamkit/<version>`` and ``anthropic-version:
    <api_version>`` (default ``2023-06-01``); ``extra_headers=`` on a call overrides either.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 2,
        max_resumes: int = 3,
        timeout: httpx.Timeout | float | None = None,
        http_client: httpx.AsyncClient | None = None,
        resume: ResumeStrategy | Literal[False] = "auto",
        stall_timeout: float | None = 120.0,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_blocks: int = MAX_BLOCKS,
        retry_initial_delay: float = 0.5,
        retry_max_delay: float = 8.0,
        api_version: str = API_VERSION,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
            raise StreamkitError("no API key: pass api_key=... or set ANTHROPIC_API_KEY")
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else default_http_client(timeout)
        self.retry_policy = RetryPolicy(max_retries, retry_initial_delay, retry_max_delay)
        self.max_resumes = max_resumes
        self.resume: ResumeStrategy | Literal[False] = resume
        self.stall_timeout = stall_timeout
        self.drain_timeout = drain_timeout
        self.max_reply_bytes = max_reply_bytes
        self.max_blocks = max_blocks
        self.api_version = api_version
        self._requester = Requester(self._http, self.base_url, self.api_key, api_version)
        self._prefill_rejected: set[str] = set()  # models seen to answer prefill with a 400
        self.messages = Messages(self)

    def __repr__(self) -> str:  # never shows the API key
        return f"AsyncClient(base_url={self.base_url!r}, api_key={'***' if self.api_key else None})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (only when this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    def _retry_policy(self, max_retries: int | None) -> RetryPolicy:
        """The client's policy, with a per-call ``max_retries`` if one was given."""
        return self.retry_policy if max_retries is None else replace(self.retry_policy, max_retries=max_retries)


class Messages:
    """``client.messages``: ``stream()`` for replies as they are written, ``create()`` for whole ones."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def stream(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Iterable[Mapping[str, Any]],
        on_text: Hook | None = None,
        on_thinking: Hook | None = None,
        on_tool_input: Hook | None = None,
        on_event: Hook | None = None,
        on_message: Hook | None = None,
        on_error: Hook | None = None,
        on_retry: Hook | None = None,
        on_resume: Hook | None = None,
        on_rewind: Hook | None = None,
        max_retries: int | None = None,
        max_resumes: int | None = None,
        resume: ResumeStrategy | Literal[False] | None = None,
        stall_timeout: float | None = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> MessageStream:
        """A streamed reply; other API parameters (system, tools, thinking ...) pass through."""
        client = self._client
        retry = client._retry_policy(max_retries)
        planner = ResumePlanner(
            client.resume if resume is None else resume,
            client.max_resumes if max_resumes is None else max_resumes,
            retry,
            client._prefill_rejected,
        )
        body = {"model": model, "max_tokens": max_tokens, "messages": list(messages), **params, "stream": True}
        return MessageStream(
            stream_opener(client._requester, MESSAGES_PATH, dict(extra_headers or {}), retry),
            body,
            hooks=Hooks(
                on_text, on_thinking, on_tool_input, on_event, on_message, on_error, on_retry, on_resume, on_rewind
            ),
            resume=planner,
            stall_timeout=client.stall_timeout if stall_timeout is NOT_GIVEN else stall_timeout,
            drain_timeout=client.drain_timeout,
            accumulator=MessageAccumulator(max_reply_bytes=client.max_reply_bytes, max_blocks=client.max_blocks),
        )

    async def create(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Iterable[Mapping[str, Any]],
        max_retries: int | None = None,
        on_retry: Hook | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Message:
        """A whole reply in one response.  Refuses requests that may outlast 10 minutes.

        The message carries ``request_id``, ``headers`` and ``rate_limits`` of its response.
        """
        if 3600 * max_tokens / 128_000 > NONSTREAMING_LIMIT_S:
            raise StreamingRequiredError(
                f"max_tokens={max_tokens} may take longer than 10 minutes without streaming; "
                "the API requires streaming for such requests: use client.messages.stream(...)"
            )
        client = self._client
        retry = client._retry_policy(max_retries)
        body = {"model": model, "max_tokens": max_tokens, "messages": list(messages), **params}
        requester = client._requester
        request = requester.build(MESSAGES_PATH, body, dict(extra_headers or {}), stream=False)
        return await with_retries(lambda: requester.send_message(request), retry, [], on_retry)
