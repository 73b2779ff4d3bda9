"""MessageStream: wires the SSE decoder and the accumulator to an httpx response.

Events are decoded a network chunk at a time into a queue that every consumer drains
(the event iterator, ``text_stream``, ``get_final_message``), so switching consumers
midway loses nothing and the snapshot always matches the last event handed out.
Typed events are only built for the consumers that ask for them.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, cast

import anyio
import httpx
from pydantic import ValidationError
from pydantic_core import from_json

from ._accumulate import MessageAccumulator
from ._errors import (
    APIConnectionError,
    APIStatusError,
    ConnectionLostError,
    IncompleteStreamError,
    ProtocolError,
    StallError,
    StreamkitError,
    StreamTimeoutError,
    stream_error,
)
from ._events import StreamEvent, parse_event
from ._limits import read_capped, read_status_error
from ._message import Message
from ._resume import ResumeInfo, ResumePlan, ResumePlanner
from ._retry import RetryInfo, RetryPolicy
from ._splice import Splicer
from ._sse import SSEDecoder
from ._transport import send_request

if TYPE_CHECKING:
    from ._client import AsyncClient

Hook = Callable[[Any], Awaitable[None] | None]
_DRAIN_SECONDS = 1.0  # after message_stop, how long to wait for the end of the body (to reuse the connection)


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callbacks fired as events arrive; each takes one argument and may be async."""

    on_text: Hook | None = None
    on_thinking: Hook | None = None
    on_tool_input: Hook | None = None
    on_event: Hook | None = None
    on_message: Hook | None = None
    on_error: Hook | None = None
    on_retry: Hook | None = None
    on_resume: Hook | None = None

    @property
    def per_event(self) -> bool:
        return any((self.on_text, self.on_thinking, self.on_tool_input, self.on_event, self.on_message))


async def call_hook(hook: Hook | None, argument: Any) -> None:
    if hook is not None:
        result = hook(argument)
        if inspect.isawaitable(result):
            await result


def _transport_error(exc: httpx.HTTPError) -> type[StreamkitError]:
    if isinstance(exc, httpx.TimeoutException):
        return StreamTimeoutError
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError
    return ConnectionLostError


def _stalled(seconds: float | None) -> StallError:
    return StallError(f"no progress for {seconds} s (only pings or silence): the stream stalled")


