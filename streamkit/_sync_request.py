"""The request layer's sync shell: ``Requester``'s sending, on an ``httpx.Client``.

Building the request, the checks of a response, the errors and the retry decision are
``_request``'s own functions, shared with the async shell; only the sending, reading and
sleeping are here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from ._errors import APIConnectionError, APIStatusError, StreamkitError, status_error
from ._governed import SyncGate
from ._hooks import Hook, call_hook_sync
from ._limits import MAX_ERROR_BODY, MAX_RESPONSE_BODY
from ._message import Message
from ._request import (
    OK,
    APIObjectT,
    RequestBuilder,
    RequestOptions,
    body_read_error,
    body_source_error,
    client_closed,
    content_type_error,
    next_retry,
    not_an_event_stream,
    parse_message,
    parse_object,
    send_error,
    too_large_error,
)
from ._retry import RetryInfo, RetryPolicy

_T = TypeVar("_T")


def read_capped_sync(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """``read_capped`` for the sync client: the first ``cap`` decoded bytes, and whether there was more."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(parts)[:cap], True
    except httpx.HTTPError as exc:
        raise body_read_error(exc, response) from exc
    finally:
        response.close()
    return b"".join(parts), False


def read_status_error_sync(response: httpx.Response) -> APIStatusError:
    content, truncated = read_capped_sync(response, MAX_ERROR_BODY)
    return status_error(response.status_code, response.headers, content, truncated=truncated)


def read_response_body_sync(response: httpx.Response) -> bytes:
    """``read_response_body`` for the sync client: a whole reply's body, up to ``MAX_RESPONSE_BODY``."""
    if response.status_code != 200:
        raise read_status_error_sync(response)
    content, truncated = read_capped_sync(response, MAX_RESPONSE_BODY)
    if truncated:
        raise too_large_error(response, content)
    return content


class SyncRequester(RequestBuilder):
    """Sends requests with an ``httpx.Client``; owns nothing (the client owns the pool)."""

    http: httpx.Client

    def send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """Send once, redirects never followed (see ``Requester.send``)."""
        try:
            return self.http.send(request, stream=stream, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise send_error(exc, request) from exc
        except RuntimeError:  # httpx's word for a pool closed meanwhile (by another thread)
            if self.http.is_closed:
                raise client_closed() from None
            raise
        except OSError as exc:  # httpx maps the network's; this one is the upload's file
            raise body_source_error(exc) from exc

    def open_stream(self, request: httpx.Request) -> httpx.Response:
        """Send one streaming request; raise its pre-stream error, if any, with the response closed."""
        response = self.send(request, stream=True)
        try:
            if response.status_code != 200:
                raise read_status_error_sync(response)
            if not_an_event_stream(response):
                content, _ = read_capped_sync(response, 500)
                raise content_type_error(response, content)
        except BaseException:
            response.close()
            raise
        return response

    def send_message(self, request: httpx.Request) -> Message:
        """Send one non-streaming Messages request and parse the whole reply, read up to its cap."""
        response = self.send(request, stream=True)
        return parse_message(response, read_response_body_sync(response))

    def send_object(self, request: httpx.Request, model: type[APIObjectT]) -> APIObjectT:
        """Send one request whose reply is a JSON object, and parse it as ``model``, read up to its cap."""
        response = self.send(request, stream=True)
        return parse_object(response, read_response_body_sync(response), model)

    def open_body(self, request: httpx.Request, ok: frozenset[int] = OK) -> httpx.Response:
        """Send one request whose body the caller reads in pieces; a status not in ``ok`` is raised, closed."""
        response = self.send(request, stream=True)
        if response.status_code not in ok:
            raise read_status_error_sync(response)
        return response


def with_retries_sync(
    send: Callable[[], _T],
    policy: RetryPolicy,
    records: list[RetryInfo],
    on_retry: Hook[RetryInfo] | None,
    gate: SyncGate | None = None,
) -> _T:
    """``with_retries`` for the sync client: the same policy, ``time.sleep`` between tries."""
    done = 0
    while True:
        try:
            if gate is None:
                return send()
            return gate.run(send, policy, done, records)
        except (APIStatusError, APIConnectionError) as error:
            info = next_retry(error, policy, done, records, gate)
            done += 1
            call_hook_sync(on_retry, info)
            time.sleep(info.delay)


class SyncOpenAttempt:
    """``OpenAttempt`` for the sync stream shell."""

    def __init__(
        self, requester: SyncRequester, path: str, options: RequestOptions, policy: RetryPolicy, gate: SyncGate | None
    ) -> None:
        self._requester = requester
        self._path = path
        self._options = options
        self._policy = policy
        self._gate = gate

    def __call__(
        self, body: dict[str, Any], records: list[RetryInfo], on_retry: Hook[RetryInfo] | None
    ) -> httpx.Response:
        requester = self._requester
        request = requester.build(self._path, body, self._options, stream=True)
        if self._gate is not None:
            self._gate.sized(request.content)
        return with_retries_sync(lambda: requester.open_stream(request), self._policy, records, on_retry, self._gate)

    @property
    def governor_wait(self) -> float:
        """The seconds the rate governor held the first attempt of the last call (0.0 without a governor)."""
        return 0.0 if self._gate is None else self._gate.first_wait

    def ended(
        self, error: StreamkitError | None, message: Message | None, *, finished: bool, retry: bool = False
    ) -> bool:
        """The current attempt's stream ended; False: the governor refuses the retry ``error`` asks for."""
        if self._gate is None:
            return True
        return self._gate.ended(error, message, finished=finished, retry=retry)


def sync_stream_opener(
    requester: SyncRequester, path: str, options: RequestOptions, policy: RetryPolicy, gate: SyncGate | None = None
) -> SyncOpenAttempt:
    """The ``SyncOpenAttempt`` of one ``stream()`` call."""
    return SyncOpenAttempt(requester, path, options, policy, gate)
