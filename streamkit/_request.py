"""The request layer: build a request, send it, map transport failures, retry before the stream.

Every endpoint goes through ``Requester``: ``Messages.stream()`` opens each attempt with
``open_stream``, ``Messages.create()`` sends with ``send_message``, the other endpoints
(batches, token counting, files) with ``send_object`` (a JSON reply) or ``open_body`` (a
body read in pieces: batch results, a file's content).  A body read whole (an error, a
JSON reply) is read through ``read_capped``, which counts bytes after decompression: a
small gzip body can inflate a thousandfold.  A stream's body is not read here: that is
the stream shell's job, once the API has answered 200.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, TypeVar

import anyio
import httpx
from pydantic import BaseModel, ValidationError

from ._batching import Upload
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    ProtocolError,
    RequestBodyError,
    RequestTooLargeError,
    StreamkitError,
    status_error,
)
from ._governed import Gate, GateBase
from ._hooks import Hook, call_hook
from ._limits import MAX_ERROR_BODY, MAX_RESPONSE_BODY
from ._message import APIObject, Message
from ._params import NOT_GIVEN, NotGiven, Query
from ._retry import RetryInfo, RetryPolicy
from ._version import __version__

API_VERSION = "2023-06-01"
"""The default ``anthropic-version`` header (``AsyncClient(api_version=...)`` changes it)."""
USER_AGENT = f"streamkit/{__version__}"
_MB = 1024 * 1024
_T = TypeVar("_T")
APIObjectT = TypeVar("APIObjectT", bound=APIObject)
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """An endpoint's documented request size limit, and what to do instead of sending more."""

    size: int
    advice: str


MESSAGES_LIMIT = BodyLimit(32 * _MB, "shrink the messages or use the Files API")
"""Messages and token counting: 32 MB."""
BATCH_LIMIT = BodyLimit(256 * _MB, "split the requests into several batches")
"""Message Batches: 256 MB for the whole list of requests."""
FILE_LIMIT = BodyLimit(500 * _MB, "the Files API takes at most 500 MB per file")
"""Files: 500 MB per file."""
MAX_REQUEST_BYTES = MESSAGES_LIMIT.size


def too_large_request(size: int, limit: BodyLimit, what: str = "the request body") -> RequestTooLargeError:
    """The local refusal of a body over ``limit``, with its size: nothing was sent."""
    return RequestTooLargeError(
        f"{what} is {size:,} bytes, over the API's limit of {limit.size:,} bytes: it was not sent ({limit.advice})",
        error_type="request_too_large",
    )


def body_read_error(exc: httpx.HTTPError, response: httpx.Response) -> StreamkitError:
    """What a failure while reading a whole body becomes: retryable, or a ``ProtocolError`` if it does not decode."""
    request_id = response.headers.get("request-id")
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"the response body did not arrive in time: {exc!r}", request_id=request_id)
    if isinstance(exc, httpx.DecodingError):
        encoding = response.headers.get("content-encoding")
        return ProtocolError(f"the response body is not valid {encoding}: {exc!r}", request_id=request_id)
    return APIConnectionError(f"the connection failed while reading the response body: {exc!r}", request_id=request_id)


def send_error(exc: httpx.HTTPError, request: httpx.Request) -> StreamkitError:
    """What a failure before the API answered becomes: a retryable streamkit error."""
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"the request timed out before the API answered: {exc!r}")
    return APIConnectionError(f"could not reach the API at {request.url}: {exc!r}")


def client_closed() -> ClientClosedError:
    return ClientClosedError("the client is closed: its connection pool was closed, so the request was not sent")


def body_source_error(exc: OSError) -> RequestBodyError:
    """An ``OSError`` httpx did not map while sending: reading the file being uploaded failed.

    Not retried (a ``RequestBodyError``): the file would fail the same way again.
    """
    return RequestBodyError(
        f"the file being uploaded could not be read while it was sent: {exc.strerror or exc}; the request was abandoned"
    )


