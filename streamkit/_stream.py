"""MessageStream: the async I/O shell around the reply machine.

It reads the body (through the transport's ``BodyReader``, which watches for stalls),
feeds the reply machine, sleeps and reopens when the machine asks for a restart, and
hands events to whichever consumer asks: the event iterator, ``text_stream``,
``get_final_message``, the hooks.  Every consumer drains the same machine, so switching
consumers midway loses nothing and the snapshot always matches the last event handed out.
Typed events are only built for the consumers that ask for them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import httpx
from pydantic import ValidationError

from ._accumulate import MessageAccumulator
from ._errors import ProtocolError, StreamkitError
from ._events import RewindEvent, StreamEvent, parse_event
from ._hooks import Hooks, call_hook
from ._message import Message
from ._ratelimits import RateLimits
from ._replay import Rewind
from ._reply import END, NEED_DATA, ReplyMachine, ReplyState, Restart
from ._request import OpenAttempt
from ._resume import ResumeInfo, ResumePlanner
from ._retry import RetryInfo
from ._transport import BodyReader, body_reader

if TYPE_CHECKING:
    from ._aiohttp import AiohttpBodyReader


class StreamBase:
    """What both stream shells (this one and ``_sync_stream``) hold and show of a reply: no I/O here."""

    def __init__(
        self,
        body: dict[str, Any],
        *,
        hooks: Hooks,
        resume: ResumePlanner,
        stall_timeout: float | None,
        drain_timeout: float,
        accumulator: MessageAccumulator,
    ) -> None:
        self._body = body
        self._machine = ReplyMachine(body, resume, accumulator)
        self._hooks = hooks
        self._per_event_hooks = hooks.per_event
        self._stall_timeout = stall_timeout
        self._drain_timeout = drain_timeout
        self._headers: Mapping[str, str] | None = None
        self._closed = False
        self.retries: list[RetryInfo] = []
        """Every retry: of a request before its stream, and of a stream that failed before any content."""

    @property
    def request_id(self) -> str | None:
        """The ``request-id`` of the attempt being read (the last one)."""
        return self._machine.request_id

    @property
    def headers(self) -> Mapping[str, str] | None:
        """The response headers of the attempt being read (the last one); None before entering."""
        return self._headers

    @property
    def rate_limits(self) -> RateLimits:
        """The ``anthropic-ratelimit-*`` headers of that attempt, parsed."""
        return RateLimits.from_headers(self._headers)

    @property
    def resumes(self) -> list[ResumeInfo]:
        """Every resume of this stream, in order."""
        return self._machine.resumes

    @property
    def rewinds(self) -> list[Rewind]:
        """Every point where a regenerated part departed from what was already handed out."""
        return self._machine.rewinds

    @property
    def current_message(self) -> Message | None:
        """The reply reassembled so far; None before ``message_start``.

        A read-only snapshot: a new one shares with the last what did not change since (a
        block, its tool input, the usage), which is what keeps each read cheap.  Copy what
        you mean to modify (``message.model_copy(deep=True)``).
        """
        return self._machine.message

    def _received(self, message: Message) -> Message:
        return message._received(self._machine.request_id, self._headers)

    def _retry_info(self, restart: Restart) -> RetryInfo:
        info = RetryInfo(len(self.retries) + 1, restart.cause, restart.delay)
        self.retries.append(info)
        return info


class MessageStream(StreamBase):
    """One streamed reply.  Use as ``async with client.messages.stream(...) as stream``.

    Entering sends the request (retrying as policy allows) and raises pre-stream errors;
    leaving closes the response at once, also on error or cancellation.
    """

    def __init__(
        self,
        open_attempt: OpenAttempt,
        body: dict[str, Any],
        *,
        hooks: Hooks,
        resume: ResumePlanner,
        stall_timeout: float | None,
        drain_timeout: float,
        accumulator: MessageAccumulator,
    ) -> None:
        super().__init__(
            body,
            hooks=hooks,
            resume=resume,
            stall_timeout=stall_timeout,
            drain_timeout=drain_timeout,
            accumulator=accumulator,
        )
        self._open = open_attempt
        self._reader: BodyReader | AiohttpBodyReader | None = None
        self.text_stream: AsyncGenerator[str, None] = self._texts()
        self._consumers: list[AsyncGenerator[Any, None]] = [self.text_stream]

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> MessageStream:
        try:
            response = await self._open(self._body, self.retries, self._hooks.on_retry)
        except StreamkitError as exc:
            await call_hook(self._hooks.on_error, exc)
            raise
        self._start(response)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the response now; safe to call twice, shielded from cancellation."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._settle()  # the governor shields its own settlement where it can suspend
        finally:  # a settlement that fails (a hook, a warning as error) must not leak the connection
            self._machine.close()
            with anyio.CancelScope(shield=True):
                await self._close_reader()
                for generator in self._consumers:
                    await generator.aclose()

    async def _close_reader(self) -> None:
        if self._reader is not None:
            await self._reader.aclose()

    async def _settle(self) -> None:
        """The attempt being read is over: the rate governor settles it (once) with its usage."""
        machine = self._machine
        await self._open.ended(machine.error, machine.message, finished=machine.finished)

    def _start(self, response: httpx.Response) -> ResumeInfo | None:
        self._reader = body_reader(response, self._stall_timeout, self._drain_timeout)
        self._headers = response.headers
        return self._machine.start(response.headers.get("request-id"))

    # -- what users read --------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        events = self._typed()
        self._consumers.append(events)
        return events

    async def _typed(self) -> AsyncGenerator[StreamEvent, None]:
        while (data := await self._next()) is not None:
            if isinstance(data, Rewind):
                yield RewindEvent(index=data.index, offset=data.offset, text_offset=data.text_offset)
            else:
                yield await self._event(data)

    async def _texts(self) -> AsyncGenerator[str, None]:
        while (data := await self._next()) is not None:
            if data.__class__ is not Rewind and data["type"] == "content_block_delta":  # type: ignore[index]
                delta = data["delta"]  # type: ignore[index]
                if delta.get("type") == "text_delta":
                    yield delta["text"]

    async def get_final_message(self) -> Message:
        """Consume the rest of the stream and return the whole reply.

        Raises the stream's failure instead of returning a reply that did not finish.  The
        message carries the ``request_id``, ``headers`` and ``rate_limits`` of the last attempt.
        """
        while await self._next() is not None:
            pass
        return self._received(self._machine.final_message())

    async def get_final_text(self) -> str:
        """Consume the rest of the stream and return the reply's text blocks joined."""
        return (await self.get_final_message()).text

    # -- the pump ---------------------------------------------------------------------

    async def _event(self, data: dict[str, Any]) -> StreamEvent:
        try:
            return parse_event(data)
        except ValidationError as exc:
            error = ProtocolError(f"malformed {data.get('type')} event: {exc}", data=repr(data).encode())
            await self._report(self._machine.end_with(error))

    async def _next(self) -> dict[str, Any] | Rewind | None:
        """Hand out the next event (or rewind), applied to the snapshot and its hooks fired.

        This is the one loop of the stream: do what the reply machine asks (read a chunk,
        restart an attempt) until it has something to hand out or the reply is over.
        """
        machine = self._machine
        while True:
            try:
                item = machine.next_event()
            except StreamkitError as error:
                await self._report(error)
            if item.__class__ is dict:
                if self._per_event_hooks:
                    await self._dispatch(item)
                return item
            if item is NEED_DATA:
                await self._read()
            elif item is END:
                await self._settle()
                return None
            elif isinstance(item, Restart):
                try:
                    await self._restart(item)
                except StreamkitError as error:
                    await self._report(error)
            else:
                assert isinstance(item, Rewind)  # the only other thing the machine hands out
                await call_hook(self._hooks.on_rewind, item)
                return item

    async def _read(self) -> None:
        reader = self._reader
        machine = self._machine
        assert reader is not None
        try:
            chunk = await reader.read()
        except StreamkitError as error:
            machine.fail(error)
            return
        if chunk is None:
            machine.feed_eof()
            return
        reader.progressed(machine.feed(chunk))
        if machine.state is ReplyState.DRAINING:
            reader.drain()

    async def _restart(self, restart: Restart) -> None:
        """Close the broken response and open the one that repairs it."""
        await self._close_reader()
        if not await self._open.ended(restart.cause, self._machine.message, finished=False, retry=True):
            raise self._machine.end_with(restart.cause)  # the governor's retry budget is empty
        if restart.strategy == "retry":
            await call_hook(self._hooks.on_retry, self._retry_info(restart))
        await anyio.sleep(restart.delay)
        waited = 0.0  # a prefill refused and replanned as a continuation: one resume, two opens
        while True:
            try:
                response = await self._open(restart.body, self.retries, self._hooks.on_retry)
                break
            except StreamkitError as refused:
                waited += self._open.governor_wait
                restart = self._machine.refused(refused)
        resume = self._start(response)
        if resume is not None:
            resume.governor_wait = waited + self._open.governor_wait
            await call_hook(self._hooks.on_resume, resume)

    async def _report(self, error: StreamkitError) -> NoReturn:
        """End the stream with ``error``: reported to ``on_error``, raised."""
        if error.partial_message is not None:
            self._received(error.partial_message)
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
        elif kind == "message_stop" and (message := self._machine.message) is not None:
            await call_hook(hooks.on_message, self._received(message))
