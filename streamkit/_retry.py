"""Retry policy: whether a failed request is worth another, and how long to wait first.

Plain data and a pure decision, no I/O: the request layer runs the loop before a stream,
the reply machine asks the same policy about a plain retry inside one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ._errors import APIConnectionError, APIError, APIStatusError, IncompleteStreamError, StreamError, StreamkitError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER = 60.0
"""The longest wait a server's ``retry-after`` may impose (a hostile or broken one could say a year)."""


def capped_retry_after(value: float | None) -> float | None:
    """A server's ``retry-after`` within [0, ``MAX_RETRY_AFTER``]; None when absent or not finite."""
    if value is None or not math.isfinite(value):
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)


@dataclass(slots=True)
class RetryInfo:
    """One retry of a request that failed before any content (the ``on_retry`` argument).

    ``governor_wait`` is set once the retry is sent: the seconds the rate governor held it
    after ``delay`` (0.0 when it went at once).
    """

    attempt: int
    error: StreamkitError
    delay: float
    governor_wait: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; the server's own hints win."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0

    def should_retry(self, error: StreamkitError, retries_done: int) -> bool:
        if retries_done >= self.max_retries:
            return False
        if isinstance(error, APIConnectionError | StreamError | IncompleteStreamError):
            return True  # for a failure inside a stream, the caller checked it is resumable
        if isinstance(error, APIStatusError):
            if error.should_retry is not None:
                return error.should_retry
            return error.status_code in RETRYABLE_STATUS
        return False

    def delay(self, retries_done: int, error: StreamkitError | None = None) -> float:
        hinted = capped_retry_after(error.retry_after) if isinstance(error, APIError) else None
        if hinted is not None:
            return hinted
        return random.uniform(0.0, min(self.max_delay, self.initial_delay * 2**retries_done))