def not_an_event_stream(response: httpx.Response) -> bool:
    """Whether a 200 response to a streaming request is not ``text/event-stream``."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.partition(";")[0].strip().lower() != "text/event-stream"


def content_type_error(response: httpx.Response, content: bytes) -> ProtocolError:
    """The error for a streaming request answered with another content type (``content``: its first bytes)."""
    content_type = response.headers.get("content-type", "")
    return ProtocolError(
        f"expected a text/event-stream response, got {content_type or 'no content type'!r}",
        data=content,
        request_id=response.headers.get("request-id"),
    )


def too_large_error(response: httpx.Response, content: bytes) -> ProtocolError:
    return ProtocolError(
        f"the response body is over {MAX_RESPONSE_BODY:,} bytes: refused, no real reply is that large",
        data=content,
        request_id=response.headers.get("request-id"),
    )


def _validated(response: httpx.Response, content: bytes, model: type[_M]) -> _M:
    """A JSON reply's body as ``model``; ``ProtocolError`` if it is not one."""
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        raise ProtocolError(
            f"the response is not a {model.__name__}: {exc.errors()[0]['msg']}",
            data=content,
            request_id=response.headers.get("request-id"),
        ) from exc


def parse_object(response: httpx.Response, content: bytes, model: type[APIObjectT]) -> APIObjectT:
    """A JSON reply's body as ``model``, carrying its response's request id and headers."""
    return _validated(response, content, model)._received(response.headers.get("request-id"), response.headers)


def parse_message(response: httpx.Response, content: bytes) -> Message:
    """A whole (non-streaming) reply's body as a ``Message`` carrying its response's request id and headers."""
    return _validated(response, content, Message)._received(response.headers.get("request-id"), response.headers)


def next_retry(
    error: APIStatusError | APIConnectionError,
    policy: RetryPolicy,
    done: int,
    records: list[RetryInfo],
    gate: GateBase | None = None,
) -> RetryInfo:
    """One step of the pre-stream retry loop (both shells): the retry to do, recorded; else ``error`` raised.

    The rate governor's gate may have refused the retry (its retry budget is empty).
    """
    if not policy.should_retry(error, done) or (gate is not None and gate.refused(error)):
        raise error
    info = RetryInfo(done + 1, error, policy.delay(done, error))
    records.append(info)
    return info


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
    except httpx.HTTPError as exc:
        raise body_read_error(exc, response) from exc
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
        raise too_large_error(response, content)
    return content


