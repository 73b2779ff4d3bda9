"""Rate limits for the mock server: token buckets, an acceleration limit and overload episodes.

``RateLimiter`` decides, before a reply is served, whether the request is refused (429 or
529), and puts the ``anthropic-ratelimit-*`` headers on every answer.  It is plain state fed
with requests and a clock, so tests drive its time; the server only asks it and obeys.

Buckets, per model: requests, input tokens and output tokens per minute, each refilling
continuously (a minute's worth over 60 s) up to its limit, full at the start.  A request is
admitted when every bucket holds what it takes (or the bucket is full, for a request larger
than the bucket): one request, its estimated input tokens, and ``max_tokens`` output tokens,
reserved at the start; when its reply ends the reservation is settled to the reply's output.

Estimates, so that tests can predict every header: input tokens are the characters of the
request's text (``system`` and the messages' string content and ``text`` fields) divided by
4, rounded up, at least 1; a reply's output is its ``output_tokens`` when set, else its
blocks' characters divided by 4 (rounded up); a reply that is an error, or ends in an error
event, settles to 0 output tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from ._answers import ApiError
from ._lorem import lorem
from ._replies import Fault, Reply, TextBlock, ThinkingBlock

__all__ = ["Acceleration", "Admission", "Generation", "Limits", "Overload", "RateLimiter"]

_PREFIX = "anthropic-ratelimit-"
_CHARS_PER_TOKEN = 4
MAX_OVERLOAD_BODIES = 100_000  # the bodies told apart during overloads: a bound on what a long episode keeps


def _require(valid: bool, name: str, rule: str, value: object) -> None:
    if not valid:
        raise ValueError(f"{name} must be {rule}, not {value!r}")


@dataclass(frozen=True)
class Limits:
    """A model's limits per minute; ``None`` leaves a dimension unlimited (and without headers)."""

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        # A 0 would otherwise pass as "no bucket": unlimited, the opposite of what it says.
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            _require(value is None or value > 0, name, "a positive whole number (or None: unlimited)", value)


@dataclass(frozen=True)
class Acceleration:
    """A sharp rise in a model's request rate draws 429s below its limits.

    The rule: a request is refused when the requests admitted in the last ``window``
    seconds, this one included, would exceed ``factor`` times what the trailing rate
    gives in a window, plus ``floor``; the trailing rate is the admitted requests of
    the ``trailing`` seconds before that window, per second.  From a standstill a client
    may thus send ``floor`` requests per window, and then grow by ``factor`` each window.
    """

    window: float = 5.0
    trailing: float = 60.0
    factor: float = 2.0
    floor: int = 10

    def __post_init__(self) -> None:
        _require(0 < self.window < math.inf, "window", "positive seconds", self.window)
        _require(0 < self.trailing < math.inf, "trailing", "positive seconds", self.trailing)
        _require(0 <= self.factor < math.inf, "factor", "a finite number >= 0", self.factor)
        # With no floor a model that has been idle could never be sent a first request.
        _require(self.floor >= 1, "floor", "a whole number >= 1", self.floor)

    def allowed(self, trailing_count: int) -> float:
        """The most requests one window may admit after ``trailing_count`` in the trailing period."""
        return self.factor * trailing_count * self.window / self.trailing + self.floor


@dataclass(frozen=True)
class Overload:
    """An overload episode: from ``start`` to ``end`` (seconds after the limiter's start) a
    ``fraction`` of the requests get a 529 ``overloaded_error``.

    ``in_stream`` False: a 529 status before any stream; True: a 200 whose stream carries an
    ``error`` event after ``after`` events (message_start counts).  The fraction is exact and
    deterministic: the n-th request in the episode is overloaded when ``floor(n * fraction)``
    grows, so 0.5 overloads every second one, starting with the second.
    """

    start: float
    end: float
    fraction: float = 1.0
    in_stream: bool = False
    after: int = 1

    def __post_init__(self) -> None:
        if not (0.0 <= self.fraction <= 1.0 and self.start <= self.end):  # NaN fails too
            raise ValueError(f"an overload episode needs start <= end and 0 <= fraction <= 1: {self}")
        _require(self.after >= 0, "after", "a whole number of events >= 0", self.after)


