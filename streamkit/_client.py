"""AsyncClient: configuration, and the ``messages`` endpoints built on the request layer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack

import httpx

from ._accumulate import MessageAccumulator
from ._batch_types import MessageTokensCount
from ._batching import COUNT_TOKENS_PATH
from ._errors import StreamingRequiredError, StreamkitError
from ._events import StreamEvent
from ._governed import Gate, Governor, governor_of
from ._governor import COUNT_TOKENS_LANE
from ._hooks import Hook, Hooks
from ._http_client import DefaultAsyncHTTPClient
from ._limits import MAX_BLOCKS, MAX_REPLY_BYTES
from ._message import Message
from ._params import COUNT_TOKENS_PARAMS, NOT_GIVEN, CountTokensParams, MessageParams, NotGiven, Query, message_body
from ._replay import Rewind
from ._request import API_VERSION, Requester, Timeout, request_options, stream_opener, with_retries
from ._resources import Batches, Beta, Files
from ._resume import ResumeInfo, ResumePlanner, ResumeStrategy
from ._retry import RetryInfo, RetryPolicy
from ._stream import MessageStream
from ._transport import DEFAULT_DRAIN_TIMEOUT

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-5-5"
"""The model the README, the examples and the demo use (``STREAMKIT_MODEL`` overrides it there).

