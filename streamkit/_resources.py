"""The async shells of the Message Batches and Files endpoints: ``client.messages.batches``, ``client.files``.

Thin: every decision (checks before sending, paths, cursors, the poll schedule, reading
and resuming the results file) is in ``_batching`` and ``_jsonl``, shared with the sync
shells in ``_sync_resources``; every request goes through the request layer, with the
client's retry policy and the same errors as ``messages.create()``.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Unpack

import anyio
import httpx

from ._batch_types import (
    BatchRequest,
    BatchResult,
    DeletedFile,
    DeletedMessageBatch,
    FileMetadata,
    MessageBatch,
)
from ._batching import (
    BATCHES_PATH,
    FILES_BETA,
    FILES_PATH,
    Page,
    PollSchedule,
    batch_body,
    download_target,
    next_page_query,
    open_upload,
    page_items,
    page_query,
    resource_path,
    results_path,
    upload_for,
    wait_timeout_error,
)
from ._governed import Gate, Governor
from ._governor import BATCHES_LANE, FILES_LANE
from ._hooks import Hook, call_hook
from ._jsonl import ResultsDecoder, ResumePoint
from ._limits import MAX_RESPONSE_BODY
from ._request import (
    BATCH_LIMIT,
    FILE_LIMIT,
    RESUME_OK,
    APIObjectT,
    BodyCallOptions,
    CallOptions,
    PollOptions,
    Requester,
    RequestOptions,
    body_read_error,
    call_request_options,
    with_retries,
)
from ._retry import RetryPolicy


class _Owner(Protocol):
    """What a resource needs of its client (``AsyncClient``), without importing it."""

    base_url: str
    max_resumes: int
    governor: Governor | None
    _requester: Requester

    def _retry_policy(self, max_retries: int | None) -> RetryPolicy: ...


class _Resource:
    _lane: str
    """The rate governor's lane of this API's requests (``ENDPOINT_LANES``)."""

    def __init__(self, client: _Owner) -> None:
        self._client = client

    async def _call(
        self,
        model: type[APIObjectT],
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        **build: Any,
    ) -> APIObjectT:
        """One request whose reply is a JSON object, retried as the client's policy says."""
        requester = self._client._requester
        request = requester.build(path, body, self._options(options), method=method, **build)
        policy = self._client._retry_policy(options.get("max_retries"))
        send = partial(requester.send_object, request, model)
        return await with_retries(send, policy, [], options.get("on_retry"), Gate(self._client.governor, self._lane))

    def _options(self, options: Mapping[str, Any], query: Mapping[str, str | int] | None = None) -> RequestOptions:
        return call_request_options(options, query=query)

    async def _list(
        self, path: str, model: type[APIObjectT], query: dict[str, str | int] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[APIObjectT]:
        """Every item of a list, a page fetched when the one before it has been read."""
        requester = self._client._requester
        policy = self._client._retry_policy(options.get("max_retries"))
        while query is not None:
            request = requester.build(path, None, self._options(options, query), method="GET")
            send = partial(requester.send_object, request, Page)
            gate = Gate(self._client.governor, self._lane)
            page = await with_retries(send, policy, [], options.get("on_retry"), gate)
            for item in page_items(page, model):
                yield item
            query = next_page_query(query, page)


class _ResumableBody:
    """A body read in pieces (``read``), resumed with a ``Range`` request where a broken connection stopped it."""

    def __init__(
        self, client: _Owner, lane: str, path: str, request_options: RequestOptions, options: Mapping[str, Any]
    ) -> None:
        self._client = client
        self._lane = lane
        self._path = path
        self._request_options = request_options
        self._options = options
        self.point = ResumePoint(client.max_resumes)
        self.request_id: str | None = None
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._done = False

    async def read(self) -> bytes | None:
        """The next bytes not received before; None at the end of the body."""
        while not self._done:
            if self._chunks is None:
                await self._open()
                continue
            assert self._response is not None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                await self.aclose()
                return None
            except httpx.HTTPError as exc:
                error = body_read_error(exc, self._response)
                await self._close_response()
                if not self.point.broke(error):
                    raise error from exc
                continue
            data = self.point.take(chunk)
            if data:
                return data
        return None

    async def _open(self) -> None:
        requester = self._client._requester
        headers = self.point.headers()
        request = requester.build(self._path, None, self._request_options, method="GET", headers=headers)
        policy = self._client._retry_policy(self._options.get("max_retries"))
        send = partial(requester.open_body, request, RESUME_OK)
        gate = Gate(self._client.governor, self._lane)  # each read (a resume too) is a new request
        self._response = await with_retries(send, policy, [], self._options.get("on_retry"), gate)
        self.request_id = self._response.headers.get("request-id")
        try:
            whole = not self.point.answered(self._response.status_code, self._response.headers)
        except BaseException:
            await self.aclose()
            raise
        if whole:
            await self.aclose()
        else:
            self._chunks = self._response.aiter_bytes()

    async def aclose(self) -> None:
        self._done = True
        await self._close_response()

    async def _close_response(self) -> None:
        response, self._response, self._chunks = self._response, None, None
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()


class AsyncBatchResults:
    """The results of one batch, read line by line as they arrive, in bounded memory.

    Iterate it (``async for result in results``), best inside ``async with`` so that an early
    exit closes the connection at once.  A connection that breaks while the file is read is
    resumed where it stopped with a ``Range`` request (up to the client's ``max_resumes``
    times in a row without a new byte); no result is delivered twice.  ``batch`` is the
    ended batch once the first result was asked for; ``resumes`` counts the resumed reads.
    """

    def __init__(
        self,
        locate: Callable[[], Awaitable[MessageBatch]],
        client: _Owner,
        options: Mapping[str, Any],
        *,
        max_line: int = MAX_RESPONSE_BODY,
    ) -> None:
        self.batch: MessageBatch | None = None
        self._locate = locate
        self._client = client
        self._options = options
        self._decoder = ResultsDecoder(max_line)
        self._ready: deque[BatchResult] = deque()
        self._body: _ResumableBody | None = None
        self._done = False

    @property
    def resumes(self) -> int:
        """How many times a broken read of the results was resumed."""
        return self._body.point.resumes if self._body is not None else 0

    def __aiter__(self) -> AsyncBatchResults:
        return self

    async def __anext__(self) -> BatchResult:
        while not self._ready:
            if self._done:
                raise StopAsyncIteration
            try:
                await self._advance()
            except BaseException:
                await self.aclose()
                raise
        return self._ready.popleft()

    async def __aenter__(self) -> AsyncBatchResults:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading: the connection is closed, the results not yet read are dropped."""
        self._ready.clear()
        self._done = True
        if self._body is not None:
            await self._body.aclose()

    async def _advance(self) -> None:
        if self._body is None:
            self.batch = await self._locate()
            path = results_path(self.batch, self._client.base_url)
            options = call_request_options(self._options)
            self._body = _ResumableBody(self._client, BATCHES_LANE, path, options, self._options)
        data = await self._body.read()
        if data is None:
            self._ready.extend(self._decoder.end())
            self._done = True
        else:
            self._ready.extend(self._decoder.feed(data))


class Batches(_Resource):
    """``client.messages.batches``: the Message Batches API, for many requests that need no answer now.

    Each call takes the per-call options of ``CallOptions`` (``timeout``, ``max_retries``,
    ``on_retry``, ``extra_headers``, ``extra_query``, ``betas``; ``extra_body`` on
    ``create``), and raises the same errors, retried the same way, as ``messages.create()``.
    Every request (a poll of ``wait()``, a read of the results too) is admitted by the client's
    rate governor in its ``"batches"`` lane: the API limits the batch endpoints' requests apart.
    """

    _lane = BATCHES_LANE

    async def create(self, requests: Iterable[BatchRequest], **options: Unpack[BodyCallOptions]) -> MessageBatch:
        """Send a batch; checked before sending: at most 100,000 requests, unique ids, 256 MB."""
        return await self._call(MessageBatch, "POST", BATCHES_PATH, batch_body(requests), options, limit=BATCH_LIMIT)

    async def retrieve(self, batch_id: str, **options: Unpack[CallOptions]) -> MessageBatch:
        """The batch's current state."""
        return await self._call(MessageBatch, "GET", resource_path(BATCHES_PATH, batch_id), None, options)

    def list(
        self,
        *,
        limit: int | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[MessageBatch]:
        """Every batch, newest first (``async for``), ``limit`` to a page; a page is fetched when needed.

        From ``after_id`` on (older batches), or before ``before_id`` (newer ones: the pages come
        nearest first, each in the list's order).
        """
        return self._list(BATCHES_PATH, MessageBatch, page_query(limit, after_id, before_id), options)

    async def cancel(self, batch_id: str, **options: Unpack[CallOptions]) -> MessageBatch:
        """Ask the API to cancel the batch; it is ``canceling`` until the requests in flight are done."""
        return await self._call(MessageBatch, "POST", resource_path(BATCHES_PATH, batch_id, "cancel"), None, options)

    async def delete(self, batch_id: str, **options: Unpack[CallOptions]) -> DeletedMessageBatch:
        """Delete an ended batch (a batch in progress must be canceled first)."""
        return await self._call(DeletedMessageBatch, "DELETE", resource_path(BATCHES_PATH, batch_id), None, options)

    def results(self, batch: str | MessageBatch, **options: Unpack[CallOptions]) -> AsyncBatchResults:
        """The results of an ended batch, one ``BatchResult`` per request, in any order (see ``AsyncBatchResults``).

        ``batch`` is an id (its ``results_url`` is retrieved first) or a batch that has one.
        Nothing is sent before the first result is asked for.
        """

        async def locate() -> MessageBatch:
            if isinstance(batch, MessageBatch) and batch.results_url is not None:
                return batch
            return await self.retrieve(batch if isinstance(batch, str) else batch.id, **options)

        return AsyncBatchResults(locate, self._client, options)

    async def wait(
        self,
        batch_id: str,
        *,
        poll_interval: float = 1.0,
        max_interval: float = 60.0,
        timeout: float | None = None,  # noqa: ASYNC109 - the whole wait's, not one request's
        on_progress: Hook[MessageBatch] | None = None,
        **options: Unpack[PollOptions],
    ) -> MessageBatch:
        """Poll until the batch has ended, and return it.

        Polls start ``poll_interval`` seconds apart and grow by half each time up to
        ``max_interval``, jittered; a 429 or 529 is retried as the client's policy says,
        after its ``retry-after``.  ``on_progress`` gets the batch after each poll (its
        ``request_counts`` say how far it is).  ``timeout`` (seconds, None: none) ends the wait
        with ``BatchWaitTimeoutError``; cancelling the wait (a cancel scope) stops it at once.
        """
        schedule = PollSchedule(poll_interval, max_interval)
        last: MessageBatch | None = None
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                last = await self.retrieve(batch_id, **options)
                await call_hook(on_progress, last)
                if last.processing_status == "ended":
                    return last
                await anyio.sleep(schedule.next_delay(None))
        raise wait_timeout_error(batch_id, timeout, last)

    def run(
        self,
        requests: Iterable[BatchRequest],
        *,
        poll_interval: float = 1.0,
        max_interval: float = 60.0,
        timeout: float | None = None,
        on_progress: Hook[MessageBatch] | None = None,
        **options: Unpack[PollOptions],
    ) -> AsyncBatchResults:
        """Create a batch, wait for it to end, and read its results: one call for work that can wait.

        ``async with client.messages.batches.run(requests) as results: async for result in
        results: ...``.  The batch is created when the first result is asked for; ``results.batch``
        is then the ended batch.  The wait takes ``wait()``'s arguments.
        """
        batch_body(requests := list(requests))  # refuse bad requests now, not at the first result

        async def locate() -> MessageBatch:
            created = await self.create(requests, **options)
            return await self.wait(
                created.id,
                poll_interval=poll_interval,
                max_interval=max_interval,
                timeout=timeout,
                on_progress=on_progress,
                **options,
            )

        return AsyncBatchResults(locate, self._client, options)


class Files(_Resource):
    """``client.files`` (also ``client.beta.files``): the Files API; its beta header is added to every call.

    Per-call options as on ``Batches`` (``CallOptions``); the rate governor admits every request
    in its ``"files"`` lane.
    """

    _lane = FILES_LANE

    def _options(self, options: Mapping[str, Any], query: Mapping[str, str | int] | None = None) -> RequestOptions:
        return call_request_options(options, betas=[FILES_BETA], query=query)

    async def upload(
        self,
        file: str | os.PathLike[str] | IO[bytes],
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        **options: Unpack[CallOptions],
    ) -> FileMetadata:
        """Upload a file (a path, or a seekable binary file object), streamed: never read whole into memory.

        Refused before sending past 500 MB, from the file's size.  ``filename`` defaults to the
        file's name, ``mime_type`` to a guess from it.
        """
        if isinstance(file, str | os.PathLike):
            with open_upload(file) as opened:  # opening is instant; httpx reads it in chunks
                return await self._upload(opened, filename, mime_type, options)
        return await self._upload(file, filename, mime_type, options)

    async def _upload(
        self, file: IO[bytes], filename: str | None, mime_type: str | None, options: Mapping[str, Any]
    ) -> FileMetadata:
        upload = upload_for(file, filename, mime_type)
        return await self._call(FileMetadata, "POST", FILES_PATH, None, options, upload=upload, limit=FILE_LIMIT)

    def list(
        self,
        *,
        limit: int | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[FileMetadata]:
        """Every file (``async for``), ``limit`` to a page; a page is fetched when needed."""
        return self._list(FILES_PATH, FileMetadata, page_query(limit, after_id, before_id), options)

    async def retrieve(self, file_id: str, **options: Unpack[CallOptions]) -> FileMetadata:
        """A file's metadata (``retrieve_metadata`` is the same call, under the official SDK's name)."""
        return await self._call(FileMetadata, "GET", resource_path(FILES_PATH, file_id), None, options)

    retrieve_metadata = retrieve

    async def delete(self, file_id: str, **options: Unpack[CallOptions]) -> DeletedFile:
        """Delete a file."""
        return await self._call(DeletedFile, "DELETE", resource_path(FILES_PATH, file_id), None, options)

    async def download(
        self,
        file_id: str,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = FILE_LIMIT.size,
        **options: Unpack[CallOptions],
    ) -> Path:
        """Save a downloadable file's content at ``path``, streamed in chunks; returns the path.

        It is written to a temporary file beside ``path``, renamed into place once whole:
        ``path`` never holds part of a file, and the temporary file is removed on any failure.
        A connection that breaks is resumed with a ``Range`` request, as batch results are.
        A body over ``max_bytes`` (default: the API's 500 MB limit) is refused.
        """
        content = resource_path(FILES_PATH, file_id, "content")
        body = _ResumableBody(self._client, FILES_LANE, content, self._options(options), options)
        target = download_target(path, max_bytes)
        try:
            try:  # body.read() raises only streamkit errors: an OSError is the local file's
                async with await anyio.open_file(target.partial, "wb") as out:
                    while (data := await body.read()) is not None:
                        target.count(len(data), body.request_id)
                        await out.write(data)
            except OSError as exc:
                raise target.error(exc) from exc
            target.finish()
        finally:
            await body.aclose()
            target.discard()
        return target.path


class Beta:
    """``client.beta``: where the official SDK puts the beta endpoints (``files``)."""

    def __init__(self, files: Files) -> None:
        self.files = files
