"""Caps on everything a server sends, so a broken or hostile one cannot exhaust memory or time.

Every body streamkit reads whole is read here, through ``read_capped``, which counts
bytes after decompression: a small gzip body can inflate a thousandfold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ProtocolError,
    RequestBodyError,
    status_error,
)

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


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """The first ``cap`` bytes of the decoded body, and whether there was more.

    Reading stops as soon as the cap is passed and the response is closed, so the rest of
    the body (however large once inflated) is never read.  A broken connection or a timeout
    becomes a retryable streamkit error, a body that does not decompress a ``ProtocolError``.
    """
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(parts)[:cap], True
    except httpx.TimeoutException as exc:
        raise APITimeoutError(f"the response body did not arrive in time: {exc!r}") from exc
    except httpx.DecodingError as exc:
        encoding = response.headers.get("content-encoding")
        raise ProtocolError(f"the response body is not valid {encoding}: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise APIConnectionError(f"the connection failed while reading the response body: {exc!r}") from exc
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
    return b"".join(parts), False


async def read_status_error(response: httpx.Response) -> APIStatusError:
    """The error for a non-200 response, from at most ``MAX_ERROR_BODY`` bytes of its body."""
    content, truncated = await read_capped(response, MAX_ERROR_BODY)
    return status_error(response.status_code, response.headers, content, truncated=truncated)


async def read_response_body(response: httpx.Response) -> bytes:
    """The body of a whole (non-streaming) reply; ``ProtocolError`` past ``MAX_RESPONSE_BODY``."""
    if response.status_code != 200:
        raise await read_status_error(response)
    content, truncated = await read_capped(response, MAX_RESPONSE_BODY)
    if truncated:
        raise ProtocolError(
            f"the response body is over {MAX_RESPONSE_BODY:,} bytes: refused, no real reply is that large",
            data=content,
            request_id=response.headers.get("request-id"),
        )
    return content


def encode_request(body: Mapping[str, Any]) -> bytes:
    """The request body as compact UTF-8 JSON; ``RequestBodyError`` when JSON cannot hold it."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError: a lone surrogate
        raise RequestBodyError(f"the request body cannot be sent as JSON: {type(exc).__name__}: {exc}") from exc
