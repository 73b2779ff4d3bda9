"""Client: the sync client, a second thin I/O shell on ``httpx.Client``.

Configuration, options, typed parameters, request building, retry policy, errors and the
reply machine are the async client's own (``ClientConfig``, ``_request``, ``_reply``); only
sending, reading and sleeping are sync here (``_sync_request``, ``_sync_stream``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Literal, Unpack

import httpx

from ._batch_types import MessageTokensCount
from ._batching import COUNT_TOKENS_PATH
from ._client import (
    MESSAGES_PATH,
    ClientConfig,
    ClientOptions,
    create_body,
)
from ._errors import StreamkitError
from ._events import StreamEvent
from ._governed import Governor, SyncGate
from ._governor import COUNT_TOKENS_LANE
from ._hooks import Hook, Hooks, check_sync_hooks
from ._http_client import DefaultHTTPClient
from ._limits import MAX_BLOCKS, MAX_REPLY_BYTES
from ._message import Message
from ._params import COUNT_TOKENS_PARAMS, NOT_GIVEN, CountTokensParams, MessageParams, NotGiven, Query, message_body
from ._replay import Rewind
from ._request import API_VERSION, Timeout, request_options
from ._resume import ResumeInfo, ResumeStrategy
from ._retry import RetryInfo
from ._sync_request import SyncRequester, sync_stream_opener, with_retries_sync
from ._sync_resources import SyncBatches, SyncBeta, SyncFiles
from ._sync_stream import SyncMessageStream
from ._transport import DEFAULT_DRAIN_TIMEOUT


class Client(ClientConfig):
    """The sync client for the Messages API.  Use as ``with Client() as client``.

    The same options, parameters, errors, retries, resumes and stall watchdog as
    ``AsyncClient``, on an ``httpx.Client`` (``http_client=``: a caller's own, left open;
    the default one has keep-alive sockets and is closed on exit).  Hooks are plain
    functions.  ``client.messages.stream(...)`` is a context manager whose stream iterates
    events (``for event in stream``), with ``text_stream`` and ``get_final_message()``.
    ``client.messages.batches``, ``client.messages.count_tokens()`` and ``client.files`` are
    as on ``AsyncClient``.
    ``governor``: as on ``AsyncClient`` (a Governor shared by sync clients on any threads).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_retries: int = 2,
        max_resumes: int = 3,
        timeout: Timeout = NOT_GIVEN,
        http_client: httpx.Client | None = None,
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
            http_client = DefaultHTTPClient(None if isinstance(timeout, NotGiven) else timeout)
        self._http = http_client
        self._requester = SyncRequester(
            self._http,
            self.base_url,
            self.api_key,
            api_version,
            timeout=timeout,
            default_headers=self.default_headers,
            default_query=self.default_query,
        )
        self.messages = SyncMessages(self)
        self.files = SyncFiles(self)
        self.beta = SyncBeta(self.files)

    def with_options(self, **changes: Unpack[ClientOptions]) -> Client:
        """A client with other defaults on the same connection pool (see ``AsyncClient.with_options``)."""
        client = Client(http_client=self._http, **self._changed(changes))
        self._share_with(client)
        return client

    def __repr__(self) -> str:  # never shows the API key
        return f"Client(base_url={self.base_url!r}, api_key={'***' if self.api_key else None})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only when this client created it)."""
        if self._owns_http:
            self._http.close()


class SyncMessages:
    """``client.messages`` of the sync client: ``stream()``, ``create()``, ``count_tokens()``, ``batches``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.batches = SyncBatches(client)

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
    ) -> SyncMessageStream:
        """A streamed reply, as a context manager.  The options apply to every attempt, resumes included."""
        hooks = Hooks(
            on_text, on_thinking, on_tool_input, on_event, on_message, on_error, on_retry, on_resume, on_rewind
        )
        check_sync_hooks(hooks)
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
        gate = SyncGate(client.governor, model, max_tokens)
        return SyncMessageStream(
            sync_stream_opener(client._requester, MESSAGES_PATH, options, parts.retry, gate),
            parts.body,
            hooks=hooks,
            resume=parts.planner,
            stall_timeout=parts.stall_timeout,
            drain_timeout=parts.drain_timeout,
            accumulator=parts.accumulator,
        )

    def create(
        self,
        *,
        model: str,
        max_tokens: int,
        messages: Iterable[Mapping[str, Any]],
        max_retries: int | None = None,
        on_retry: Hook[RetryInfo] | None = None,
        timeout: Timeout = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Query | None = None,
        extra_body: Mapping[str, Any] | None = None,
        betas: Sequence[str] | None = None,
        **params: Unpack[MessageParams],
    ) -> Message:
        """A whole reply in one response.  Refuses requests that may outlast 10 minutes."""
        body = create_body(model, max_tokens, messages, params)
        check_sync_hooks(Hooks(on_retry=on_retry))
        client = self._client
        retry = client._retry_policy(max_retries)
        options = request_options(timeout, extra_headers, extra_query, extra_body, betas)
        requester = client._requester
        request = requester.build(MESSAGES_PATH, body, options, stream=False)
        gate = SyncGate(client.governor, model, max_tokens)
        gate.sized(request.content)
        message = with_retries_sync(lambda: requester.send_message(request), retry, [], on_retry, gate)
        gate.ended(None, message, finished=True)
        return message

    def count_tokens(
        self,
        *,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        max_retries: int | None = None,
        on_retry: Hook[RetryInfo] | None = None,
        timeout: Timeout = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Query | None = None,
        extra_body: Mapping[str, Any] | None = None,
        betas: Sequence[str] | None = None,
        **params: Unpack[CountTokensParams],
    ) -> MessageTokensCount:
        """The input tokens the request would take (``.input_tokens``), without running it; 32 MB checked first."""
        body = message_body("count_tokens", model, None, messages, params, COUNT_TOKENS_PARAMS)
        check_sync_hooks(Hooks(on_retry=on_retry))
        client = self._client
        retry = client._retry_policy(max_retries)
        options = request_options(timeout, extra_headers, extra_query, extra_body, betas)
        requester = client._requester
        request = requester.build(COUNT_TOKENS_PATH, body, options)
        send = partial(requester.send_object, request, MessageTokensCount)
        return with_retries_sync(send, retry, [], on_retry, SyncGate(client.governor, COUNT_TOKENS_LANE))
