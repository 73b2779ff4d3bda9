"""The rate governor's shells: ``Governor`` (the public object) and the per-call gates.

``Governor`` keeps a backend (the in-process ``GovernorPolicy`` behind a lock, or Redis) and
a local first-come-first-served line per lane: only the caller at its head asks the backend,
the others wait for their turn, so callers of one process are admitted in the order they
came, and a lane held back (a model's limits, a 429 on token counting) holds up no other.
The backend answers an admission with the time to send: within its horizon the request is
admitted and the caller sleeps until then, still at the head of the line (so each process
holds at most one admission scheduled ahead, and processes sharing Redis take turns);
further off, the head sleeps until the horizon and asks again.  A caller that would wait
past ``pool_timeout`` gets ``GovernorTimeoutError`` at once, never after a hang.

``Gate`` (async) and ``SyncGate`` govern one call's attempts: admit before each attempt is
sent, settle when it ends (a failure before the stream at once; a stream when it ends, told by
the stream shell; a ``create()`` with its reply's usage).  Nothing here runs per event.

A Governor is shared by clients of one kind: async clients on one event loop, or sync
clients on any threads (a turn is handed on through the waiter's own event).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from ._errors import APIStatusError, StreamkitError
from ._governor import (
    DEFAULTS,
    ENDPOINTS,
    Admission,
    GovernorSnapshot,
    GovernorTimeoutError,
    MemoryBackend,
    Outcome,
    Settings,
    Verdict,
    lane_outcome,
    outcome_of,
    requests_only,
    retryable_overload,
)
from ._message import Message
from ._ratelimits import RateLimits
from ._retry import RetryInfo, RetryPolicy

if TYPE_CHECKING:
    from ._governor_redis import RedisBackend

_T = TypeVar("_T")
BYTES_PER_TOKEN = 4  # the input estimate before the usage is known: the body's size over this


_E = TypeVar("_E", anyio.Event, threading.Event)


class _Waiter:
    """One caller in a lane's line; ``wake`` is set for a caller that joined behind others (the
    head of an empty line never waits, so it needs no event)."""

    __slots__ = ("line", "wake")

    def __init__(self, line: deque[_Waiter]) -> None:
        self.line = line
        self.wake: anyio.Event | threading.Event | None = None


class Governor:
    """A rate governor: admits every request before it is sent, at the pace the limits allow.

    Every client has one by default (``AsyncClient(governor=True)``: a fresh in-process
    governor that learns the limits from the ``anthropic-ratelimit-*`` headers), and light
    traffic never waits: a burst of up to ``initial_window`` requests goes at once.  Pass
    one ``Governor`` to several clients to pace them together, ``governor=False`` for none.

    Each model has a lane; so have token counting (``"count_tokens"``), the Message Batches
    API (``"batches"``) and the Files API (``"files"``), which the API limits apart: their
    lanes count requests only, are not under the explicit limits below (the models'), and are
    never a model's, whatever its name (``snapshot(endpoint="batches")`` reads one).
    The pacing defaults below are the policy's (``_governor.Settings``, which every backend
    runs and which checks every value).

    - ``requests_per_minute``, ``input_tokens_per_minute``, ``output_tokens_per_minute``:
      explicit limits (else learned from the headers).  Output tokens are reserved from
      ``max_tokens`` at admission and settled to the usage when the reply ends; input tokens
      are estimated from the body's size and settled likewise.
    - ``redis_url`` and ``key``: share one governor between processes and machines through
      Redis (``pip install streamkit[redis]``); every governor with the same ``key`` on the
      same Redis paces together.  While Redis is unreachable this governor falls back to its
      in-process state (with one warning), and rejoins when Redis answers again.
    - ``redis_cluster``: ``redis_url`` names a node of a Redis Cluster (any one: the others
      are discovered).  A governor's keys share one hash slot, so each round trip goes to
      the node that owns it; a node or the cluster down is a fallback as above.
    - ``pool_timeout``: seconds a request may wait for its turn; past it (or when the limits
      say at once that it would), ``GovernorTimeoutError`` and the request is not sent;
      ``math.inf``: wait for as long as it takes.
    - Ramp: requests are paced at a rate that starts at ``initial_window`` per
      ``ramp_seconds`` (a burst of ``initial_window`` goes at once), also after ``idle_after``
      seconds idle, and, while demand holds it back, doubles every ``ramp_doubling`` seconds
      (slow start) until the first 429 or 529; each cuts it by ``backoff`` (not below
      ``min_rate`` requests a second), after which it grows by ``recovery`` requests a second
      each second.  It never passes the requests-per-minute limit.
    - ``horizon``: an admission within this many seconds is taken at once; further off, the
      caller asks again later (so a cut or a refund reaches requests not yet sent).
    - ``lease_seconds``: an admitted request's reservation is given back this long after its
      send time if it never settles (its process died).
    - ``retry_ratio``, ``retry_burst``: the retry budget.  Every first attempt adds
      ``retry_ratio`` of a retry (and every second adds as much), up to ``retry_burst``; each
      retry after a 429 or 529 takes one; with none left the 429/529 is raised, not retried.
    - ``redis_timeout``: seconds for a Redis round trip before it counts as down;
      ``redis_retry``: seconds before the first try to rejoin (doubling, to 30 s).
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = DEFAULTS.requests_per_minute,
        input_tokens_per_minute: float | None = DEFAULTS.input_tokens_per_minute,
        output_tokens_per_minute: float | None = DEFAULTS.output_tokens_per_minute,
        redis_url: str | None = None,
        redis_cluster: bool = False,
        key: str = "streamkit",
        pool_timeout: float = 300.0,
        initial_window: int = DEFAULTS.initial_window,
        ramp_seconds: float = DEFAULTS.ramp_seconds,
        ramp_doubling: float = DEFAULTS.ramp_doubling,
        recovery: float = DEFAULTS.recovery,
        backoff: float = DEFAULTS.backoff,
        min_rate: float = DEFAULTS.min_rate,
        idle_after: float = DEFAULTS.idle_after,
        horizon: float = DEFAULTS.horizon,
        lease_seconds: float = DEFAULTS.lease_seconds,
        retry_ratio: float = DEFAULTS.retry_ratio,
        retry_burst: float = DEFAULTS.retry_burst,
        redis_timeout: float = 1.0,
        redis_retry: float = 1.0,
    ) -> None:
        if not 0 <= pool_timeout <= math.inf:  # NaN fails it; inf waits for as long as it takes
            raise StreamkitError(f"Governor: pool_timeout must be a number of seconds >= 0 or inf, got {pool_timeout}")
        for name, value in (("redis_timeout", redis_timeout), ("redis_retry", redis_retry)):
            if not 0 < value < math.inf:
                raise StreamkitError(f"Governor: {name} must be positive and finite, got {value}")
        self.settings = Settings(  # checks the values
            requests_per_minute=requests_per_minute,
            input_tokens_per_minute=input_tokens_per_minute,
            output_tokens_per_minute=output_tokens_per_minute,
            initial_window=initial_window,
            ramp_seconds=ramp_seconds,
            ramp_doubling=ramp_doubling,
            recovery=recovery,
            backoff=backoff,
            min_rate=min_rate,
            idle_after=idle_after,
            horizon=horizon,
            lease_seconds=lease_seconds,
            retry_ratio=retry_ratio,
            retry_burst=retry_burst,
        )
        self.pool_timeout = pool_timeout
        self._backend: MemoryBackend | RedisBackend
        if redis_url is None:
            if redis_cluster:
                raise StreamkitError("Governor: redis_cluster=True needs the redis_url of one of its nodes")
            self._backend = MemoryBackend(self.settings)
        else:
            from ._governor_redis import RedisBackend

            self._backend = RedisBackend(
                self.settings,
                redis_url,
                key,
                MemoryBackend(self.settings),
                timeout=redis_timeout,
                retry=redis_retry,
                cluster=redis_cluster,
            )
        self._lines: dict[str, deque[_Waiter]] = {}  # a lane's callers wait behind its own, never another's
        self._line_lock = threading.Lock()
        self._waited = 0.0
        self._last_lane: str | None = None

    def __repr__(self) -> str:
        return f"Governor(backend={self._backend.name!r})"

    def snapshot(self, model: str | None = None, *, endpoint: str | None = None) -> GovernorSnapshot:
        """The state for ``model`` (default: the model of the last request admitted), or ``endpoint``'s lane.

        ``endpoint`` is ``"count_tokens"``, ``"batches"`` or ``"files"``: their lanes are kept
        apart from every model's, even a model of the same name.  With the Redis backend this
        blocks for one round trip (up to ``redis_timeout``): in async code, ``await asnapshot()``.
        """
        if endpoint is not None:
            if model is not None or endpoint not in ENDPOINTS:
                raise StreamkitError(
                    f"Governor.snapshot: endpoint= is one of {', '.join(ENDPOINTS)} (and no model with it), "
                    f"got endpoint={endpoint!r}, model={model!r}"
                )
            lane: str | None = ENDPOINTS[endpoint]
        else:
            lane = model if model is not None else self._last_lane
        backend = self._backend
        fields = backend.snapshot_fields(lane if lane is not None else "")
        fields["model"] = endpoint if endpoint is not None else lane
        return GovernorSnapshot(
            backend=backend.name,
            redis_connected=backend.connected,
            queued=len(self._lines.get(lane or "", ())),
            waited=self._waited,
            **fields,  # type: ignore[arg-type]
        )

    async def asnapshot(self, model: str | None = None, *, endpoint: str | None = None) -> GovernorSnapshot:
        """``snapshot`` without blocking the event loop: the Redis round trip runs in a worker thread."""
        if self._backend.blocking:
            return await anyio.to_thread.run_sync(lambda: self.snapshot(model, endpoint=endpoint))
        return self.snapshot(model, endpoint=endpoint)

    # -- the line: first come, first served -----------------------------------------------

    def _join(self, lane: str, new_event: Callable[[], _E]) -> tuple[_Waiter, _E | None]:
        """Join ``lane``'s line: the waiter, and the event that wakes it at its turn (None: its turn is now)."""
        with self._line_lock:
            line = self._lines.get(lane)
            if line is None:
                line = self._lines[lane] = deque()
            waiter = _Waiter(line)
            line.append(waiter)
            if line[0] is waiter:
                return waiter, None
            waiter.wake = event = new_event()  # under the lock: a leaving head sees it
            return waiter, event

    def _at_head(self, waiter: _Waiter) -> bool:
        with self._line_lock:
            return waiter.line[0] is waiter

    def _leave(self, waiter: _Waiter) -> None:
        with self._line_lock:
            line = waiter.line
            was_head = line[0] is waiter
            line.remove(waiter)
            following = line[0] if was_head and line else None
        if following is not None and following.wake is not None:  # it joined behind: it has one
            following.wake.set()

    def _decide(self, admission: Admission, started: float, deadline: float) -> float | None:
        """After an answer of the backend: None when admitted, else how long to sleep before asking again."""
        now = time.monotonic()
        if admission.verdict is Verdict.ADMITTED:
            return None
        if admission.verdict is Verdict.TOO_LONG:
            raise GovernorTimeoutError(
                f"the rate governor would hold this request {admission.wait:.1f} s more, past its pool "
                f"timeout of {self.pool_timeout:g} s (it waited {now - started:.1f} s): it was not sent",
                waited=now - started,
                wait=admission.wait,
            )
        return min(max(0.0, admission.wait - self.settings.horizon / 2), max(0.0, deadline - now))

    def _timeout(self, started: float) -> GovernorTimeoutError:
        waited = time.monotonic() - started
        return GovernorTimeoutError(
            f"the rate governor held this request {waited:.1f} s, its pool timeout ({self.pool_timeout:g} s), "
            "while it waited its turn behind other requests: it was not sent",
            waited=waited,
            wait=None,
        )

    # -- async shell ------------------------------------------------------------------------

    def _ask(self, lane: str, input_tokens: float, output_tokens: float, retry: bool, deadline: float) -> Admission:
        """One admission asked of the backend, with what is left of the caller's time."""
        max_wait = max(0.0, deadline - time.monotonic())
        return self._backend.admit(lane, input_tokens, output_tokens, retry=retry, max_wait=max_wait)

    async def admit(self, lane: str, input_tokens: float, output_tokens: float, *, retry: bool) -> tuple[str, float]:
        """Wait for this attempt's turn; returns its lease and the seconds it was held."""
        started = time.monotonic()
        deadline = started + self.pool_timeout
        waiter, event = self._join(lane, anyio.Event)
        held = event is not None
        blocking = self._backend.blocking
        try:
            if event is not None:
                with anyio.move_on_after(deadline - started):
                    await event.wait()
                if not self._at_head(waiter):
                    raise self._timeout(started)
            while True:
                if blocking:
                    admission = await anyio.to_thread.run_sync(
                        self._ask, lane, input_tokens, output_tokens, retry, deadline
                    )
                else:  # in memory: an answer at once, no checkpoint
                    admission = self._ask(lane, input_tokens, output_tokens, retry, deadline)
                pause = self._decide(admission, started, deadline)
                if pause is None:
                    break
                held = True
                await anyio.sleep(pause)
            assert admission.lease is not None
            try:
                if admission.wait > 0:
                    await anyio.sleep(admission.wait)  # at the head: one admission ahead per process
            except BaseException:
                await self.settle(lane, admission.lease, Outcome("failed"))  # never sent
                raise
        finally:
            self._leave(waiter)
        return admission.lease, self._held(lane, started, held or admission.wait > 0)

    async def settle(self, lane: str, lease: str | None, outcome: Outcome) -> bool:
        """Settle an attempt; a cancel meanwhile never leaves its lease unsettled.

        The in-memory backend answers without suspending, so no cancel can land in between
        and there is nothing to shield; a Redis round trip runs in a worker thread, shielded.
        """
        outcome = lane_outcome(lane, outcome)
        backend = self._backend
        if not backend.blocking:
            return backend.settle(lane, lease, outcome)
        with anyio.CancelScope(shield=True):
            allowed = await anyio.to_thread.run_sync(backend.settle, lane, lease, outcome)
        return allowed

    # -- sync shell ---------------------------------------------------------------------

    def admit_sync(self, lane: str, input_tokens: float, output_tokens: float, *, retry: bool) -> tuple[str, float]:
        """``admit`` for the sync client: the same line, blocking waits."""
        started = time.monotonic()
        deadline = started + self.pool_timeout
        waiter, event = self._join(lane, threading.Event)
        held = event is not None
        try:
            # Event.wait takes None, not inf, for "no limit".
            limit = None if deadline == math.inf else deadline - started
            if event is not None and not (event.wait(limit) and self._at_head(waiter)):
                raise self._timeout(started)
            while True:
                admission = self._ask(lane, input_tokens, output_tokens, retry, deadline)
                pause = self._decide(admission, started, deadline)
                if pause is None:
                    break
                held = True
                time.sleep(pause)
            assert admission.lease is not None
            try:
                if admission.wait > 0:
                    time.sleep(admission.wait)  # at the head: one admission ahead per process
            except BaseException:
                self.settle_sync(lane, admission.lease, Outcome("failed"))  # never sent
                raise
        finally:
            self._leave(waiter)
        return admission.lease, self._held(lane, started, held or admission.wait > 0)

    def settle_sync(self, lane: str, lease: str | None, outcome: Outcome) -> bool:
        return self._backend.settle(lane, lease, lane_outcome(lane, outcome))

    def _held(self, lane: str, started: float, held: bool) -> float:
        """An admission was taken: the seconds the caller was held (0.0 when it went at once)."""
        if not requests_only(lane):
            self._last_lane = lane
        if not held:
            return 0.0
        waited = time.monotonic() - started
        self._waited += waited
        return waited