@dataclass(frozen=True)
class Generation:
    """Replies generated for load: they replace the server's built-in default reply.

    Each has ``output_tokens`` tokens (``None``: the request's ``max_tokens``), four
    characters each, streamed ``tokens_per_event`` per ``text_delta`` with a pause of
    ``tokens_per_event / tokens_per_second`` between events, so a generation takes about
    as long as the real service's would.  Queued replies, the server's own ``default``
    and the override header still win.
    """

    output_tokens: int | None = None
    tokens_per_second: float = 50.0
    tokens_per_event: int = 5

    def __post_init__(self) -> None:
        tokens = self.output_tokens
        _require(tokens is None or tokens >= 1, "output_tokens", "a whole number >= 1 (or None: max_tokens)", tokens)
        speed = self.tokens_per_second
        _require(0 < speed < math.inf, "tokens_per_second", "a positive number", speed)
        _require(self.tokens_per_event >= 1, "tokens_per_event", "a whole number >= 1", self.tokens_per_event)

    def reply(self, max_tokens: int) -> Reply:
        """The reply for a request with this ``max_tokens``."""
        tokens = self.output_tokens if self.output_tokens is not None else max(1, max_tokens)
        stop_reason = "max_tokens" if tokens >= max_tokens else "end_turn"
        return _generated(tokens, self.tokens_per_event, self.tokens_per_event / self.tokens_per_second, stop_reason)


@lru_cache(maxsize=64)
def _generated(tokens: int, per_event: int, delay: float, stop_reason: str) -> Reply:
    text = lorem(tokens * _CHARS_PER_TOKEN)
    chunk = per_event * _CHARS_PER_TOKEN
    return Reply.text(text, chunk_size=chunk, output_tokens=tokens, delay=delay, stop_reason=stop_reason)


class _Bucket:
    """A token bucket: ``limit`` per minute, refilled continuously; it may go below 0 (a large request's debt)."""

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.level = float(limit)
        self._rate = limit / 60.0
        self._at = now

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self._at) * self._rate)
        self._at = now

    def holds(self, amount: int) -> bool:
        return self.level >= min(amount, self.limit)

    def wait(self, amount: int) -> float:
        """Seconds until the bucket holds ``amount`` (as ``holds`` counts it)."""
        return max(0.0, (min(amount, self.limit) - self.level) / self._rate)

    def until_full(self) -> float:
        return (self.limit - self.level) / self._rate

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level))


_DIMENSIONS = ("requests", "input-tokens", "output-tokens")


class _Model:
    """One model's buckets and its recent admissions (for the acceleration limit)."""

    def __init__(self, limits: Limits, now: float) -> None:
        per_minute = (limits.requests_per_minute, limits.input_tokens_per_minute, limits.output_tokens_per_minute)
        self.buckets = {name: _Bucket(limit, now) for name, limit in zip(_DIMENSIONS, per_minute, strict=True) if limit}
        self.admitted: deque[float] = deque()

    def refill(self, now: float) -> None:
        for bucket in self.buckets.values():
            bucket.refill(now)


Outcome = Literal["admitted", "rate_limited", "acceleration_limited", "overloaded"]


@dataclass
class Admission:
    """The limiter's answer for one request: the reply to serve and the output to settle when it ends."""

    reply: Reply
    status: Outcome
    _settle: Callable[[int], None] | None = field(default=None, repr=False)

    @property
    def output_tokens(self) -> int:
        """The output the reply's end settles the reservation to (see the module docstring)."""
        reply = self.reply
        if reply.status != 200 or (reply.fault is not None and reply.fault.kind == "error"):
            return 0
        if reply.output_tokens is not None:
            return reply.output_tokens
        chars = sum(len(b.text) if isinstance(b, TextBlock) else len(b.thinking) for b in _text_blocks(reply))
        return math.ceil(chars / _CHARS_PER_TOKEN)


def _text_blocks(reply: Reply) -> Iterator[TextBlock | ThinkingBlock]:
    return (b for b in reply.blocks if isinstance(b, TextBlock | ThinkingBlock))


