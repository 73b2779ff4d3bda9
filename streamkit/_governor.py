"""The rate governor's policy, sans-I/O: what to admit, when, and what an outcome teaches.

One ``Lane`` per model (the API's limits are per model class), and one per endpoint the API
limits apart (``ENDPOINT_LANES``: requests only), holds plain numbers, under the same names
the Redis backend keeps in its hash (``_governor_redis`` runs this policy as Lua):

- token buckets for requests, input tokens and output tokens, refilled continuously at the
  limit per minute, as the API's are.  Output tokens are reserved from ``max_tokens`` at
  admission and settled to the actual count, input tokens estimated from the body's size and
  settled to the usage; a settlement gives back the rest;
- a pacer (while the server reports limits or has refused with a 429 or 529: one whose answers
  carry no ``anthropic-ratelimit-*`` headers, a test double say, has nothing to pace against):
  a bucket of ``initial_window`` requests refilled at ``rate`` requests a second, so
  a burst that small goes at once and more are spread evenly.  The rate starts at
  ``initial_window`` per ``ramp_seconds`` (and again after ``idle_after`` seconds idle) and,
  while the pacer is what holds requests back, grows with the time it holds them back: slow
  start doubles it every ``ramp_doubling`` seconds until the first cut (gradually, as
  acceleration limits ask); after a cut it grows by ``recovery`` requests a second each second.  A 429 or 529
  cuts it by ``backoff``, once per round (only an attempt admitted after the last cut cuts
  again), never below ``min_rate``;
- admission asks for the latest of the times every bucket and the pacer allow (a 429's
  ``retry-after`` too).  Within ``horizon`` seconds it is taken at once (scheduled: the caller
  sleeps, then sends); further off, nothing is taken and the caller asks again later, so a cut
  or a settlement's refund applies to every request not yet sent;
- what the headers said: learned limits, and a bucket never above the remaining the API
  reported (aged by the refill since);
- a retry budget (as in gRPC retry throttling and Finagle): every first attempt deposits
  ``retry_ratio`` of a retry, time deposits ``retry_ratio`` per second, the budget holds at
  most ``retry_burst``; a retry after a 429 or 529 withdraws one, and when none is left the
  error is the caller's;
- leases: every admission is a lease that expires ``lease_seconds`` after its send time, so a
  worker that dies without settling gives back its reservation.

Time is whatever clock the caller passes (monotonic in process, the Redis server's ``TIME``).
"""

from __future__ import annotations

import enum
import heapq
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from ._errors import APIError, OverloadedError, RateLimitError, StreamkitError
from ._ratelimits import NO_LIMITS as NO_LIMITS  # re-exported: the Redis backend reads it here
from ._ratelimits import RateLimits
from ._retry import capped_retry_after

DIMENSIONS = ("req", "in", "out")
"""The three buckets: requests, input tokens, output tokens (per minute)."""
SECONDS_PER_MINUTE = 60.0
DEFAULT_RETRY_AFTER = 1.0  # a 429 without retry-after still blocks the lane this long


class GovernorTimeoutError(StreamkitError):
    """A request waited longer than the governor's ``pool_timeout`` for its turn: it was not sent.

    ``waited`` is how long it waited; ``wait`` how long it would still have had to wait, when
    known (the limits said so at once), else None (it waited its turn behind other callers).
    """

    def __init__(self, message: str, *, waited: float, wait: float | None) -> None:
        super().__init__(message)
        self.waited = waited
        self.wait = wait


# A lane is named by its model; an endpoint's by a name no model has (a leading slash), so
# that a model named "batches" is not taken for the Batches API.
ENDPOINTS = {"count_tokens": "/count_tokens", "batches": "/batches", "files": "/files"}
"""The public names of the endpoints' lanes (``Governor.snapshot(endpoint=...)``) and their lanes."""
COUNT_TOKENS_LANE = ENDPOINTS["count_tokens"]
BATCHES_LANE = ENDPOINTS["batches"]
FILES_LANE = ENDPOINTS["files"]
ENDPOINT_LANES = frozenset(ENDPOINTS.values())
"""The lanes of the endpoints kept apart from the models' Messages calls: token counting and the
Message Batches API have requests-per-minute limits of their own, and the Files API's traffic
is no model's.  Requests only, no token buckets, and not under the explicit limits (the models')."""