# -- one call's gate ----------------------------------------------------------------------

REFUSED_NOTE = (
    "streamkit's rate governor did not retry this {status}: its retry budget is empty "
    "(retries after 429/529 may add only a fraction of the requests, see Governor(retry_ratio=...))"
)


class GateBase:
    """What both gates share: the call's lane and reservation, its current lease, what a retry record shows.

    ``lane`` is the model of a Messages call, or an endpoint's lane (``ENDPOINT_LANES``): such a
    call reserves no tokens and its attempt is settled as soon as it is answered (its limit
    counts requests, and the answer's status and headers are all it teaches), so a body read
    later (batch results, a file) holds nothing and a ``Range`` resume is a new attempt.
    """

    def __init__(self, governor: Governor | None, lane: str, max_tokens: int = 0) -> None:
        self.governor = governor
        self.lane = lane
        self.max_tokens = max_tokens
        self.input_estimate = 0.0
        self.first_wait = 0.0
        """The seconds the governor held the first attempt of the last send (a resume's continuation)."""
        self._at_answer = requests_only(lane)
        self._attempts = 0
        self._records_seen = 0
        self._lease: str | None = None
        self._headers: RateLimits | None = None
        self._headers_at = 0.0
        self._refused: StreamkitError | None = None

    def sized(self, content: bytes) -> None:
        """The next attempt's body: its input tokens are estimated from its size."""
        self.input_estimate = len(content) / BYTES_PER_TOKEN

    def refused(self, error: StreamkitError) -> bool:
        """Whether the governor refused to retry ``error`` (its budget was empty)."""
        return self._refused is error

    def _note_wait(self, records: list[RetryInfo], held: float, done: int) -> None:
        if done == 0:
            self.first_wait = held
        if len(records) > self._records_seen:
            self._records_seen = len(records)
            if self._attempts > 1:
                records[-1].governor_wait = held

    def _failure(self, error: StreamkitError, wants_retry: bool) -> Outcome:
        return outcome_of(error, retry=wants_retry and retryable_overload(outcome_of(error)))

    def _ending(self, error: StreamkitError | None, message: Message | None, *, finished: bool, retry: bool) -> Outcome:
        """The outcome of the current attempt, ending: its usage, and the headers its response had."""
        outcome = self._failure(error, retry) if error is not None else Outcome("ok" if finished else "cancelled")
        changes: dict[str, Any] = {}  # one replace for both: it runs once per attempt
        if message is not None:
            usage = message.usage
            changes["input_tokens"] = usage.input_tokens + (usage.cache_creation_input_tokens or 0)
            changes["output_tokens"] = usage.output_tokens
        if outcome.limits is None and self._headers is not None:
            changes["limits"], changes["header_age"] = self._headers, time.monotonic() - self._headers_at
        return replace(outcome, **changes) if changes else outcome

    def _refusing(self, error: StreamkitError, allowed: bool) -> None:
        if not allowed:
            self._refused = error
            status = error.status_code if isinstance(error, APIStatusError) else getattr(error, "error_type", None)
            error.add_note(REFUSED_NOTE.format(status=status))

    def _opened(self, headers: RateLimits | None) -> None:
        self._headers, self._headers_at = headers, time.monotonic()