class MessageStream:
    """One streamed reply.  Use as ``async with client.messages.stream(...) as stream``.

    Entering sends the request (retrying as policy allows) and raises pre-stream errors;
    leaving closes the response at once, also on error or cancellation.
    """

    def __init__(
        self,
        client: AsyncClient,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str],
        hooks: Hooks,
        retry: RetryPolicy,
        resume: ResumePlanner,
        stall_timeout: float | None,
    ) -> None:
        self._client = client
        self._body = body
        self._headers = headers
        self._hooks = hooks
        self._per_event_hooks = hooks.per_event
        self._retry = retry
        self._resume = resume
        self._stall_timeout = stall_timeout
        self._accumulator = MessageAccumulator()
        self._queue: deque[dict[str, Any]] = deque()
        self._response: httpx.Response | None = None
        self._chunks: AsyncGenerator[bytes, None] | None = None
        self._decoder = SSEDecoder()
        self._pending: StreamkitError | None = None  # a failure to raise once the events before it are out
        self._finished = False  # message_stop decoded: what follows only drains the body
        self._deadline: float | None = None  # of the next read, when a cancel scope watches it
        self._silence_watched = False  # the transport's read timeout catches a silent stream
        self._stall_by_read_timeout = False  # ... and it was lowered to the stall timeout for that
        self._splicer: Splicer | None = None
        self._closed = False
        self._ended = False
        self._failure: StreamkitError | None = None
        self.request_id: str | None = None
        self.retries: list[RetryInfo] = []
        self.resumes: list[ResumeInfo] = []
        self.text_stream: AsyncGenerator[str, None] = self._texts()
        self._consumers: list[AsyncGenerator[Any, None]] = [self.text_stream]

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> MessageStream:
        try:
            response = await self._send(self._body)
        except StreamkitError as exc:
            await call_hook(self._hooks.on_error, exc)
            raise
        self._start(response)
        return self

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        return await self._client._send_stream(body, self._headers, self._retry, self.retries, self._hooks.on_retry)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the response now; safe to call twice, shielded from cancellation."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._close_response()
            for generator in self._consumers:
                await generator.aclose()

    async def _close_response(self) -> None:
        if self._response is not None:
            await self._response.aclose()
        if self._chunks is not None:
            await self._chunks.aclose()

    # -- what users read --------------------------------------------------------------

    @property
    def current_message(self) -> Message | None:
        """The reply reassembled so far; None before ``message_start``."""
        return self._accumulator.message

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        events = self._typed()
        self._consumers.append(events)
        return events

    async def _typed(self) -> AsyncGenerator[StreamEvent, None]:
        while (data := await self._next()) is not None:
            yield await self._event(data)

    async def _texts(self) -> AsyncGenerator[str, None]:
        while (data := await self._next()) is not None:
            if data["type"] == "content_block_delta" and data["delta"].get("type") == "text_delta":
                yield data["delta"]["text"]

    async def get_final_message(self) -> Message:
        """Consume the rest of the stream and return the whole reply.

        Raises the stream's failure instead of returning a reply that did not finish.
        """
        while await self._next() is not None:
            pass
        message = self._accumulator.message
        if message is None or not self._accumulator.finished:
            raise self._failure or self._fail(
                IncompleteStreamError("the stream was closed before message_stop: the reply is incomplete")
            )
        return message

    async def get_final_text(self) -> str:
        """Consume the rest of the stream and return the reply's text blocks joined."""
        return (await self.get_final_message()).text

    # -- the pump ---------------------------------------------------------------------

    async def _event(self, data: dict[str, Any]) -> StreamEvent:
        try:
            return parse_event(data)
        except ValidationError as exc:
            error = ProtocolError(f"malformed {data.get('type')} event: {exc}", data=repr(data).encode())
            await self._raise(error)

    async def _next(self) -> dict[str, Any] | None:
        """Hand out the next event, applied to the snapshot and its hooks fired.

        This is the one loop of the stream: read a chunk of the response; on a failure,
        resume (or retry) if the policy allows, else end the stream with that failure.
        """
        queue = self._queue
        while not queue:
            if self._failure is not None or self._ended or self._closed:
                return None
            if self._chunks is None:
                raise StreamkitError("use the stream inside `async with client.messages.stream(...)`")
            try:
                await self._read()
            except StreamkitError as error:
                if (plan := self._plan(error)) is None:
                    await self._raise(error)
                try:
                    await self._restart(error, plan)
                except StreamkitError as refused:
                    await self._raise(refused)
        data = queue.popleft()
        try:
            self._accumulator.feed(data)
        except ProtocolError as exc:
            exc.data = exc.data or repr(data).encode()[:500]
            await self._raise(exc)
        if self._per_event_hooks:
            await self._dispatch(data)
        return data

    async def _raise(self, error: StreamkitError) -> NoReturn:
        """End the stream with ``error``: remembered, reported to ``on_error``, raised."""
        self._fail(error)
        self._failure = error
        self._queue.clear()
        await call_hook(self._hooks.on_error, error)
        raise error

    async def _dispatch(self, data: dict[str, Any]) -> None:
        hooks = self._hooks
        if hooks.on_event is not None:
            await call_hook(hooks.on_event, await self._event(data))
        kind = data["type"]
        if kind == "content_block_delta":
            delta = data["delta"]
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                await call_hook(hooks.on_text, delta["text"])
            elif delta_type == "thinking_delta":
                await call_hook(hooks.on_thinking, delta["thinking"])
            elif delta_type == "input_json_delta":
                await call_hook(hooks.on_tool_input, delta["partial_json"])
        elif kind == "message_stop":
            await call_hook(hooks.on_message, self._accumulator.message)

    def _fail(self, error: StreamkitError) -> StreamkitError:
        """Attach what was received to an error about to be raised."""
        error.partial_message = self._accumulator.message
        error.request_id = error.request_id or self.request_id
        return error

    def _plan(self, error: StreamkitError) -> ResumePlan | None:
        retried = sum(1 for info in self.retries if not isinstance(info.error, APIStatusError | APIConnectionError))
        return self._resume.plan(error, self._accumulator, self._body, len(self.resumes), retried)

    async def _restart(self, error: StreamkitError, plan: ResumePlan) -> None:
        """Close the broken response and open the one that repairs it."""
        await self._close_response()
        failed_request_id = self.request_id
        if plan.strategy == "retry":
            retry = RetryInfo(len(self.retries) + 1, error, plan.delay)
            self.retries.append(retry)
            await call_hook(self._hooks.on_retry, retry)
        await anyio.sleep(plan.delay)
        try:
            response = await self._send(plan.body)
        except StreamkitError as refused:
            if not (
                plan.strategy == "prefill" and self._resume.strategy == "auto" and self._resume.rejects_prefill(refused)
            ):
                raise
            self._resume.prefill_rejected.add(str(self._body.get("model")))
            replan = self._plan(error)
            if replan is None:
                raise error from error.__cause__
            plan = replan
            response = await self._send(plan.body)
        self._start(response)
        self._accumulator.truncate(plan.keep_blocks)
        self._splicer = plan.splicer
        if plan.strategy != "retry":
            resume = ResumeInfo(
                len(self.resumes) + 1,
                error,
                plan.strategy,
                failed_request_id,
                self.request_id,
                plan.kept_chars,
                plan.dropped_block,
            )
            self.resumes.append(resume)
            await call_hook(self._hooks.on_resume, resume)

    def _start(self, response: httpx.Response) -> None:
        """Read ``response`` from now on, with the stall watchdog set up for it."""
        self._response = response
        self.request_id = response.headers.get("request-id")
        self._chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        self._decoder = SSEDecoder()
        self._deadline = None
        self._finished = False
        self._stall_by_read_timeout = False
        stall = self._stall_timeout
        # The transport applies its read timeout to every socket read of the body, a timer each read pays
        # anyway: lowered to the stall timeout, it catches silence at no cost per chunk.  httpcore (the
        # transport of httpx) takes it from the request when the body starts; elsewhere each read gets a scope.
        if stall is not None and "network_stream" in response.extensions:
            timeouts = response.request.extensions.get("timeout") or {}
            read = timeouts.get("read")
            if read is None or stall < read:
                response.request.extensions["timeout"] = {**timeouts, "read": stall}
                self._stall_by_read_timeout = True
            self._silence_watched = True
        else:
            self._silence_watched = stall is None

    async def _read(self) -> None:
        """Read and decode one chunk; raise how the response failed, if it did.

        A cancel scope is only entered while it is needed: when the last chunk held nothing but pings
        (its deadline counts from the last progress), when draining after ``message_stop``, or on a
        transport whose read timeout cannot watch for silence.
        """
        if (pending := self._pending) is not None:
            self._pending = None
            raise pending
        chunks = self._chunks
        assert chunks is not None
        stall = self._stall_timeout
        deadline = self._deadline
        asked = time.monotonic()
        try:
            if deadline is None and self._silence_watched:
                chunk = await chunks.__anext__()
            else:
                limit = anyio.current_time() + stall if deadline is None else deadline  # type: ignore[operator]
                with anyio.CancelScope(deadline=limit) as scope:
                    chunk = await chunks.__anext__()
                if scope.cancelled_caught:
                    if self._finished:
                        return self._end()
                    raise _stalled(stall)
        except StopAsyncIteration:
            return self._end()
        except httpx.HTTPError as exc:
            if self._finished:
                return self._end()
            if self._stall_by_read_timeout and isinstance(exc, httpx.ReadTimeout):
                raise _stalled(stall) from exc
            raise _transport_error(exc)(f"the connection failed after the stream started: {exc!r}") from exc
        finished = self._finished
        if self._decode(chunk) and not self._finished:
            self._deadline = None
        elif self._finished:
            if not finished:  # the reply is whole: what follows only drains the body, briefly
                self._deadline = anyio.current_time() + _DRAIN_SECONDS
        elif deadline is None and stall is not None:
            # Only pings (or part of an event): watch the time left since the consumer last asked after progress.
            self._deadline = anyio.current_time() + stall - (time.monotonic() - asked)

    def _end(self) -> None:
        """The body ended (or drained): fine after ``message_stop``, else the reply is incomplete."""
        if not self._accumulator.finished and not self._finished:
            leftover = len(self._decoder.buffered)
            detail = f" ({leftover} bytes of an unfinished event)" if leftover else ""
            raise IncompleteStreamError(f"the stream ended without message_stop{detail}: the reply is incomplete")
        self._ended = True

    def _decode(self, chunk: bytes) -> bool:
        """Queue the chunk's events; return whether any was more than a ping.

        A failure (an ``error`` event, bad JSON) is kept until the events before it are handed out.
        """
        splicer = self._splicer
        batch: list[dict[str, Any]] | deque[dict[str, Any]] = [] if splicer is not None else self._queue
        progress = False
        try:
            events = self._decoder.feed(chunk)
        except ProtocolError as exc:
            self._pending = exc
            return True
        for name, data in events:
            try:
                event = from_json(data)
                kind = event["type"]
            except ValueError:
                self._pending = ProtocolError(f"the data of a {name!r} event is not valid JSON", data=data)
                break
            except (KeyError, TypeError, IndexError):
                self._pending = ProtocolError(f"the data of a {name!r} event has no type", data=data)
                break
            if kind != "ping":
                progress = True
                if kind == "error":
                    self._pending = stream_error(event, request_id=self.request_id, partial_message=None)
                    break
                if kind == "message_stop":
                    self._finished = True
            batch.append(event)
        if splicer is not None:
            self._queue.extend(splicer.splice(batch))  # type: ignore[arg-type]
        return progress or self._pending is not None


async def open_stream_response(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send one streaming request; raise its pre-stream error, if any."""
    response = await send_request(http, request, stream=True)
    try:
        if response.status_code != 200:
            raise await read_status_error(response)
        content_type = response.headers.get("content-type", "")
        if content_type.partition(";")[0].strip().lower() != "text/event-stream":
            content, _ = await read_capped(response, 500)
            raise ProtocolError(
                f"expected a text/event-stream response, got {content_type or 'no content type'!r}",
                data=content,
                request_id=response.headers.get("request-id"),
            )
    except BaseException:
        await response.aclose()
        raise
    return response