def requests_only(lane: str) -> bool:
    """Whether ``lane`` is an endpoint's: it counts requests, never tokens."""
    return lane in ENDPOINT_LANES


@dataclass(frozen=True, slots=True)
class Settings:
    """How a governor paces; every backend runs the same numbers (see ``streamkit.Governor``).

    The one source of the defaults and of the checks: ``Governor``'s parameters default to
    ``DEFAULTS``' values, and a bad value is refused here, whichever constructor made it.
    """

    requests_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    initial_window: int = 5
    ramp_seconds: float = 5.0
    ramp_doubling: float = 25.0
    recovery: float = 0.35
    backoff: float = 0.5
    min_rate: float = 0.1
    idle_after: float = 30.0
    horizon: float = 2.0
    lease_seconds: float = 600.0
    retry_ratio: float = 0.1
    retry_burst: float = 10.0

    def __post_init__(self) -> None:
        # Every check is written so that NaN fails it: NaN compares false with everything.
        if not 1 <= self.initial_window < math.inf:
            raise StreamkitError(f"Governor: initial_window must be at least 1, got {self.initial_window}")
        if not 0 < self.backoff < 1:
            raise StreamkitError(f"Governor: backoff must be between 0 and 1, got {self.backoff}")
        for name in (
            "requests_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "ramp_seconds",
            "ramp_doubling",
            "min_rate",
            "lease_seconds",
        ):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise StreamkitError(f"Governor: {name} must be positive and finite, got {value}")
        for name in ("recovery", "idle_after", "horizon", "retry_ratio", "retry_burst"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise StreamkitError(f"Governor: {name} must be finite and not negative, got {value}")

    @property
    def initial_rate(self) -> float:
        return self.initial_window / self.ramp_seconds

    def explicit(self, dimension: str, lane: str = "") -> float | None:
        """The explicit limit of ``dimension`` (None: learned); an endpoint's lane has none."""
        if requests_only(lane):
            return None
        return {
            "req": self.requests_per_minute,
            "in": self.input_tokens_per_minute,
            "out": self.output_tokens_per_minute,
        }[dimension]


DEFAULTS = Settings()


class Verdict(enum.Enum):
    ADMITTED = "admitted"  # send after ``wait`` seconds; the lease is taken
    LATER = "later"  # its time is ``wait`` seconds off, past the horizon: nothing taken, ask again then
    TOO_LONG = "too long"  # it would have to wait ``wait`` seconds, past the caller's limit: nothing taken


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    wait: float = 0.0
    lease: str | None = None


Status = Literal["ok", "rate_limited", "overloaded", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, as a settlement reports it.

    ``output_tokens``/``input_tokens``: the usage, when known (None: a pre-stream failure,
    nothing was charged).  ``limits``: the rate-limit headers of its response, ``header_age``
    seconds ago.  ``retry``: the caller means to retry it (a 429 or 529 draws from the budget).
    """

    status: Status
    input_tokens: int | None = None
    output_tokens: int | None = None
    limits: RateLimits | None = None
    header_age: float = 0.0
    retry_after: float | None = None
    retry: bool = False


def lane_outcome(lane: str, outcome: Outcome) -> Outcome:
    """What an outcome may teach ``lane``: an endpoint's lane counts requests, so tokens are dropped."""
    if not requests_only(lane):
        return outcome
    limits = outcome.limits
    return replace(
        outcome,
        input_tokens=None,
        output_tokens=None,
        limits=None if limits is None else RateLimits(requests=limits.requests),
    )


def outcome_of(error: StreamkitError | None, *, retry: bool = False) -> Outcome:
    """The outcome of an attempt that ended with ``error`` (None: it worked), before its usage is known."""
    if error is None:
        return Outcome("ok", retry=retry)
    headers = error.headers if isinstance(error, APIError) else None
    limits = RateLimits.from_headers(headers) if headers is not None else None
    if isinstance(error, RateLimitError):
        status: Status = "rate_limited"
    elif isinstance(error, OverloadedError):
        status = "overloaded"
    else:
        status = "failed"
    retry_after = error.retry_after if isinstance(error, RateLimitError) else None
    return Outcome(status, limits=limits, retry_after=retry_after, retry=retry)


@dataclass(slots=True)
class Lease:
    lane: str
    expires: float
    admitted: float
    reserved_in: float
    reserved_out: float


@dataclass(slots=True)
class Lane:
    """One model's state: the fields the Redis backend keeps in its hash, by the same names."""

    rate: float
    pace: float  # the pacer's level, in requests
    ssthresh: float = math.inf  # slow start below it; set by the first cut
    grow_t: float | None = None  # when the rate last grew (or was cut)
    in_flight: int = 0
    last_active: float | None = None
    last_cut: float | None = None
    blocked: float = 0.0
    unlimited: bool = False  # the server answers without rate-limit headers: nothing to pace against
    t: float | None = None  # when the buckets were last refilled
    # The settings' limits for this lane (in Redis, the script's settings are the lane's).
    explicit: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS))
    lim: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS))
    lvl: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS))
    budget: float = 0.0
    budget_t: float | None = None
    last_429: float | None = None
    last_529: float | None = None
    admitted: int = 0
    refused: int = 0