def _limits_of(result: object) -> RateLimits | None:
    headers = getattr(result, "headers", None)
    return RateLimits.from_headers(headers) if headers is not None else None


class Gate(GateBase):
    """One async call's governance: ``run`` each attempt, ``ended`` when a stream's attempt ends."""

    async def run(
        self, send: Callable[[], Awaitable[_T]], policy: RetryPolicy, done: int, records: list[RetryInfo]
    ) -> _T:
        """Admit, send, and settle at once if the attempt failed (a stream settles at its end).

        ``policy`` and ``done`` (retries done so far) say whether a failure is to be retried:
        a retry after a 429/529 draws from the governor's retry budget.
        """
        governor = self.governor
        if governor is None:
            return await send()
        self._attempts += 1
        self._lease, held = await governor.admit(
            self.lane, self.input_estimate, self.max_tokens, retry=self._attempts > 1
        )
        self._note_wait(records, held, done)
        try:
            result = await send()
        except StreamkitError as error:
            lease, self._lease = self._lease, None
            outcome = self._failure(error, policy.should_retry(error, done))
            self._refusing(error, await governor.settle(self.lane, lease, outcome))
            raise
        except BaseException:
            await self.ended(None, None, finished=False)
            raise
        self._opened(_limits_of(result))
        if self._at_answer:
            await self.ended(None, None, finished=True)
        return result

    async def ended(
        self, error: StreamkitError | None, message: Message | None, *, finished: bool, retry: bool = False
    ) -> bool:
        """The current attempt ended; returns whether the retry it asks for may go ahead (the budget)."""
        governor, lease = self.governor, self._lease
        if governor is None or lease is None:
            return True
        self._lease = None
        allowed = await governor.settle(self.lane, lease, self._ending(error, message, finished=finished, retry=retry))
        if error is not None:
            self._refusing(error, allowed)
        return allowed


