"""Rate-limit headers, parsed: ``anthropic-ratelimit-{dimension}-{limit,remaining,reset}``.

The API sends, for each dimension it limits (requests, tokens, input tokens, output tokens),
the limit, what remains of it and when it is back to full (RFC 3339).  Headers come from
the server and are untrusted: a value that does not parse is ``None``, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict

PREFIX = "anthropic-ratelimit-"
DIMENSIONS = ("requests", "tokens", "input-tokens", "output-tokens")
_MAX_DIGITS = 30  # far past any real limit, far below int()'s digit cap


class RateLimit(BaseModel):
    """One dimension's limit: each field ``None`` when its header is missing or malformed."""

    model_config = ConfigDict(frozen=True)

    limit: int | None = None
    remaining: int | None = None
    reset: datetime | None = None  # timezone-aware


class RateLimits(BaseModel):
    """The rate-limit headers of one response; a dimension is ``None`` when none of its headers came."""

    model_config = ConfigDict(frozen=True)

    requests: RateLimit | None = None
    tokens: RateLimit | None = None
    input_tokens: RateLimit | None = None
    output_tokens: RateLimit | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> RateLimits:
        """Parse the ``anthropic-ratelimit-*`` headers (names in any case); never raises."""
        # One pass over the headers, each name looked up once: every response is parsed, and
        # most of its headers are not these.
        parts: dict[str, list[str | None]] = {}
        for name, value in headers.items() if headers else ():
            known = _HEADERS.get(str(name).lower())
            if known is not None:
                dimension, index = known
                parts.setdefault(dimension, [None, None, None])[index] = value  # the last of a name wins
        if not parts:
            return NO_LIMITS if cls is RateLimits else cls()
        return cls(
            **{
                dimension: RateLimit(limit=_count(limit), remaining=_count(remaining), reset=_instant(reset))
                for dimension, (limit, remaining, reset) in parts.items()
            }
        )


NO_LIMITS = RateLimits()
"""An answer without these headers; frozen, so one instance serves every such answer."""
_HEADERS = {
    f"{PREFIX}{dimension}-{part}": (dimension.replace("-", "_"), index)
    for dimension in DIMENSIONS
    for index, part in enumerate(("limit", "remaining", "reset"))
}
"""Each header's name, lowercase: its ``RateLimits`` field and its place in (limit, remaining, reset)."""


def _count(value: str | None) -> int | None:
    """A non-negative integer written in ASCII digits, else ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _instant(value: str | None) -> datetime | None:
    """An RFC 3339 date-time with its offset (``Z`` or ``+hh:mm``), else ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not 20 <= len(value) <= 40 or not value.isascii() or value[10:11] not in ("T", "t", " "):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