class RateLimiter:
    """The mock's rate limits: give it to ``MockServer(limits=...)``.

    ``limits`` apply to every model not named in ``models``, each model with buckets of
    its own.  ``endpoints`` limits the requests per minute of the endpoints the API limits
    apart from the models (``"count_tokens"``, ``"batches"``: every batch endpoint,
    ``"files"``), each with a bucket of its own; an endpoint not named there is unlimited.
    ``clock`` (default ``time.monotonic``) gives seconds; ``started_at`` is the
    wall time of the clock's reading at construction (default now), from which the
    ``reset`` headers are written.  ``counts`` tallies the outcomes (``admitted``,
    ``rate_limited``, ``acceleration_limited``, ``overloaded``, ``during_overload``: the
    requests that came during an episode, and ``overload_requests``: how many different
    requests those were, told apart by their bodies, since a retry repeats its body; counted
    up to ``MAX_OVERLOAD_BODIES``) and ``output_tokens`` the
    settled output, for load tests to report.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        models: Mapping[str, Limits] | None = None,
        endpoints: Mapping[str, int] | None = None,
        acceleration: Acceleration | None = None,
        overloads: Sequence[Overload] = (),
        generation: Generation | None = None,
        clock: Callable[[], float] = time.monotonic,
        started_at: datetime | None = None,
    ) -> None:
        self.limits = limits
        self.models = dict(models or {})
        self.endpoints = {name: Limits(requests_per_minute=limit) for name, limit in (endpoints or {}).items()}
        self.acceleration = acceleration
        self.overloads = tuple(overloads)
        self.generation = generation
        self.counts: Counter[str] = Counter()
        self.output_tokens = 0
        self._clock = clock
        self._t0 = clock()
        self._started_at = started_at if started_at is not None else datetime.now(UTC)
        self._state: dict[str, _Model] = {}
        self._episode_seen = [0] * len(self.overloads)
        self._overload_bodies: set[bytes] = set()

    def elapsed(self) -> float:
        """Seconds since the limiter started, on its clock (overload episodes are placed on this scale)."""
        return self._clock() - self._t0

    def _model(self, name: str, now: float) -> _Model:
        state = self._state.get(name)
        if state is None:
            state = self._state[name] = _Model(self.models.get(name, self.limits), now)
        state.refill(now)
        return state

    def endpoint(self, name: str) -> list[tuple[str, str]]:
        """Decide on one request to endpoint ``name``: its ``anthropic-ratelimit-requests-*`` headers,
        or ``ApiError`` 429 (with them and ``retry-after``) when its bucket is empty."""
        if name not in self.endpoints:
            return []
        now = self._clock()
        state = self._state.get(f"/{name}")  # a model's name never starts with a slash
        if state is None:
            state = self._state[f"/{name}"] = _Model(self.endpoints[name], now)
        state.refill(now)
        bucket = state.buckets["requests"]
        if not bucket.holds(1):
            self.counts["rate_limited"] += 1
            retry_after = max(1, math.ceil(bucket.wait(1)))
            headers = [*self._headers(state, now).items(), ("retry-after", str(retry_after))]
            raise ApiError(429, "rate_limit_error", f"mock server: {name} requests per minute exceeded", headers)
        bucket.level -= 1
        self.counts["admitted"] += 1
        return list(self._headers(state, now).items())

    def headers(self, model: str) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers for ``model`` now; ``tokens-*`` is the token bucket with least left."""
        now = self._clock()
        return self._headers(self._model(model, now), now)

    def _headers(self, state: _Model, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in state.buckets.items():
            _put(headers, name, bucket, self._wall(now + bucket.until_full()))
        tokens = [state.buckets[name] for name in ("input-tokens", "output-tokens") if name in state.buckets]
        if tokens:
            tightest = min(tokens, key=lambda bucket: bucket.remaining)
            _put(headers, "tokens", tightest, self._wall(now + tightest.until_full()))
        return headers

    def _wall(self, when: float) -> str:
        """RFC 3339 (UTC, ``Z``) of a clock reading, rounded up to the second."""
        instant = self._started_at + timedelta(seconds=when - self._t0)
        whole = instant.replace(microsecond=0)
        if whole != instant:
            whole += timedelta(seconds=1)
        return whole.strftime("%Y-%m-%dT%H:%M:%SZ")

    @contextmanager
    def admit(self, payload: Mapping[str, Any], reply: Reply, *, replaceable: bool = False) -> Iterator[Admission]:
        """Decide on one request: the admission's ``reply`` is the one to serve (``reply`` with the
        headers, a 429, or an overload); leaving the block settles its output reservation.

        ``replaceable``: ``reply`` is the server's built-in default, which ``generation`` replaces.
        """
        now = self._clock()
        model = payload.get("model")
        state = self._model(model if isinstance(model, str) else "", now)
        max_tokens = payload.get("max_tokens")
        output = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
        if replaceable and self.generation is not None:
            reply = self.generation.reply(output)
        overload = self._overload(now, payload)
        if overload is not None and not overload.in_stream:
            self.counts["overloaded"] += 1
            yield Admission(Reply.error(529, "overloaded_error", headers=self._headers(state, now)), "overloaded")
            return
        costs = {"requests": 1, "input-tokens": input_tokens(payload), "output-tokens": output}
        refusal = self._refusal(state, costs, now)
        if refusal is not None:
            status, message, retry_after = refusal
            self.counts[status] += 1
            headers = {**self._headers(state, now), "retry-after": str(retry_after)}
            yield Admission(Reply.error(429, "rate_limit_error", message, headers=headers), status)
            return
        for name, bucket in state.buckets.items():
            bucket.level -= costs[name]
        if self.acceleration is not None:
            state.admitted.append(now)
        self.counts["admitted"] += 1
        headers = {**reply.headers, **self._headers(state, now)}
        update: dict[str, Any] = {"headers": headers}
        if overload is not None:
            self.counts["overloaded"] += 1
            update["fault"] = Fault("error", after=overload.after)
        admission = Admission(reply.model_copy(update=update), "admitted")
        try:
            yield admission
        finally:
            actual = admission.output_tokens
            self.output_tokens += actual
            reserved = state.buckets.get("output-tokens")
            if reserved is not None:
                reserved.refill(self._clock())
                reserved.level = min(float(reserved.limit), reserved.level + output - actual)

    def _overload(self, now: float, payload: Mapping[str, Any]) -> Overload | None:
        elapsed = now - self._t0
        if any(episode.start <= elapsed < episode.end for episode in self.overloads):
            bodies = self._overload_bodies
            if len(bodies) < MAX_OVERLOAD_BODIES:
                bodies.add(hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).digest())
                self.counts["overload_requests"] = len(bodies)
        for index, episode in enumerate(self.overloads):
            if episode.start <= elapsed < episode.end:
                self.counts["during_overload"] += 1
                before = math.floor(self._episode_seen[index] * episode.fraction)
                self._episode_seen[index] += 1
                if math.floor(self._episode_seen[index] * episode.fraction) > before:
                    return episode
        return None

    def _refusal(self, state: _Model, costs: Mapping[str, int], now: float) -> tuple[Outcome, str, int] | None:
        """Why the request is refused (status, message, retry-after seconds), or None."""
        for name, bucket in state.buckets.items():
            if not bucket.holds(costs[name]):
                message = f"mock server: {name.replace('-', ' ')} per minute ({bucket.limit:,}) exceeded"
                return "rate_limited", message, max(1, math.ceil(bucket.wait(costs[name])))
        rule = self.acceleration
        if rule is None:
            return None
        admitted = state.admitted
        while admitted and admitted[0] <= now - rule.window - rule.trailing:
            admitted.popleft()
        recent = sum(1 for at in admitted if at > now - rule.window)
        allowed = rule.allowed(len(admitted) - recent)
        if recent + 1 <= allowed:
            return None
        # Once the oldest recent admission leaves the window there is room again.
        oldest = next(at for at in admitted if at > now - rule.window) if recent else now
        message = (
            f"mock server: the request rate rose too sharply ({recent} requests in the last {rule.window:g} s,"
            f" at most {math.floor(allowed)} after the trailing rate); ramp up gradually"
        )
        return "acceleration_limited", message, max(1, math.ceil(oldest + rule.window - now))


def input_tokens(payload: Mapping[str, Any]) -> int:
    """The input tokens the mock charges a request: its text's characters / 4, rounded up, at least 1."""
    chars = sum(len(text) for text in _texts(payload.get("system")))
    messages = payload.get("messages")
    if isinstance(messages, list):
        contents = (message.get("content") for message in messages if isinstance(message, dict))
        chars += sum(len(text) for content in contents for text in _texts(content))
    return max(1, math.ceil(chars / _CHARS_PER_TOKEN))


def _texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                yield block["text"]


def _put(headers: dict[str, str], name: str, bucket: _Bucket, reset: str) -> None:
    headers[f"{_PREFIX}{name}-limit"] = str(bucket.limit)
    headers[f"{_PREFIX}{name}-remaining"] = str(bucket.remaining)
    headers[f"{_PREFIX}{name}-reset"] = reset
