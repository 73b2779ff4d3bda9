"""Caps on everything a server sends, so a broken or hostile one cannot exhaust memory or time.

Plain numbers, no I/O: the request layer reads bodies up to them, the accumulator holds a
reply to them.
"""

from __future__ import annotations

MAX_ERROR_BODY = 1024 * 1024
"""Bytes of an error body kept (1 MiB): the API's own error bodies are a few hundred bytes."""

MAX_RESPONSE_BODY = 32 * 1024 * 1024
"""Bytes of a non-streaming reply accepted (32 MiB).

A reply has to fit into the next request, which the API caps at 32 MB.
"""

MAX_REPLY_BYTES = 32 * 1024 * 1024
"""Bytes of content one streamed reply may accumulate (32 MiB), for the same reason."""

MAX_BLOCKS = 4096
"""Content blocks one reply may hold: far more than a real reply has, few enough to bound the work per block."""