Claude Sonnet 5.5, the current Sonnet model in the models overview
(https://platform.claude.com/docs/en/about-claude/models/overview).  ``model=`` is always
required: streamkit never picks a model for a request.
"""
MESSAGES_PATH = "/v1/messages"
NONSTREAMING_LIMIT_S = 600  # the API asks that anything longer be streamed


class ClientOptions(TypedDict, total=False):
    """What ``AsyncClient.with_options`` can change: the constructor's options but the pool."""

    api_key: str | None
    base_url: str | None
    max_retries: int
    max_resumes: int
    timeout: Timeout
    resume: ResumeStrategy | Literal[False]
    stall_timeout: float | None
    drain_timeout: float
    max_reply_bytes: int
    max_blocks: int
    retry_initial_delay: float
    retry_max_delay: float
    api_version: str
    default_headers: Mapping[str, str]
    default_query: Query
    governor: bool | Governor


class ClientConfig:
    """The configuration both clients (``AsyncClient``, ``Client``) share, and what they derive from it."""

    api_key: str | None
    base_url: str
    _prefill_rejected: set[str]

    def _configure(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        max_retries: int,
        max_resumes: int,
        timeout: Timeout,
        resume: ResumeStrategy | Literal[False],
        stall_timeout: float | None,
        drain_timeout: float,
        max_reply_bytes: int,
        max_blocks: int,
        retry_initial_delay: float,
        retry_max_delay: float,
        api_version: str,
        default_headers: Mapping[str, str] | None,
        default_query: Query | None,
        governor: bool | Governor = True,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
            raise StreamkitError("no API key: pass api_key=... or set ANTHROPIC_API_KEY")
        self.timeout: Timeout | NotGiven = timeout
        self.retry_policy = RetryPolicy(max_retries, retry_initial_delay, retry_max_delay)
        self.max_resumes = max_resumes
        self.resume: ResumeStrategy | Literal[False] = resume
        self.stall_timeout = stall_timeout
        self.drain_timeout = drain_timeout
        self.max_reply_bytes = max_reply_bytes
        self.max_blocks = max_blocks
        self.api_version = api_version
        self.default_headers: dict[str, str] = dict(default_headers or {})
        self.default_query: dict[str, str | int | float | bool] = dict(default_query or {})
        self._prefill_rejected = set()  # models seen to answer prefill with a 400
        self.governor: Governor | None = governor_of(governor)
        """The rate governor admitting this client's requests (``governor=``), None when off."""

    def _changed(self, changes: ClientOptions) -> dict[str, Any]:
        """The constructor's options of a client like this one but for ``changes`` (``with_options``)."""
        policy = self.retry_policy
        return {
            "api_key": self.api_key,
            "base_url": self.base_url,
            "max_retries": policy.max_retries,
            "max_resumes": self.max_resumes,
            "timeout": self.timeout,
            "resume": self.resume,
            "stall_timeout": self.stall_timeout,
            "drain_timeout": self.drain_timeout,
            "max_reply_bytes": self.max_reply_bytes,
            "max_blocks": self.max_blocks,
            "retry_initial_delay": policy.initial_delay,
            "retry_max_delay": policy.max_delay,
            "api_version": self.api_version,
            "governor": self.governor or False,
            **changes,
            "default_headers": {**self.default_headers, **changes.get("default_headers", {})},
            "default_query": {**self.default_query, **changes.get("default_query", {})},
        }

    def _share_with(self, client: ClientConfig) -> None:
        if client.base_url == self.base_url:
            client._prefill_rejected = self._prefill_rejected  # what a model refused, it refuses to both

    def _retry_policy(self, max_retries: int | None) -> RetryPolicy:
        """The client's policy, with a per-call ``max_retries`` if one was given."""
        return self.retry_policy if max_retries is None else replace(self.retry_policy, max_retries=max_retries)

    def _stream_parts(
        self,
        model: str,
        max_tokens: int,
        messages: Iterable[Mapping[str, Any]],
        params: MessageParams,
        *,
        max_retries: int | None,
        max_resumes: int | None,
        resume: ResumeStrategy | Literal[False] | None,
        stall_timeout: float | None,
    ) -> StreamParts:
        """Everything a ``stream()`` call decides before any I/O, for either stream shell."""
        retry = self._retry_policy(max_retries)
        planner = ResumePlanner(
            self.resume if resume is None else resume,
            self.max_resumes if max_resumes is None else max_resumes,
            retry,
            self._prefill_rejected,
        )
        return StreamParts(
            body={**message_body("stream", model, max_tokens, messages, params), "stream": True},
            retry=retry,
            planner=planner,
            stall_timeout=self.stall_timeout if stall_timeout is NOT_GIVEN else stall_timeout,
            drain_timeout=self.drain_timeout,
            accumulator=MessageAccumulator(max_reply_bytes=self.max_reply_bytes, max_blocks=self.max_blocks),
        )


@dataclass(frozen=True, slots=True)
class StreamParts:
    body: dict[str, Any]
    retry: RetryPolicy
    planner: ResumePlanner
    stall_timeout: float | None
    drain_timeout: float
    accumulator: MessageAccumulator


def create_body(
    model: str, max_tokens: int, messages: Iterable[Mapping[str, Any]], params: MessageParams
) -> dict[str, Any]:
    """The body of a ``create()`` call; refused when the reply may outlast what the API allows unstreamed."""
    body = message_body("create", model, max_tokens, messages, params)
    if 3600 * max_tokens / 128_000 > NONSTREAMING_LIMIT_S:
        raise StreamingRequiredError(
            f"max_tokens={max_tokens} may take longer than 10 minutes without streaming; "
            "the API requires streaming for such requests: use client.messages.stream(...)"
        )
    return body


class AsyncClient(ClientConfig):
    """Client for the Messages API.  Use as ``async with AsyncClient() as client``.

    ``api_key`` and ``base_url`` default to ``ANTHROPIC_API_KEY`` and
    ``ANTHROPIC_BASE_URL``.  A caller's own ``http_client`` is used as given and left
    open; the default one (keep-alive sockets, long read timeout) is closed on exit.
    Every request says ``User-Agent: streamkit/<version>`` and ``anthropic-version:
    <api_version>`` (default ``2023-06-01``), then ``default_headers``; ``extra_headers=``
    on a call overrides any of them.  ``timeout`` (seconds, an ``httpx.Timeout``, or None
    for no timeout) applies to every request, also on a caller's ``http_client``; not given,
    the pool's own (5 s to connect, 600 s between bytes on the default one).
    ``with_options(...)`` returns a client with other defaults on the same pool.
    ``client.messages`` holds the Messages calls and ``batches``; ``client.files`` (also
    ``client.beta.files``) is the Files API.
    ``governor``: the rate governor that admits every request (``streamkit.Governor``);
    True (the default) a fresh in-process one, False none; one Governor may serve several
    clients.  ``client.governor.snapshot()`` shows what it knows.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 2,
        max_resumes: int = 3,
        timeout: Timeout = NOT_GIVEN,
        http_client: httpx.AsyncClient | None = None,
        resume: ResumeStrategy | Literal[False] = "auto",
        stall_timeout: float | None = 120.0,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_blocks: int = MAX_BLOCKS,
        retry_initial_delay: float = 0.5,
        retry_max_delay: float = 8.0,
        api_version: str = API_VERSION,
        default_headers: Mapping[str, str] | None = None,
        default_query: Query | None = None,
        governor: bool | Governor = True,
    ) -> None:
        self._configure(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            max_resumes=max_resumes,
            timeout=timeout,
            resume=resume,
            stall_timeout=stall_timeout,
            drain_timeout=drain_timeout,
            max_reply_bytes=max_reply_bytes,
            max_blocks=max_blocks,
            retry_initial_delay=retry_initial_delay,
            retry_max_delay=retry_max_delay,
            api_version=api_version,
            default_headers=default_headers,
            default_query=default_query,
            governor=governor,
        )
        self._owns_http = http_client is None
        if http_client is None:
            http_client = DefaultAsyncHTTPClient(None if isinstance(timeout, NotGiven) else timeout)
        self._http = http_client
        self._requester = Requester(
            self._http,
            self.base_url,
            self.api_key,
            api_version,
            timeout=timeout,
            default_headers=self.default_headers,
            default_query=self.default_query,
        )
        self._prefill_rejected: set[str] = set()  # models seen to answer prefill with a 400
        self.messages = Messages(self)
        self.files = Files(self)
        self.beta = Beta(self.files)

    def with_options(self, **changes: Unpack[ClientOptions]) -> AsyncClient:
        """A client with other defaults on the same connection pool, which it never closes.

        ``default_headers`` and ``default_query`` are merged into this client's; every other
        option replaces this client's value.  Closing the new client leaves the pool (and
        this client) open; only the client that made the pool closes it.
        """
        client = AsyncClient(http_client=self._http, **self._changed(changes))
        self._share_with(client)
        return client

    def __repr__(self) -> str:  # never shows the API key
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={'***' if self.api_key else None})"

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


class Messages:
    """``client.messages``: ``stream()`` for replies as they are written, ``create()`` for whole ones.

    ``count_tokens()`` counts a request's input tokens without running it; ``batches`` is the
    Message Batches API, for many requests that can wait.

    Both take the API's parameters as typed keywords (``MessageParams``: ``system``, ``tools``,
    ``thinking``, ``temperature`` ...; a misspelled one is a type error, and a ``TypeError``
    at run time) and the per-call options, which never go in the body: ``timeout``,
    ``max_retries``, ``extra_headers``, ``extra_query``, ``extra_body`` (for parameters
    newer than streamkit) and ``betas`` (the ``anthropic-beta`` header).
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.batches = Batches(client)

    def stream(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Iterable[Mapping[str, Any]],
        on_text: Hook[str] | None = None,
        on_thinking: Hook[str] | None = None,
        on_tool_input: Hook[str] | None = None,
        on_event: Hook[StreamEvent] | None = None,
        on_message: Hook[Message] | None = None,
        on_error: Hook[StreamkitError] | None = None,
        on_retry: Hook[RetryInfo] | None = None,
        on_resume: Hook[ResumeInfo] | None = None,
        on_rewind: Hook[Rewind] | None = None,
        max_retries: int | None = None,
        max_resumes: int | None = None,
        resume: ResumeStrategy | Literal[False] | None = None,
        stall_timeout: float | None = NOT_GIVEN,
        timeout: Timeout = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Query | None = None,
        extra_body: Mapping[str, Any] | None = None,
        betas: Sequence[str] | None = None,
        **params: Unpack[MessageParams],
    ) -> MessageStream:
        """A streamed reply.  The options apply to every attempt, resumes included."""
        client = self._client
        options = request_options(timeout, extra_headers, extra_query, extra_body, betas)
        parts = client._stream_parts(
            model,
            max_tokens,
            messages,
            params,
            max_retries=max_retries,
            max_resumes=max_resumes,
            resume=resume,
            stall_timeout=stall_timeout,
        )
        gate = Gate(client.governor, model, max_tokens)
        return MessageStream(
            stream_opener(client._requester, MESSAGES_PATH, options, parts.retry, gate),
            parts.body,
            hooks=Hooks(
                on_text, on_thinking, on_tool_input, on_event, on_message, on_error, on_retry, on_resume, on_rewind
            ),
            resume=parts.planner,
            stall_timeout=parts.stall_timeout,
            drain_timeout=parts.drain_timeout,
            accumulator=parts.accumulator,
        )

    async def create(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Iterable[Mapping[str, Any]],
        max_retries: int | None = None,
        on_retry: Hook[RetryInfo] | None = None,
        timeout: Timeout = NOT_GIVEN,  # noqa: ASYNC109 - the request's timeout, as in the official SDK
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Query | None = None,
        extra_body: Mapping[str, Any] | None = None,
        betas: Sequence[str] | None = None,
        **params: Unpack[MessageParams],
    ) -> Message:
        """A whole reply in one response.  Refuses requests that may outlast 10 minutes.

        The message carries ``request_id``, ``headers`` and ``rate_limits`` of its response.
        """
        body = create_body(model, max_tokens, messages, params)
        client = self._client
        retry = client._retry_policy(max_retries)
        options = request_options(timeout, extra_headers, extra_query, extra_body, betas)
        requester = client._requester
        request = requester.build(MESSAGES_PATH, body, options, stream=False)
        gate = Gate(client.governor, model, max_tokens)
        gate.sized(request.content)
        message = await with_retries(lambda: requester.send_message(request), retry, [], on_retry, gate)
        await gate.ended(None, message, finished=True)
        return message

    async def count_tokens(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        max_retries: int | None = None,
        on_retry: Hook[RetryInfo] | None = None,
        timeout: Timeout = NOT_GIVEN,  # noqa: ASYNC109 - the request's timeout, as in the official SDK
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Query | None = None,
        extra_body: Mapping[str, Any] | None = None,
        betas: Sequence[str] | None = None,
        **params: Unpack[CountTokensParams],
    ) -> MessageTokensCount:
        """The input tokens the request would take (``.input_tokens``), without running it; 32 MB checked first."""
        body = message_body("count_tokens", model, None, messages, params, COUNT_TOKENS_PARAMS)
        client = self._client
        retry = client._retry_policy(max_retries)
        options = request_options(timeout, extra_headers, extra_query, extra_body, betas)
        requester = client._requester
        request = requester.build(COUNT_TOKENS_PATH, body, options)
        gate = Gate(client.governor, COUNT_TOKENS_LANE)  # its own limit, apart from the model's Messages calls
        return await with_retries(lambda: requester.send_object(request, MessageTokensCount), retry, [], on_retry, gate)