def retryable_overload(outcome: Outcome) -> bool:
    return outcome.status in ("rate_limited", "overloaded")


class GovernorPolicy:
    """The in-process governor's state and decisions; every method takes ``now`` (seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lanes: dict[str, Lane] = {}
        self.leases: dict[str, Lease] = {}
        # Per lane, (expiry, lease id) in a heap: expiring leases costs their number, not all the
        # leases held (thousands of streams in flight).  Settled leases stay until popped or compacted.
        self._expiry: dict[str, list[tuple[float, str]]] = {}
        self._next_lease = 0

    def lane(self, name: str) -> Lane:
        lane = self.lanes.get(name)
        if lane is None:
            settings = self.settings
            lane = Lane(rate=settings.initial_rate, pace=float(settings.initial_window), budget=settings.retry_burst)
            lane.explicit = {dimension: settings.explicit(dimension, name) for dimension in DIMENSIONS}
            self.lanes[name] = lane
        return lane

    def limit(self, lane: Lane, dimension: str) -> float | None:
        return lane.explicit[dimension] or lane.lim[dimension]

    # -- the prelude of both calls: expire leases, refill the buckets and the budget --------

    def _prepare(self, lane_name: str, now: float) -> Lane:
        lane = self.lane(lane_name)
        expiry = self._expiry.get(lane_name)
        if expiry is None:
            expiry = self._expiry[lane_name] = []
        while expiry and expiry[0][0] <= now:
            lease_id = heapq.heappop(expiry)[1]
            lease = self.leases.get(lease_id)
            if lease is not None:  # else settled already
                del self.leases[lease_id]
                lane.in_flight -= 1
                self._refund(lane, "out", lease.reserved_out)
                self._refund(lane, "in", lease.reserved_in)
        if lane.t is not None:
            elapsed = max(0.0, now - lane.t)
            for dimension, level in lane.lvl.items():  # no level yet, no bucket: its limit is not asked
                if level is not None and (limit := self.limit(lane, dimension)) is not None:
                    lane.lvl[dimension] = min(limit, level + limit / SECONDS_PER_MINUTE * elapsed)
            lane.pace = min(float(self.settings.initial_window), lane.pace + lane.rate * elapsed)
        lane.t = now
        settings = self.settings
        if lane.budget_t is not None:
            lane.budget = min(settings.retry_burst, lane.budget + settings.retry_ratio * max(0.0, now - lane.budget_t))
        lane.budget_t = now
        return lane

    def _refund(self, lane: Lane, dimension: str, amount: float) -> None:
        level = lane.lvl[dimension]
        if level is not None and (limit := self.limit(lane, dimension)) is not None:
            lane.lvl[dimension] = min(limit, level + amount)

    # -- admission --------------------------------------------------------------------

    def admit(
        self, lane_name: str, input_tokens: float, output_tokens: float, now: float, *, retry: bool, max_wait: float
    ) -> Admission:
        """Admit one attempt (scheduled ``wait`` seconds from now), or say how long until it could be."""
        settings = self.settings
        lane = self._prepare(lane_name, now)
        if lane.in_flight == 0 and lane.last_active is not None and now - lane.last_active > settings.idle_after:
            lane.rate, lane.ssthresh = settings.initial_rate, math.inf  # slow start again after idle
            lane.grow_t = now
            lane.pace = max(lane.pace, float(settings.initial_window))
        costs = {"req": 1.0, "in": float(input_tokens), "out": float(output_tokens)}
        wait = max(0.0, lane.blocked - now)
        for dimension in DIMENSIONS:
            limit = self.limit(lane, dimension)
            if limit is None:
                continue
            if lane.lvl[dimension] is None:
                lane.lvl[dimension] = limit
            costs[dimension] = cost = min(costs[dimension], limit)
            level = lane.lvl[dimension]
            assert level is not None
            if level < cost:
                wait = max(wait, (cost - level) / (limit / SECONDS_PER_MINUTE))
        if not lane.unlimited:
            self._grow(lane, now, paced=lane.pace < 1.0 and (1.0 - lane.pace) / lane.rate >= wait)
            if lane.pace < 1.0:
                wait = max(wait, (1.0 - lane.pace) / lane.rate)
        if wait > max_wait:
            return Admission(Verdict.TOO_LONG, wait)
        if wait > settings.horizon:
            return Admission(Verdict.LATER, wait)
        taken = dict.fromkeys(DIMENSIONS, 0.0)  # from a bucket of a known limit: given back at settlement
        for dimension in DIMENSIONS:
            level = lane.lvl[dimension]
            if level is not None and self.limit(lane, dimension) is not None:
                lane.lvl[dimension] = level - costs[dimension]
                taken[dimension] = costs[dimension]
        lane.pace -= 1.0
        self._next_lease += 1
        lease_id = str(self._next_lease)
        expires = now + wait + settings.lease_seconds
        self.leases[lease_id] = Lease(lane_name, expires, now, taken["in"], taken["out"])
        expiry = self._expiry[lane_name]
        heapq.heappush(expiry, (expires, lease_id))
        if len(expiry) > 2 * lane.in_flight + 64:  # mostly settled leases: keep the heap linear in those held
            expiry[:] = [entry for entry in expiry if entry[1] in self.leases]
            heapq.heapify(expiry)
        lane.in_flight += 1
        lane.admitted += 1
        lane.last_active = now
        if not retry:
            lane.budget = min(settings.retry_burst, lane.budget + settings.retry_ratio)
        return Admission(Verdict.ADMITTED, wait, lease_id)

    def _grow(self, lane: Lane, now: float, *, paced: bool) -> None:
        """While the pacer holds requests back, the rate grows with the time since it last grew."""
        if paced and lane.grow_t is not None:
            elapsed = max(0.0, now - lane.grow_t)
            settings = self.settings
            if lane.rate < lane.ssthresh:
                lane.rate *= 2.0 ** (elapsed / settings.ramp_doubling)
            else:
                lane.rate += settings.recovery * elapsed
            limit = self.limit(lane, "req")
            if limit is not None:
                lane.rate = min(lane.rate, limit / SECONDS_PER_MINUTE)
        lane.grow_t = now

    # -- settlement -------------------------------------------------------------------

    def settle(self, lane_name: str, lease_id: str | None, outcome: Outcome, now: float) -> bool:
        """Settle an attempt; returns whether the retry it asks for (if any) may go ahead."""
        settings = self.settings
        lane = self._prepare(lane_name, now)
        lease = self.leases.pop(lease_id, None) if lease_id is not None else None
        if lease is not None:
            lane.in_flight -= 1
        self._learn(lane, outcome)
        self._settle_usage(lane, lease, outcome)
        lane.last_active = now
        if retryable_overload(outcome):
            if outcome.status == "rate_limited":
                lane.last_429 = now
                retry_after = capped_retry_after(outcome.retry_after)  # a year's retry-after must not stop the lane
                lane.blocked = max(lane.blocked, now + (DEFAULT_RETRY_AFTER if retry_after is None else retry_after))
            else:
                lane.last_529 = now
            if lease is None or lane.last_cut is None or lease.admitted >= lane.last_cut:
                lane.rate = max(settings.min_rate, lane.rate * settings.backoff)
                lane.ssthresh = lane.rate
                lane.last_cut = lane.grow_t = now
            if outcome.retry:
                if lane.budget >= 1.0:
                    lane.budget -= 1.0
                    return True
                lane.refused += 1
                return False
        return True

    def _learn(self, lane: Lane, outcome: Outcome) -> None:
        """What the headers say: the limits, and the buckets never above the remaining they report."""
        limits = outcome.limits
        # ``is`` first: every answer without the headers parses to the one NO_LIMITS.
        if retryable_overload(outcome) or (limits is not None and limits is not NO_LIMITS and limits != NO_LIMITS):
            lane.unlimited = False
        elif limits is not None and not any(lane.lim.values()):
            lane.unlimited = True
        if limits is None:
            return
        reports = (("req", limits.requests), ("in", limits.input_tokens), ("out", limits.output_tokens))
        for dimension, reported in reports:
            if reported is None:
                continue
            if reported.limit is not None and reported.limit > 0:
                lane.lim[dimension] = float(reported.limit)
            limit = self.limit(lane, dimension)
            if limit is None or reported.remaining is None:
                continue
            remaining = min(limit, reported.remaining + limit / SECONDS_PER_MINUTE * outcome.header_age)
            level = lane.lvl[dimension]
            lane.lvl[dimension] = remaining if level is None else min(level, remaining)

    def _settle_usage(self, lane: Lane, lease: Lease | None, outcome: Outcome) -> None:
        """Give back what was reserved past the usage (all of it when nothing was charged)."""
        for dimension, used in (("in", outcome.input_tokens), ("out", outcome.output_tokens)):
            reserved = 0.0 if lease is None else (lease.reserved_in if dimension == "in" else lease.reserved_out)
            nothing_charged = 0.0 if outcome.status != "cancelled" else reserved  # a cancel may have been charged
            charged = nothing_charged if used is None else float(used)
            self._refund(lane, dimension, reserved - charged)

    # -- what it shows ----------------------------------------------------------------

    def snapshot_fields(self, lane_name: str, now: float) -> dict[str, object]:
        """The lane's state now, as ``GovernorSnapshot`` fields (``_governed`` adds the shell's)."""
        lane = self._prepare(lane_name, now)
        return lane_fields(
            lane_name,
            limits={dimension: self.limit(lane, dimension) for dimension in DIMENSIONS},
            levels=dict(lane.lvl),
            rate=lane.rate,
            in_flight=lane.in_flight,
            budget=lane.budget,
            since_429=None if lane.last_429 is None else now - lane.last_429,
            since_529=None if lane.last_529 is None else now - lane.last_529,
            blocked_for=max(0.0, lane.blocked - now),
            admitted=lane.admitted,
            refused=lane.refused,
        )


def lane_fields(
    model: str,
    *,
    limits: dict[str, float | None],
    levels: dict[str, float | None],
    rate: float,
    in_flight: int,
    budget: float,
    since_429: float | None,
    since_529: float | None,
    blocked_for: float,
    admitted: int,
    refused: int,
) -> dict[str, object]:
    """One lane as ``GovernorSnapshot`` fields, from either backend's numbers."""

    def remaining(dimension: str) -> float | None:
        return levels[dimension] if limits[dimension] is not None else None

    return {
        "model": model,
        "requests_per_minute": limits["req"],
        "input_tokens_per_minute": limits["in"],
        "output_tokens_per_minute": limits["out"],
        "requests_remaining": remaining("req"),
        "input_tokens_remaining": remaining("in"),
        "output_tokens_remaining": remaining("out"),
        "rate": rate,
        "in_flight": in_flight,
        "retry_budget": budget,
        "seconds_since_429": since_429,
        "seconds_since_529": since_529,
        "blocked_for": blocked_for,
        "admitted": admitted,
        "retries_refused": refused,
    }