def encode_request(body: Mapping[str, Any]) -> bytes:
    """The request body as compact UTF-8 JSON; ``RequestBodyError`` when JSON cannot hold it."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError: a lone surrogate
        raise RequestBodyError(f"the request body cannot be sent as JSON: {type(exc).__name__}: {exc}") from exc


Timeout = float | httpx.Timeout | None
"""A timeout: seconds for each of connect, read, write and pool, an ``httpx.Timeout``, or None for none."""


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """What a call says about its request besides the API parameters; never sent in the body.

    ``timeout`` replaces the client's for this request (``NOT_GIVEN``: the client's); ``headers``
    are added last (they override streamkit's own); ``query`` goes on the URL; ``extra_body`` is
    merged into the JSON body last; ``betas`` are joined into ``anthropic-beta``, after any
    betas the headers already name.
    """

    timeout: Timeout | NotGiven = NOT_GIVEN
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Query = field(default_factory=dict)
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    betas: Sequence[str] = ()


class PollOptions(TypedDict, total=False):
    """The per-call options of ``batches.wait()``, whose ``timeout`` is the whole wait's (see ``CallOptions``)."""

    max_retries: int | None
    on_retry: Hook[RetryInfo] | None
    extra_headers: Mapping[str, str] | None
    extra_query: Query | None
    betas: Sequence[str] | None


class CallOptions(PollOptions, total=False):
    """The per-call options of the batch, token counting and files calls (never sent in the body).

    As on ``messages.create()``: ``timeout`` replaces the client's for each request,
    ``max_retries`` the client's retry count, ``on_retry`` is called before each retry,
    ``extra_headers`` and ``extra_query`` are added last, ``betas`` are joined into
    ``anthropic-beta``.
    """

    timeout: Timeout


class BodyCallOptions(CallOptions, total=False):
    """``CallOptions`` of a call with a JSON body, and ``extra_body``: merged into the body last."""

    extra_body: Mapping[str, Any] | None


def request_options(
    timeout: Timeout | NotGiven,
    extra_headers: Mapping[str, str] | None,
    extra_query: Query | None,
    extra_body: Mapping[str, Any] | None,
    betas: Sequence[str] | None,
) -> RequestOptions:
    if isinstance(betas, str):  # a str is a Sequence[str]: one beta, not one per character
        betas = [betas]
    return RequestOptions(
        timeout, dict(extra_headers or {}), dict(extra_query or {}), dict(extra_body or {}), betas or ()
    )


def call_request_options(
    options: Mapping[str, Any], *, betas: Sequence[str] = (), query: Mapping[str, str | int] | None = None
) -> RequestOptions:
    """The ``RequestOptions`` of a call's ``BodyCallOptions`` (or part), with the endpoint's ``betas`` and ``query``."""
    made = request_options(
        options.get("timeout", NOT_GIVEN),
        options.get("extra_headers"),
        {**(options.get("extra_query") or {}), **(query or {})},
        options.get("extra_body"),
        options.get("betas"),
    )
    return replace(made, betas=[*betas, *made.betas]) if betas else made


def _with_betas(headers: dict[str, str], betas: Sequence[str]) -> None:
    """Join ``betas`` into the ``anthropic-beta`` header of ``headers`` (names in lower case), without repeats."""
    named = [beta.strip() for beta in headers.pop("anthropic-beta", "").split(",")]
    joined = list(dict.fromkeys(beta for beta in (*named, *betas) if beta))
    if joined:
        headers["anthropic-beta"] = ",".join(joined)


class RequestBuilder:
    """Builds requests to one API host with one key, for either shell; sends nothing.

    ``default_headers`` and ``default_query`` go on every request, ``timeout`` (unless
    ``NOT_GIVEN``: the pool's own) applies to every request a call does not time itself.
    ``http`` (an ``httpx.AsyncClient`` or ``httpx.Client``) only builds the request here.
    """

    def __init__(
        self,
        http: httpx.AsyncClient | httpx.Client,
        base_url: str,
        api_key: str | None,
        api_version: str = API_VERSION,
        *,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        default_headers: Mapping[str, str] | None = None,
        default_query: Query | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url
        self._api_key = api_key
        self.api_version = api_version
        self.timeout = timeout
        self.default_headers = dict(default_headers or {})
        self.default_query = dict(default_query or {})

    def build(
        self,
        path: str,
        body: Mapping[str, Any] | None,
        options: RequestOptions,
        *,
        stream: bool = False,
        method: str = "POST",
        limit: BodyLimit = MESSAGES_LIMIT,
        upload: Upload | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """The request, with the call's options applied; refused locally if its body is over ``limit``.

        This is the one place where options become a request: headers (streamkit's, the
        endpoint's ``headers``, the client's defaults, the call's, then the betas), the query
        string, the body (a JSON ``body`` with the call's ``extra_body`` merged last, an
        ``upload`` streamed as multipart, or none for a GET or DELETE) and the timeout (in the
        request's extensions, where the transport and the stall watchdog read it).
        """
        if self.http.is_closed:  # before the governor: a closed client takes no turn
            raise client_closed()
        content: bytes | None = None
        if body is not None:
            content = encode_request({**body, **options.extra_body} if options.extra_body else body)
            if len(content) > limit.size:
                raise too_large_request(len(content), limit)
        elif upload is not None and upload.size > limit.size:
            raise too_large_request(upload.size, limit, f"the file {upload.filename!r}")
        all_headers = {
            "user-agent": USER_AGENT,
            "anthropic-version": self.api_version,
            "accept": "text/event-stream" if stream else "application/json",
        }
        if content is not None:
            all_headers["content-type"] = "application/json"
        if self._api_key is not None:
            all_headers["x-api-key"] = self._api_key
        for later in (headers or {}, self.default_headers, options.headers):  # a later name replaces, in any case
            all_headers.update((name.lower(), value) for name, value in later.items())
        _with_betas(all_headers, options.betas)
        query = {**self.default_query, **options.query}
        timeout = options.timeout if not isinstance(options.timeout, NotGiven) else self.timeout
        return self.http.build_request(
            method,
            f"{self.base_url}{path}",
            content=content,
            files={"file": (upload.filename, upload.file, upload.mime_type)} if upload is not None else None,
            headers=all_headers,
            params=query or None,
            timeout=httpx.USE_CLIENT_DEFAULT if isinstance(timeout, NotGiven) else timeout,
        )


OK = frozenset({200})
"""The statuses ``open_body`` hands back by default; any other is raised as a status error."""
RESUME_OK = frozenset({200, 206, 416})
"""The statuses of a read that may resume with ``Range`` (``_jsonl.resume_skip`` judges them)."""


class Requester(RequestBuilder):
    """Sends requests with an ``httpx.AsyncClient``; owns nothing (the client owns the pool)."""

    http: httpx.AsyncClient

    async def send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """Send once; a failure before the API answered becomes a retryable streamkit error.

        Redirects are never followed, whatever the client was configured with: httpx would send
        the ``x-api-key`` header on to another host (it strips only ``Authorization``).
        """
        try:
            return await self.http.send(request, stream=stream, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise send_error(exc, request) from exc
        except RuntimeError:  # httpx's word for a pool closed meanwhile (by another task or thread)
            if self.http.is_closed:
                raise client_closed() from None
            raise
        except OSError as exc:  # httpx maps the network's; this one is the upload's file
            raise body_source_error(exc) from exc

    async def open_stream(self, request: httpx.Request) -> httpx.Response:
        """Send one streaming request; raise its pre-stream error, if any, with the response closed."""
        response = await self.send(request, stream=True)
        try:
            if response.status_code != 200:
                raise await read_status_error(response)
            if not_an_event_stream(response):
                content, _ = await read_capped(response, 500)
                raise content_type_error(response, content)
        except BaseException:
            await response.aclose()
            raise
        return response

    async def send_message(self, request: httpx.Request) -> Message:
        """Send one non-streaming Messages request and parse the whole reply, read up to its cap."""
        response = await self.send(request, stream=True)
        return parse_message(response, await read_response_body(response))

    async def send_object(self, request: httpx.Request, model: type[APIObjectT]) -> APIObjectT:
        """Send one request whose reply is a JSON object, and parse it as ``model``, read up to its cap."""
        response = await self.send(request, stream=True)
        return parse_object(response, await read_response_body(response), model)

    async def open_body(self, request: httpx.Request, ok: frozenset[int] = OK) -> httpx.Response:
        """Send one request whose body the caller reads in pieces; a status not in ``ok`` is raised, closed."""
        response = await self.send(request, stream=True)
        if response.status_code not in ok:
            raise await read_status_error(response)
        return response


async def with_retries(
    send: Callable[[], Awaitable[_T]],
    policy: RetryPolicy,
    records: list[RetryInfo],
    on_retry: Hook[RetryInfo] | None,
    gate: Gate | None = None,
) -> _T:
    """Send until it works or the policy gives up; only failures before a response body retry.

    With a ``gate``, the rate governor admits every attempt before it is sent.
    """
    done = 0
    while True:
        try:
            if gate is None:
                return await send()
            return await gate.run(send, policy, done, records)
        except (APIStatusError, APIConnectionError) as error:
            info = next_retry(error, policy, done, records, gate)
            done += 1
            await call_hook(on_retry, info)
            await anyio.sleep(info.delay)


class OpenAttempt:
    """How a stream opens each attempt (its endpoint, options and retry policy bound), governed.

    Called with the body to send, where to record pre-stream retries, and the hook; the
    stream shell tells ``ended`` when an attempt's stream ends, so its gate can settle it.
    """

    def __init__(
        self, requester: Requester, path: str, options: RequestOptions, policy: RetryPolicy, gate: Gate | None
    ) -> None:
        self._requester = requester
        self._path = path
        self._options = options
        self._policy = policy
        self._gate = gate

    async def __call__(
        self, body: dict[str, Any], records: list[RetryInfo], on_retry: Hook[RetryInfo] | None
    ) -> httpx.Response:
        requester = self._requester
        request = requester.build(self._path, body, self._options, stream=True)
        if self._gate is not None:
            self._gate.sized(request.content)
        return await with_retries(lambda: requester.open_stream(request), self._policy, records, on_retry, self._gate)

    @property
    def governor_wait(self) -> float:
        """The seconds the rate governor held the first attempt of the last call (0.0 without a governor)."""
        return 0.0 if self._gate is None else self._gate.first_wait

    async def ended(
        self, error: StreamkitError | None, message: Message | None, *, finished: bool, retry: bool = False
    ) -> bool:
        """The current attempt's stream ended; False: the governor refuses the retry ``error`` asks for."""
        if self._gate is None:
            return True
        return await self._gate.ended(error, message, finished=finished, retry=retry)


def stream_opener(
    requester: Requester, path: str, options: RequestOptions, policy: RetryPolicy, gate: Gate | None = None
) -> OpenAttempt:
    """The ``OpenAttempt`` of one ``stream()`` call."""
    return OpenAttempt(requester, path, options, policy, gate)