class SyncGate(GateBase):
    """``Gate`` for the sync client."""

    def run(self, send: Callable[[], _T], policy: RetryPolicy, done: int, records: list[RetryInfo]) -> _T:
        governor = self.governor
        if governor is None:
            return send()
        self._attempts += 1
        self._lease, held = governor.admit_sync(
            self.lane, self.input_estimate, self.max_tokens, retry=self._attempts > 1
        )
        self._note_wait(records, held, done)
        try:
            result = send()
        except StreamkitError as error:
            lease, self._lease = self._lease, None
            outcome = self._failure(error, policy.should_retry(error, done))
            self._refusing(error, governor.settle_sync(self.lane, lease, outcome))
            raise
        except BaseException:
            self.ended(None, None, finished=False)
            raise
        self._opened(_limits_of(result))
        if self._at_answer:
            self.ended(None, None, finished=True)
        return result

    def ended(
        self, error: StreamkitError | None, message: Message | None, *, finished: bool, retry: bool = False
    ) -> bool:
        governor, lease = self.governor, self._lease
        if governor is None or lease is None:
            return True
        self._lease = None
        allowed = governor.settle_sync(self.lane, lease, self._ending(error, message, finished=finished, retry=retry))
        if error is not None:
            self._refusing(error, allowed)
        return allowed


def governor_of(option: bool | Governor) -> Governor | None:
    """A client's ``governor=`` option: True, a fresh in-process governor; False, none."""
    if option is True:
        return Governor()
    if option is False:
        return None
    if isinstance(option, Governor):
        return option
    raise StreamkitError(f"governor= takes True, False or a streamkit.Governor, not {option!r}")
