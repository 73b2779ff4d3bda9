"""AsyncClient: configuration, request building and the retry loop before a stream."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import httpx
from pydantic import ValidationError

from ._errors import (
    APIConnectionError,
    APIStatusError,
    ProtocolError,
    RequestTooLargeError,
    StreamingRequiredError,
    StreamkitError,
)
from ._limits import encode_request, read_response_body
from ._message import Message
from ._resume import ResumePlanner, ResumeStrategy
from ._retry import RetryInfo, RetryPolicy
from ._stream import Hook, Hooks, MessageStream, call_hook, open_stream_response
from ._transport import default_http_client, send_request

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # documented limit of the Messages API
NONSTREAMING_LIMIT_S = 600  # the API asks that anything longer be streamed
_T = TypeVar("_T")


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


class AsyncClient:
    """Client for the Messages API.  Use as ``async with AsyncClient() as client``.

    ``api_key`` and ``base_url`` default to ``ANTHROPIC_API_KEY`` and
    ``ANTHROPIC_BASE_URL``.  A caller's own ``http_client`` is used as given and left
    open; the default one (keep-alive sockets, long read timeout) is closed on exit.
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
        retry_initial_delay: float = 0.5,
        retry_max_delay: float = 8.0,
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

    # -- plumbing used by Messages and MessageStream ----------------------------------

    def _retry_policy(self, max_retries: int | None) -> RetryPolicy:
        """The client's policy, with a per-call ``max_retries`` if one was given."""
        return self.retry_policy if max_retries is None else replace(self.retry_policy, max_retries=max_retries)

    def _request(self, body: Mapping[str, Any], headers: Mapping[str, str], *, stream: bool) -> httpx.Request:
        content = encode_request(body)
        if len(content) > MAX_REQUEST_BYTES:
            raise RequestTooLargeError(
                f"the request body is {len(content):,} bytes, over the API's limit of "
                f"{MAX_REQUEST_BYTES:,} bytes: it was not sent (shrink the messages or use the Files API)",
                error_type="request_too_large",
            )
        all_headers = {
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        if self.api_key is not None:
            all_headers["x-api-key"] = self.api_key
        all_headers.update(headers)
        return self._http.build_request("POST", f"{self.base_url}/v1/messages", content=content, headers=all_headers)

    async def _with_retries(
        self,
        send: Callable[[], Awaitable[_T]],
        policy: RetryPolicy,
        records: list[RetryInfo],
        on_retry: Hook | None,
    ) -> _T:
        """Send until it works or the policy gives up; only pre-stream failures retry."""
        done = 0
        while True:
            try:
                return await send()
            except (APIStatusError, APIConnectionError) as error:
                if not policy.should_retry(error, done):
                    raise
                delay = policy.delay(done, error)
                done += 1
                info = RetryInfo(done, error, delay)
                records.append(info)
                await call_hook(on_retry, info)
                await anyio.sleep(delay)

    async def _send_stream(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        policy: RetryPolicy,
        records: list[RetryInfo],
        on_retry: Hook | None,
    ) -> httpx.Response:
        request = self._request(body, headers, stream=True)
        return await self._with_retries(lambda: open_stream_response(self._http, request), policy, records, on_retry)


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
            client,
            body,
            headers=dict(extra_headers or {}),
            hooks=Hooks(on_text, on_thinking, on_tool_input, on_event, on_message, on_error, on_retry, on_resume),
            retry=retry,
            resume=planner,
            stall_timeout=client.stall_timeout if stall_timeout is NOT_GIVEN else stall_timeout,
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
        """A whole reply in one response.  Refuses requests that may outlast 10 minutes."""
        if 3600 * max_tokens / 128_000 > NONSTREAMING_LIMIT_S:
            raise StreamingRequiredError(
                f"max_tokens={max_tokens} may take longer than 10 minutes without streaming; "
                "the API requires streaming for such requests: use client.messages.stream(...)"
            )
        client = self._client
        retry = client._retry_policy(max_retries)
        body = {"model": model, "max_tokens": max_tokens, "messages": list(messages), **params}
        request = client._request(body, dict(extra_headers or {}), stream=False)

        async def send() -> Message:
            response = await send_request(client._http, request, stream=True)
            request_id = response.headers.get("request-id")
            content = await read_response_body(response)
            try:
                return Message.model_validate_json(content)
            except ValidationError as exc:
                raise ProtocolError(
                    f"the response is not a Message: {exc.errors()[0]['msg']}",
                    data=content,
                    request_id=request_id,
                ) from exc

        return await client._with_retries(send, retry, [], on_retry)
