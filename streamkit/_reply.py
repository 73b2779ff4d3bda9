"""The reply machine: one streamed reply, sans-I/O, across every attempt it takes.

Feed it the bytes of each attempt's body and tell it when a body ends or fails; ask it
for the next thing to do.  It owns the SSE decoder, the accumulator, the splicer and the
failure bookkeeping, and never touches a socket, a clock or a hook: the async stream (and
any other shell) reads, sleeps and calls back as it says.

``next_event()`` answers with one of:

- an event (the decoded JSON object), already applied to the snapshot: hand it out;
- a ``Rewind``: a regenerated part of the reply departs from what was handed out;
- ``NEED_DATA``: read the next chunk (``feed``), the end of the body (``feed_eof``) or
  the failure of the read (``fail``);
- a ``Restart``: close the body, wait ``delay`` seconds, send ``body``, then ``start``;
- ``END``: the reply is over (whole, or its failure was already raised).

It raises the reply's final failure, with ``partial_message`` and ``request_id`` attached.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic_core import from_json

from ._accumulate import MessageAccumulator
from ._errors import IncompleteStreamError, ProtocolError, StreamkitError, stream_error
from ._message import Message
from ._replay import Replay, Rewind, shown_blocks
from ._resume import ResumeInfo, ResumePlan, ResumePlanner
from ._splice import Splicer
from ._sse import SSEDecoder


class ReplyState(enum.Enum):
    """Where a reply stands."""

    WAITING = "waiting"  # no body is being read: before the first attempt, or between two
    STREAMING = "streaming"  # an attempt's body is being read
    DRAINING = "draining"  # message_stop arrived: the rest of the body is only drained
    FINISHED = "finished"  # the body is over and the reply whole (its last events may still be queued)
    FAILED = "failed"  # the reply ended with ``error``
    CLOSED = "closed"  # its reader closed it before the end


_STREAMING, _DRAINING = ReplyState.STREAMING, ReplyState.DRAINING  # read on every event and chunk


class _Signal(enum.Enum):
    NEED_DATA = "need data"
    END = "end"


NEED_DATA: Final = _Signal.NEED_DATA
END: Final = _Signal.END


@dataclass(frozen=True, slots=True)
class Restart:
    """Open the next attempt: ``body`` after ``delay`` seconds, to repair ``cause``."""

    body: dict[str, Any]
    delay: float
    strategy: Literal["prefill", "continue", "retry"]
    cause: StreamkitError


Next = dict[str, Any] | Rewind | Restart | _Signal


def _decoded(events: list[tuple[str, bytes]]) -> tuple[list[dict[str, Any]], bool] | None:
    """The events decoded, and whether one is more than a ping, if none needs a decision here (an
    ``error``, ``message_stop``, data that is not a JSON object with a type); else None: decode them one by one.

    A read of a stream that fell behind holds many events: they are decoded in one pass.
    """
    try:
        decoded = [from_json(data) for _, data in events]
        kinds = [event["type"] for event in decoded]
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    if "error" in kinds or "message_stop" in kinds:
        return None
    return decoded, kinds.count("ping") != len(kinds)


class ReplyMachine:
    """One reply across its attempts; see the module docstring for the protocol."""

    def __init__(self, body: dict[str, Any], planner: ResumePlanner, accumulator: MessageAccumulator) -> None:
        self.state = ReplyState.WAITING
        self.error: StreamkitError | None = None
        self.request_id: str | None = None
        self.resumes: list[ResumeInfo] = []
        self.rewinds: list[Rewind] = []
        self.retries = 0  # plain retries after a 200 (before any content); pre-stream ones are the requester's
        self._body = body
        self._planner = planner
        self._accumulator = accumulator  # fresh, with the reply's caps
        self._decoder = SSEDecoder()
        self._queue: deque[dict[str, Any]] = deque()  # decoded (and spliced) events, not yet applied
        self._ready: deque[dict[str, Any] | Rewind] = deque()  # applied, to hand out
        self._pending: StreamkitError | None = None  # a failure to report once the events before it are out
        self._splicer: Splicer | None = None
        self._replay: Replay | None = None
        self._shown_message: Message | None = None  # what the reader was shown, while a replay hides a repeat
        self._plan: ResumePlan | None = None  # the plan of the Restart being carried out
        self._cause: StreamkitError | None = None

    # -- what the shell reads ----------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The reply reached ``message_stop`` (the body may still be draining)."""
        return self.state is ReplyState.FINISHED or self.state is ReplyState.DRAINING

    @property
    def message(self) -> Message | None:
        """The reply as far as it was handed out; None before ``message_start``.

        While a regeneration is still being hidden, that is the reply as it stood before the
        resume: the accumulator holds only the part regenerated so far.
        """
        if self._replay is not None:
            return self._shown_message
        return self._accumulator.message

    def final_message(self) -> Message:
        """The whole reply; raises the reply's failure instead of returning an unfinished one."""
        message = self._accumulator.message
        if message is None or not self._accumulator.finished:
            raise self.error or self._attach(
                IncompleteStreamError("the stream was closed before message_stop: the reply is incomplete")
            )
        return message

    # -- what the shell tells it -------------------------------------------------------

    def start(self, request_id: str | None) -> ResumeInfo | None:
        """An attempt's body begins; after a ``Restart`` that resumed, returns its record."""
        if self.state is not ReplyState.WAITING:
            raise StreamkitError(f"cannot start an attempt while the reply is {self.state.value}")
        failed_request_id, self.request_id = self.request_id, request_id
        self.state = ReplyState.STREAMING
        self._decoder = SSEDecoder()
        plan, self._plan = self._plan, None
        if plan is None:
            return None
        accumulator = self._accumulator
        shown = shown_blocks(accumulator, plan.keep_blocks)
        if self._replay is not None:
            shown = self._replay.carry_into(shown, plan.keep_blocks)
        else:
            self._shown_message = accumulator.message
        accumulator.truncate(plan.keep_blocks)
        self._replay = Replay(shown, accumulator) if shown else None
        self._splicer = plan.splicer
        if plan.strategy == "retry":
            return None
        assert self._cause is not None
        info = ResumeInfo(
            len(self.resumes) + 1,
            self._cause,
            plan.strategy,
            failed_request_id,
            request_id,
            plan.kept_chars,
            plan.dropped_block,
        )
        self.resumes.append(info)
        return info

    def feed(self, chunk: bytes) -> bool:
        """Decode a chunk of the body; returns whether it held more than pings (progress).

        A failure in it (an ``error`` event, data that is not JSON, a malformed event) is
        reported by ``next_event`` once the events before it are handed out.
        """
        if self._pending is not None:
            return True
        splicer = self._splicer
        batch: list[dict[str, Any]] | deque[dict[str, Any]] = self._queue if splicer is None else []
        progress = False
        try:
            events = self._decoder.feed(chunk)
        except ProtocolError as exc:
            self._pending = exc
            return True
        draining = self.state is _DRAINING
        if not draining and len(events) > 1 and (plain := _decoded(events)) is not None:
            batch.extend(plain[0])
            progress = plain[1]
            events = []
        for name, data in events:
            if draining:
                break  # the reply is whole: what follows only drains the body
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
                    self.state = _DRAINING
                    draining = True
            batch.append(event)
        if splicer is not None:
            out: list[dict[str, Any]] = []
            try:
                splicer.splice(batch, out)  # type: ignore[arg-type]
            except ProtocolError as exc:
                self._pending = exc
            self._queue.extend(out)
        return progress or self._pending is not None

    def feed_eof(self) -> None:
        """The body ended: the reply is whole after ``message_stop``, else incomplete."""
        if self.state is ReplyState.DRAINING:
            self.state = ReplyState.FINISHED
        elif self.state is ReplyState.STREAMING and self._pending is None:
            leftover = len(self._decoder.buffered)
            detail = f" ({leftover} bytes of an unfinished event)" if leftover else ""
            self._pending = IncompleteStreamError(
                f"the stream ended without message_stop{detail}: the reply is incomplete"
            )

    def fail(self, error: StreamkitError) -> None:
        """Reading the body failed (a cut, a stall, a timeout); after ``message_stop`` nothing is lost."""
        if self.state is ReplyState.DRAINING:
            self.state = ReplyState.FINISHED
        elif self._pending is None:
            self._pending = error

    def refused(self, refusal: StreamkitError) -> Restart:
        """The request of a ``Restart`` failed: maybe another plan (continue, if prefill is refused)."""
        plan, cause = self._plan, self._cause
        assert plan is not None and cause is not None
        planner = self._planner
        if plan.strategy == "prefill" and planner.strategy == "auto" and planner.rejects_prefill(refusal):
            planner.prefill_rejected.add(str(self._body.get("model")))
            replan = self._plan_for(cause)
            if replan is None:
                raise self._final(cause)
            self._plan = replan
            return Restart(replan.body, 0.0, replan.strategy, cause)
        raise self._final(refusal)

    def end_with(self, error: StreamkitError) -> StreamkitError:
        """The shell cannot use the reply past this point (an event it cannot type): end it with ``error``."""
        return self._final(error)

    def close(self) -> None:
        """The reader is done with the reply, finished or not."""
        if self.state not in (ReplyState.FINISHED, ReplyState.FAILED):
            self.state = ReplyState.CLOSED
        self._queue.clear()
        self._ready.clear()

    # -- what it answers ---------------------------------------------------------------

    def next_event(self) -> Next:
        """The next thing to do; see the module docstring.  Raises the reply's final failure."""
        ready = self._ready
        if ready:
            return ready.popleft()
        queue = self._queue
        while queue:
            data = queue.popleft()
            try:
                self._accumulator.feed(data)
            except ProtocolError as exc:
                exc.data = exc.data or repr(data).encode()[:500]
                raise self._final(exc) from exc.__cause__
            replay = self._replay
            if replay is None:
                return data
            for item in replay.filter(data):
                if isinstance(item, Rewind):
                    self._rewound(item)
                ready.append(item)
            if not replay.active:
                self._replay = None
            if ready:
                return ready.popleft()
        if (error := self._pending) is not None:
            self._pending = None
            return self._failed(error)
        state = self.state
        if state is _STREAMING or state is _DRAINING:
            return NEED_DATA
        if state is ReplyState.WAITING:
            raise StreamkitError("no attempt has started: use the stream inside its `with` block")
        return END

    def _failed(self, error: StreamkitError) -> Restart:
        plan = self._plan_for(error)
        if plan is None:
            raise self._final(error)
        self.state = ReplyState.WAITING
        self._plan, self._cause = plan, error
        if plan.strategy == "retry":
            self.retries += 1
        return Restart(plan.body, plan.delay, plan.strategy, error)

    def _plan_for(self, error: StreamkitError) -> ResumePlan | None:
        return self._planner.plan(error, self._accumulator, self._body, len(self.resumes), self.retries)

    def _rewound(self, rewind: Rewind) -> None:
        self.rewinds.append(rewind)
        if self.resumes and self.resumes[-1].rewind is None:
            self.resumes[-1].rewind = rewind

    def _attach(self, error: StreamkitError) -> StreamkitError:
        """Attach what was received to an error about to be raised."""
        error.partial_message = self.message
        error.request_id = error.request_id or self.request_id
        return error

    def _final(self, error: StreamkitError) -> StreamkitError:
        self.state = ReplyState.FAILED
        self.error = error
        self._pending = None
        self._queue.clear()
        self._ready.clear()
        return self._attach(error)