@dataclass(frozen=True, slots=True)
class GovernorSnapshot:
    """What a governor knows and does for one model (or endpoint lane), at one moment (``Governor.snapshot()``).

    Limits are per minute (explicit, else learned from the ``anthropic-ratelimit-*`` headers;
    None: not known yet, not enforced).  ``*_remaining`` is the governor's own bucket: below
    zero for a moment when an admission is scheduled ahead.  ``rate`` is the pace in requests a
    second (it ramps by slow start and is cut on 429/529), ``in_flight`` how many requests are
    admitted and not settled (in Redis, across every process), ``queued`` how many callers of
    this process wait for their turn.  ``seconds_since_429``/``seconds_since_529``: since the last one (None:
    none yet).  ``blocked_for``: seconds until a 429's ``retry-after`` is over.
    ``retry_budget``: retries of a 429/529 left; ``retries_refused``: such retries not made for
    want of budget.  ``admitted``: attempts admitted.  ``waited``: seconds this process's callers
    spent waiting in all.  ``backend``: ``"memory"`` or ``"redis"`` (``"redis"`` also while
    falling back); ``redis_connected``: whether Redis answers now (None in memory).  ``model``:
    the model, or the endpoint of ``snapshot(endpoint=...)``.
    """

    model: str | None
    backend: Literal["memory", "redis"]
    redis_connected: bool | None
    requests_per_minute: float | None
    input_tokens_per_minute: float | None
    output_tokens_per_minute: float | None
    requests_remaining: float | None
    input_tokens_remaining: float | None
    output_tokens_remaining: float | None
    rate: float
    in_flight: int
    queued: int
    retry_budget: float
    retries_refused: int
    seconds_since_429: float | None
    seconds_since_529: float | None
    blocked_for: float
    admitted: int
    waited: float


class MemoryBackend:
    """The policy in this process, behind a lock (callers may be threads), on the monotonic clock."""

    name: Literal["memory", "redis"] = "memory"
    blocking = False  # its calls never wait on I/O

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = GovernorPolicy(settings)
        self._lock = threading.Lock()
        self._clock = clock

    @property
    def connected(self) -> bool | None:
        return None

    def admit(self, lane: str, input_tokens: float, output_tokens: float, *, retry: bool, max_wait: float) -> Admission:
        with self._lock:
            return self.policy.admit(lane, input_tokens, output_tokens, self._clock(), retry=retry, max_wait=max_wait)

    def settle(self, lane: str, lease: str | None, outcome: Outcome) -> bool:
        with self._lock:
            return self.policy.settle(lane, lease, outcome, self._clock())

    def snapshot_fields(self, lane: str) -> dict[str, object]:
        with self._lock:
            return self.policy.snapshot_fields(lane, self._clock())
