"""Everything streamkit raises, on two axes.

The *phase* says when it failed: ``APIStatusError`` (an HTTP error status, before any
event) or ``StreamError`` (an ``event: error`` after a 200).  The *kind* says what failed
(``OverloadedError``, ``RateLimitError`` ...).  A raised API error is an instance of a
class named for both (``OverloadedStatusError``, ``OverloadedStreamError`` ...), defined
here, so ``except OverloadedError`` catches an overload in either phase while
``except StreamError`` catches only the in-stream one.

The official SDK's names exist too, with its subclass relations: ``BadRequestError`` is
``InvalidRequestError``, ``APIConnectionError`` (and so ``APITimeoutError``) is an
``APIError``, ``OverloadedError`` is not an ``InternalServerError``.

Every error raised once a stream has started carries ``partial_message``: what was
received before the failure is never lost.
"""

from __future__ import annotations

import email.utils
import json
import string
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._ratelimits import RateLimits

if TYPE_CHECKING:
    from ._message import Message


class StreamkitError(Exception):
    """Base of everything streamkit raises."""

    partial_message: Message | None
    request_id: str | None

    def __init__(self, message: str, *, request_id: str | None = None, partial_message: Message | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.partial_message = partial_message

    def __str__(self) -> str:
        extra = f" (request_id={self.request_id})" if self.request_id else ""
        return f"{self.message}{extra}"


class APIError(StreamkitError):
    """An error the API reported, before the stream (a status) or inside it (an event).

    Also the base of ``APIConnectionError`` (no answer came), as in the official SDK:
    ``except APIError`` catches every failure to get an answer from the API, but never a
    stream that broke or stalled after its 200 (``IncompleteStreamError``), a protocol
    violation (``ProtocolError``) or a request refused locally before sending.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        body: object | None = None,
        text: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        partial_message: Message | None = None,
        truncated: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, partial_message=partial_message)
        self.headers = headers  # the error response's headers (a status error's); None otherwise
        self.should_retry = should_retry  # the server's x-should-retry verdict, if it gave one
        self.status_code = status_code
        self.error_type = error_type
        self.body = body
        self.text = text
        self.retry_after = retry_after
        self.truncated = truncated  # the body was longer than the part read into ``text``

    @property
    def rate_limits(self) -> RateLimits:
        """The ``anthropic-ratelimit-*`` headers of the error response, parsed (all ``None`` without them)."""
        return RateLimits.from_headers(self.headers)

    def __str__(self) -> str:
        facts = [
            f"{name}={value}"
            for name, value in (
                ("status", self.status_code),
                ("type", self.error_type),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(facts)})" if facts else self.message


# -- phases -------------------------------------------------------------------------


class APIStatusError(APIError):
    """The API answered with an error status before streaming anything."""


class StreamError(APIError):
    """The API sent ``event: error`` after a 200; ``partial_message`` holds the output so far."""


# -- kinds --------------------------------------------------------------------------


class InvalidRequestError(APIError):
    """400 / invalid_request_error: the request is malformed or not allowed; retrying will not help.

    ``BadRequestError`` is the same class, under the official SDK's name.
    """


class AuthenticationError(APIError):
    """401 / authentication_error: the API key is missing or wrong."""


class PermissionDeniedError(APIError):
    """403 / permission_error: the key may not use this resource."""


class NotFoundError(APIError):
    """404 / not_found_error: wrong path or model name."""


class ConflictError(APIError):
    """409: the request conflicts with the state of a resource (the API gives no ``error.type`` for it)."""


class RequestTooLargeError(APIError):
    """413 / request_too_large: the request body is over the size limit (32 MB for Messages).

    Also raised locally, before sending, for a body over 32 MB: then it is neither phase.
    """


class UnprocessableEntityError(APIError):
    """422: the request is well formed but cannot be processed (the API gives no ``error.type`` for it)."""


class RateLimitError(APIError):
    """429 / rate_limit_error: slow down; ``retry_after`` says for how long when the API tells."""


class InternalServerError(APIError):
    """500 / api_error, or any other 5xx but 529: a failure inside the API or in front of it; retrying usually works."""


class OverloadedError(APIError):
    """529 / overloaded_error: the API is under load; retry with backoff.

    As in the official SDK, it is not an ``InternalServerError``.
    """


BadRequestError = InvalidRequestError
"""The official SDK's name for ``InvalidRequestError`` (the same class)."""


# -- phase x kind: the classes that are raised --------------------------------------


class InvalidRequestStatusError(APIStatusError, InvalidRequestError):
    """A 400 (or an ``invalid_request_error`` body) before the stream."""


class InvalidRequestStreamError(StreamError, InvalidRequestError):
    """An ``invalid_request_error`` event after a 200."""


class AuthenticationStatusError(APIStatusError, AuthenticationError):
    """A 401 (or an ``authentication_error`` body) before the stream."""


class AuthenticationStreamError(StreamError, AuthenticationError):
    """An ``authentication_error`` event after a 200."""


class PermissionDeniedStatusError(APIStatusError, PermissionDeniedError):
    """A 403 (or a ``permission_error`` body) before the stream."""


class PermissionDeniedStreamError(StreamError, PermissionDeniedError):
    """A ``permission_error`` event after a 200."""


class NotFoundStatusError(APIStatusError, NotFoundError):
    """A 404 (or a ``not_found_error`` body) before the stream."""


class NotFoundStreamError(StreamError, NotFoundError):
    """A ``not_found_error`` event after a 200."""


class ConflictStatusError(APIStatusError, ConflictError):
    """A 409 before the stream (a status only: there is no in-stream counterpart)."""


class RequestTooLargeStatusError(APIStatusError, RequestTooLargeError):
    """A 413 (or a ``request_too_large`` body) before the stream."""


class RequestTooLargeStreamError(StreamError, RequestTooLargeError):
    """A ``request_too_large`` event after a 200."""


class UnprocessableEntityStatusError(APIStatusError, UnprocessableEntityError):
    """A 422 before the stream (a status only: there is no in-stream counterpart)."""


class RateLimitStatusError(APIStatusError, RateLimitError):
    """A 429 (or a ``rate_limit_error`` body) before the stream."""


class RateLimitStreamError(StreamError, RateLimitError):
    """A ``rate_limit_error`` event after a 200."""


class InternalServerStatusError(APIStatusError, InternalServerError):
    """A 500 (or an ``api_error`` body), or another 5xx but 529, before the stream."""


class InternalServerStreamError(StreamError, InternalServerError):
    """An ``api_error`` event after a 200."""


class OverloadedStatusError(APIStatusError, OverloadedError):
    """A 529 (or an ``overloaded_error`` body) before the stream."""


class OverloadedStreamError(StreamError, OverloadedError):
    """An ``overloaded_error`` event after a 200."""


_STATUS_CLASSES: dict[str, type[APIStatusError]] = {
    "invalid_request_error": InvalidRequestStatusError,
    "authentication_error": AuthenticationStatusError,
    "permission_error": PermissionDeniedStatusError,
    "not_found_error": NotFoundStatusError,
    "request_too_large": RequestTooLargeStatusError,
    "rate_limit_error": RateLimitStatusError,
    "api_error": InternalServerStatusError,
    "overloaded_error": OverloadedStatusError,
}
"""The status error of each known ``error.type``."""

_STREAM_CLASSES: dict[str, type[StreamError]] = {
    "invalid_request_error": InvalidRequestStreamError,
    "authentication_error": AuthenticationStreamError,
    "permission_error": PermissionDeniedStreamError,
    "not_found_error": NotFoundStreamError,
    "request_too_large": RequestTooLargeStreamError,
    "rate_limit_error": RateLimitStreamError,
    "api_error": InternalServerStreamError,
    "overloaded_error": OverloadedStreamError,
}
"""The in-stream error of each known ``error.type``."""

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
"""The ``error.type`` the API uses for a status (kept as ``error_type`` when the body has none)."""

_STATUS_CLASS_BY_STATUS: dict[int, type[APIStatusError]] = {
    **{status: _STATUS_CLASSES[error_type] for status, error_type in _TYPE_BY_STATUS.items()},
    409: ConflictStatusError,
    422: UnprocessableEntityStatusError,
}
"""The status error of each status the official SDK maps (any other 5xx: internal)."""


def _status_class(status: int, error_type: str | None) -> type[APIStatusError]:
    """As the official SDK maps it, the status decides the kind: 400 ... 529, and any other 5xx
    is internal.  Only a status it does not map (a 402, a 418) takes the kind of a known
    ``error.type`` in the body; else the error is a plain ``APIStatusError``.
    """
    if status in _STATUS_CLASS_BY_STATUS:
        return _STATUS_CLASS_BY_STATUS[status]
    if 500 <= status < 600:
        return InternalServerStatusError
    return _STATUS_CLASSES.get(error_type or "", APIStatusError)


# -- failures that are not API errors -----------------------------------------------


class APIConnectionError(APIError):
    """No response arrived: the connection could not be made or broke before the headers.

    An ``APIError`` as in the official SDK (with no status, type or body).  A connection
    that breaks after the stream started is a ``ConnectionLostError`` instead, which is
    not an ``APIError``: it comes with the partial reply.
    """


class APITimeoutError(APIConnectionError):
    """The request timed out before the API answered (no status, or for create() no whole body)."""


class IncompleteStreamError(StreamkitError):
    """The stream stopped before ``message_stop``: the reply is incomplete, never final.

    ``partial_message`` holds everything received.  Subclasses say how it stopped.
    """


class ConnectionLostError(IncompleteStreamError):
    """The connection broke after the stream started (reset, incomplete chunked body)."""


class StreamTimeoutError(IncompleteStreamError):
    """No bytes arrived for longer than the read timeout after the stream started."""


class StallError(IncompleteStreamError):
    """Only pings (or nothing) arrived for longer than ``stall_timeout``: no progress."""


class ProtocolError(StreamkitError):
    """The server broke the protocol (not an event stream, data that is not JSON ...).

    ``data`` holds the offending bytes, cut to 500 bytes.
    """

    def __init__(
        self,
        message: str,
        *,
        data: bytes = b"",
        request_id: str | None = None,
        partial_message: Message | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, partial_message=partial_message)
        self.data = data[:500]


class StreamingRequiredError(StreamkitError, ValueError):
    """A non-streaming request that may run past 10 minutes: use ``messages.stream()``."""


class RequestBodyError(StreamkitError, ValueError):
    """The request cannot be encoded as JSON (nested too deeply, a lone surrogate ...); nothing was sent.

    Also a file to upload that cannot be read (before or while it is sent): not retried,
    a retry would fail the same way.
    """


class ClientClosedError(StreamkitError, RuntimeError):
    """The client's connection pool was closed (``aclose()``/``close()``, or leaving its ``with``); nothing was sent.

    Not retried: make a new client.  A client made with ``with_options`` shares its parent's pool.
    """


class LocalFileError(StreamkitError):
    """A local file streamkit writes could not be written, renamed or removed (``download()``'s target).

    ``__cause__`` is the ``OSError``; ``path`` the file concerned.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


# -- building errors from what the server sent --------------------------------------


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait as the headers say: ``retry-after-ms``, then ``retry-after``."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


HTML_PREFIX = 64 * 1024
"""Characters of a non-JSON error body searched for its gist: a title or text is near the top."""

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_CONTROLS = dict.fromkeys([*range(32), 127], " ")  # binary garbage must not reach a log line


def _readable(text: str) -> str:
    """A one-line gist of a non-JSON body (an HTML page from a proxy, say).

    Linear in the bounded prefix, whatever the page holds: the body is untrusted, and a
    backtracking regex over it can stall the event loop.
    """
    text = text[:HTML_PREFIX].translate(_CONTROLS)
    lower = text.translate(_ASCII_LOWER)  # keeps every index, unlike str.lower()
    start = lower.find("<title>")
    end = lower.find("</title>", start + 7) if start >= 0 else -1
    gist = text[start + 7 : end] if end >= 0 else _strip_tags(text)
    return " ".join(gist.split())[:200]


def _strip_tags(text: str) -> str:
    """``text`` with each ``<...>`` tag (one character or more inside) replaced by a space."""
    parts: list[str] = []
    done = 0  # text before this index is in parts
    search = 0
    while (start := text.find("<", search)) >= 0:
        end = text.find(">", start + 1)
        if end < 0:
            break  # no tag closes after this point: the rest is text
        if end == start + 1:
            search = end  # "<>" is text, not a tag
            continue
        parts += (text[done:start], " ")
        done = search = end + 1
    parts.append(text[done:])
    return "".join(parts)


def _error_detail(body: object) -> tuple[str | None, str | None]:
    """``error.type`` and ``error.message`` of an API error body, where they are strings."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return None, None
    error_type, message = detail.get("type"), detail.get("message")
    return (
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else None,
    )


def status_error(status: int, headers: Mapping[str, str], content: bytes, *, truncated: bool = False) -> APIStatusError:
    """The error for a non-200 response, whatever its body looks like.

    ``content`` is the body, or its first part when ``truncated``.  A redirect is reported,
    never followed: the API key goes only to the host it was configured for.
    """
    text = content.decode("utf-8", "replace")
    body: object | None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        body = None
    body_type, message = _error_detail(body)
    error_type = body_type or _TYPE_BY_STATUS.get(status)
    if 300 <= status < 400:
        location = headers.get("location", "")[:200]
        error_type = None
        message = f"the API answered {status} with a redirect to {location!r}: streamkit does not follow redirects"
    elif not message:
        gist = _readable(text)
        message = f"HTTP {status}" + (f": {gist}" if gist else "")
        if truncated:
            message += f" (the body was cut at {len(content):,} bytes)"
        elif body is None and text:
            message += " (the body is not JSON: it likely came from a proxy or CDN in front of the API)"
    request_id = headers.get("request-id")
    if request_id is None and isinstance(body, dict) and isinstance(body.get("request_id"), str):
        request_id = body["request_id"]
    cls = APIStatusError if 300 <= status < 400 else _status_class(status, error_type)
    return cls(
        message,
        status_code=status,
        error_type=error_type,
        request_id=request_id,
        body=body,
        text=text,
        retry_after=retry_after(headers),
        should_retry={"true": True, "false": False}.get(headers.get("x-should-retry", "").lower()),
        truncated=truncated,
        headers=headers,
    )


def stream_error(data: dict[str, Any], *, request_id: str | None, partial_message: Message | None) -> StreamError:
    """The error for an ``event: error`` received after a 200."""
    error_type, message = _error_detail(data)
    cls = _STREAM_CLASSES.get(error_type or "", StreamError)
    return cls(
        message or f"the stream reported an error of type {error_type!r}",
        status_code=200,
        error_type=error_type,
        request_id=request_id,
        body=data,
        text=json.dumps(data),
        partial_message=partial_message,
    )


_KIND_CLASSES: dict[str, type[APIError]] = {
    "invalid_request_error": InvalidRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "request_too_large": RequestTooLargeError,
    "rate_limit_error": RateLimitError,
    "api_error": InternalServerError,
    "overloaded_error": OverloadedError,
}
"""The kind of each known ``error.type``, for an error of neither phase."""


def result_error(data: object) -> APIError:
    """The error of one request of a batch, from its error body: of its kind, of neither phase.

    The request failed inside the batch, with no status of its own and no stream, so the
    error is an instance of the kind (``except InvalidRequestError`` matches it), never of
    ``APIStatusError`` or ``StreamError``.  It is handed back in the results, not raised.
    """
    error_type, message = _error_detail(data)
    cls = _KIND_CLASSES.get(error_type or "", APIError)
    return cls(
        message or f"the request failed with an error of type {error_type!r}",
        error_type=error_type,
        body=data,
        text=json.dumps(data),
    )
