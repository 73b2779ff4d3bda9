"""SyncMessageStream: the sync I/O shell around the same reply machine as ``MessageStream``.

The same loop as ``_stream.MessageStream._next``: ask the machine, read a chunk (through
``SyncBodyReader``, the stall watchdog), sleep and reopen when it asks for a restart, hand
events to whichever consumer asks.  Only the waiting differs: blocking reads, ``time.sleep``.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Any, NoReturn

import httpx
from pydantic import ValidationError

from ._accumulate import MessageAccumulator
from ._errors import ProtocolError, StreamkitError
from ._events import RewindEvent, StreamEvent, parse_event
from ._hooks import Hooks, call_hook_sync
from ._message import Message
from ._replay import Rewind
from ._reply import END, NEED_DATA, ReplyState, Restart
from ._resume import ResumeInfo, ResumePlanner
from ._stream import StreamBase
from ._sync_request import SyncOpenAttempt
from ._transport import SyncBodyReader


class SyncMessageStream(StreamBase):
    """One streamed reply, for ``streamkit.Client``.  Use as ``with client.messages.stream(...) as stream``.

    Entering sends the request (retrying as policy allows) and raises pre-stream errors;
    leaving closes the response at once, also on error.
    """

    def __init__(
        self,
        open_attempt: SyncOpenAttempt,
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
        self._reader: SyncBodyReader | None = None
        self.text_stream: Generator[str, None, None] = self._texts()
        self._consumers: list[Generator[Any, None, None]] = [self.text_stream]

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> SyncMessageStream:
        try:
            response = self._open(self._body, self.retries, self._hooks.on_retry)
        except StreamkitError as exc:
            call_hook_sync(self._hooks.on_error, exc)
            raise
        self._start(response)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the response now; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._settle()
        finally:  # a settlement that fails (a hook, a warning as error) must not leak the connection
            self._machine.close()
            self._close_reader()
            for generator in self._consumers:
                generator.close()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _settle(self) -> None:
        """The attempt being read is over: the rate governor settles it (once) with its usage."""
        machine = self._machine
        self._open.ended(machine.error, machine.message, finished=machine.finished)

    def _start(self, response: httpx.Response) -> ResumeInfo | None:
        self._reader = SyncBodyReader(response, self._stall_timeout, self._drain_timeout)
        self._headers = response.headers
        return self._machine.start(response.headers.get("request-id"))

    # -- what users read --------------------------------------------------------------

    def __iter__(self) -> Iterator[StreamEvent]:
        events = self._typed()
        self._consumers.append(events)
        return events

    def _typed(self) -> Generator[StreamEvent, None, None]:
        while (data := self._next()) is not None:
            if isinstance(data, Rewind):
                yield RewindEvent(index=data.index, offset=data.offset, text_offset=data.text_offset)
            else:
                yield self._event(data)

    def _texts(self) -> Generator[str, None, None]:
        while (data := self._next()) is not None:
            if data.__class__ is not Rewind and data["type"] == "content_block_delta":  # type: ignore[index]
                delta = data["delta"]  # type: ignore[index]
                if delta.get("type") == "text_delta":
                    yield delta["text"]

    def get_final_message(self) -> Message:
        """Consume the rest of the stream and return the whole reply (as ``MessageStream.get_final_message``)."""
        while self._next() is not None:
            pass
        return self._received(self._machine.final_message())

    def get_final_text(self) -> str:
        """Consume the rest of the stream and return the reply's text blocks joined."""
        return self.get_final_message().text

    # -- the pump ---------------------------------------------------------------------

    def _event(self, data: dict[str, Any]) -> StreamEvent:
        try:
            return parse_event(data)
        except ValidationError as exc:
            error = ProtocolError(f"malformed {data.get('type')} event: {exc}", data=repr(data).encode())
            self._report(self._machine.end_with(error))

    def _next(self) -> dict[str, Any] | Rewind | None:
        """Hand out the next event (or rewind): ``MessageStream._next``, blocking."""
        machine = self._machine
        while True:
            try:
                item = machine.next_event()
            except StreamkitError as error:
                self._report(error)
            if item.__class__ is dict:
                if self._per_event_hooks:
                    self._dispatch(item)
                return item
            if item is NEED_DATA:
                self._read()
            elif item is END:
                self._settle()
                return None
            elif isinstance(item, Restart):
                try:
                    self._restart(item)
                except StreamkitError as error:
                    self._report(error)
            else:
                assert isinstance(item, Rewind)  # the only other thing the machine hands out
                call_hook_sync(self._hooks.on_rewind, item)
                return item

    def _read(self) -> None:
        reader = self._reader
        machine = self._machine
        assert reader is not None
        try:
            chunk = reader.read()
        except StreamkitError as error:
            machine.fail(error)
            return
        if chunk is None:
            machine.feed_eof()
            return
        reader.progressed(machine.feed(chunk))
        if machine.state is ReplyState.DRAINING:
            reader.drain()

    def _restart(self, restart: Restart) -> None:
        """Close the broken response and open the one that repairs it."""
        self._close_reader()
        if not self._open.ended(restart.cause, self._machine.message, finished=False, retry=True):
            raise self._machine.end_with(restart.cause)  # the governor's retry budget is empty
        if restart.strategy == "retry":
            call_hook_sync(self._hooks.on_retry, self._retry_info(restart))
        time.sleep(restart.delay)
        waited = 0.0  # a prefill refused and replanned as a continuation: one resume, two opens
        while True:
            try:
                response = self._open(restart.body, self.retries, self._hooks.on_retry)
                break
            except StreamkitError as refused:
                waited += self._open.governor_wait
                restart = self._machine.refused(refused)
        resume = self._start(response)
        if resume is not None:
            resume.governor_wait = waited + self._open.governor_wait
            call_hook_sync(self._hooks.on_resume, resume)

    def _report(self, error: StreamkitError) -> NoReturn:
        """End the stream with ``error``: reported to ``on_error``, raised."""
        if error.partial_message is not None:
            self._received(error.partial_message)
        call_hook_sync(self._hooks.on_error, error)
        raise error

    def _dispatch(self, data: dict[str, Any]) -> None:
        hooks = self._hooks
        if hooks.on_event is not None:
            call_hook_sync(hooks.on_event, self._event(data))
        kind = data["type"]
        if kind == "content_block_delta":
            delta = data["delta"]
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                call_hook_sync(hooks.on_text, delta["text"])
            elif delta_type == "thinking_delta":
                call_hook_sync(hooks.on_thinking, delta["thinking"])
            elif delta_type == "input_json_delta":
                call_hook_sync(hooks.on_tool_input, delta["partial_json"])
        elif kind == "message_stop" and (message := self._machine.message) is not None:
            call_hook_sync(hooks.on_message, self._received(message))
