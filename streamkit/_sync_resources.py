"""The sync shells of the Message Batches and Files endpoints: ``Client.messages.batches``, ``Client.files``.

The same calls as ``_resources`` on ``httpx.Client``, on the same decisions (``_batching``,
``_jsonl``): only sending, reading and sleeping are sync here.  Hooks are plain functions.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Unpack

import httpx

from ._batch_types import BatchRequest, BatchResult, DeletedFile, DeletedMessageBatch, FileMetadata, MessageBatch
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
from ._governed import Governor, SyncGate
from ._governor import BATCHES_LANE, FILES_LANE
from ._hooks import Hook, call_hook_sync, check_sync_hook
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
    RequestOptions,
    body_read_error,
    call_request_options,
)
from ._retry import RetryPolicy
from ._sync_request import SyncRequester, with_retries_sync


class _Owner(Protocol):
    """What a resource needs of its client (``Client``), without importing it."""

    base_url: str
    max_resumes: int
    governor: Governor | None
    _requester: SyncRequester

    def _retry_policy(self, max_retries: int | None) -> RetryPolicy: ...


def _checked(options: Mapping[str, Any]) -> Mapping[str, Any]:
    check_sync_hook("on_retry", options.get("on_retry"))
    return options


class _SyncResource:
    _lane: str
    """The rate governor's lane of this API's requests (``ENDPOINT_LANES``)."""

    def __init__(self, client: _Owner) -> None:
        self._client = client

    def _call(
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
        request = requester.build(path, body, self._options(_checked(options)), method=method, **build)
        policy = self._client._retry_policy(options.get("max_retries"))
        send = partial(requester.send_object, request, model)
        return with_retries_sync(send, policy, [], options.get("on_retry"), SyncGate(self._client.governor, self._lane))

    def _options(self, options: Mapping[str, Any], query: Mapping[str, str | int] | None = None) -> RequestOptions:
        return call_request_options(options, query=query)

    def _list(
        self, path: str, model: type[APIObjectT], query: dict[str, str | int] | None, options: Mapping[str, Any]
    ) -> Iterator[APIObjectT]:
        """Every item of a list, a page fetched when the one before it has been read."""
        requester = self._client._requester
        policy = self._client._retry_policy(options.get("max_retries"))
        while query is not None:
            request = requester.build(path, None, self._options(options, query), method="GET")
            send = partial(requester.send_object, request, Page)
            gate = SyncGate(self._client.governor, self._lane)
            page = with_retries_sync(send, policy, [], options.get("on_retry"), gate)
            yield from page_items(page, model)
            query = next_page_query(query, page)


class _SyncResumableBody:
    """``_resources._ResumableBody`` for the sync client: a body read in pieces, resumed with ``Range``."""

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
        self._chunks: Iterator[bytes] | None = None
        self._done = False

    def read(self) -> bytes | None:
        """The next bytes not received before; None at the end of the body."""
        while not self._done:
            if self._chunks is None:
                self._open()
                continue
            assert self._response is not None
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.close()
                return None
            except httpx.HTTPError as exc:
                error = body_read_error(exc, self._response)
                self._close_response()
                if not self.point.broke(error):
                    raise error from exc
                continue
            data = self.point.take(chunk)
            if data:
                return data
        return None

    def _open(self) -> None:
        requester = self._client._requester
        headers = self.point.headers()
        request = requester.build(self._path, None, self._request_options, method="GET", headers=headers)
        policy = self._client._retry_policy(self._options.get("max_retries"))
        send = partial(requester.open_body, request, RESUME_OK)
        gate = SyncGate(self._client.governor, self._lane)  # each read (a resume too) is a new request
        self._response = with_retries_sync(send, policy, [], self._options.get("on_retry"), gate)
        self.request_id = self._response.headers.get("request-id")
        try:
            whole = not self.point.answered(self._response.status_code, self._response.headers)
        except BaseException:
            self.close()
            raise
        if whole:
            self.close()
        else:
            self._chunks = self._response.iter_bytes()

    def close(self) -> None:
        self._done = True
        self._close_response()

    def _close_response(self) -> None:
        response, self._response, self._chunks = self._response, None, None
        if response is not None:
            response.close()


class SyncBatchResults:
    """``AsyncBatchResults`` for the sync client: ``with ... as results: for result in results``."""

    def __init__(
        self,
        locate: Callable[[], MessageBatch],
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
        self._body: _SyncResumableBody | None = None
        self._done = False

    @property
    def resumes(self) -> int:
        """How many times a broken read of the results was resumed."""
        return self._body.point.resumes if self._body is not None else 0

    def __iter__(self) -> SyncBatchResults:
        return self

    def __next__(self) -> BatchResult:
        while not self._ready:
            if self._done:
                raise StopIteration
            try:
                self._advance()
            except BaseException:
                self.close()
                raise
        return self._ready.popleft()

    def __enter__(self) -> SyncBatchResults:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading: the connection is closed, the results not yet read are dropped."""
        self._ready.clear()
        self._done = True
        if self._body is not None:
            self._body.close()

    def _advance(self) -> None:
        if self._body is None:
            self.batch = self._locate()
            path = results_path(self.batch, self._client.base_url)
            options = call_request_options(self._options)
            self._body = _SyncResumableBody(self._client, BATCHES_LANE, path, options, self._options)
        data = self._body.read()
        if data is None:
            self._ready.extend(self._decoder.end())
            self._done = True
        else:
            self._ready.extend(self._decoder.feed(data))


class SyncBatches(_SyncResource):
    """``Client.messages.batches``: the Message Batches API, as on ``AsyncClient`` (``Batches``)."""

    _lane = BATCHES_LANE

    def create(self, requests: Iterable[BatchRequest], **options: Unpack[BodyCallOptions]) -> MessageBatch:
        """Send a batch; checked before sending: at most 100,000 requests, unique ids, 256 MB."""
        return self._call(MessageBatch, "POST", BATCHES_PATH, batch_body(requests), options, limit=BATCH_LIMIT)

    def retrieve(self, batch_id: str, **options: Unpack[CallOptions]) -> MessageBatch:
        """The batch's current state."""
        return self._call(MessageBatch, "GET", resource_path(BATCHES_PATH, batch_id), None, options)

    def list(
        self,
        *,
        limit: int | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Iterator[MessageBatch]:
        """Every batch, newest first, ``limit`` to a page; a page is fetched when needed."""
        return self._list(BATCHES_PATH, MessageBatch, page_query(limit, after_id, before_id), _checked(options))

    def cancel(self, batch_id: str, **options: Unpack[CallOptions]) -> MessageBatch:
        """Ask the API to cancel the batch; it is ``canceling`` until the requests in flight are done."""
        return self._call(MessageBatch, "POST", resource_path(BATCHES_PATH, batch_id, "cancel"), None, options)

    def delete(self, batch_id: str, **options: Unpack[CallOptions]) -> DeletedMessageBatch:
        """Delete an ended batch (a batch in progress must be canceled first)."""
        return self._call(DeletedMessageBatch, "DELETE", resource_path(BATCHES_PATH, batch_id), None, options)

    def results(self, batch: str | MessageBatch, **options: Unpack[CallOptions]) -> SyncBatchResults:
        """The results of an ended batch, one ``BatchResult`` per request, in any order (see ``AsyncBatchResults``)."""

        def locate() -> MessageBatch:
            if isinstance(batch, MessageBatch) and batch.results_url is not None:
                return batch
            return self.retrieve(batch if isinstance(batch, str) else batch.id, **options)

        return SyncBatchResults(locate, self._client, _checked(options))

    def wait(
        self,
        batch_id: str,
        *,
        poll_interval: float = 1.0,
        max_interval: float = 60.0,
        timeout: float | None = None,
        on_progress: Hook[MessageBatch] | None = None,
        **options: Unpack[PollOptions],
    ) -> MessageBatch:
        """Poll until the batch has ended, and return it (see ``Batches.wait``).

        ``timeout`` is checked between polls: a poll in flight is bounded by the request timeout.
        """
        check_sync_hook("on_progress", on_progress)
        schedule = PollSchedule(poll_interval, max_interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: MessageBatch | None = None
        while True:
            last = self.retrieve(batch_id, **options)
            call_hook_sync(on_progress, last)
            if last.processing_status == "ended":
                return last
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise wait_timeout_error(batch_id, timeout, last)
            time.sleep(schedule.next_delay(remaining))

    def run(
        self,
        requests: Iterable[BatchRequest],
        *,
        poll_interval: float = 1.0,
        max_interval: float = 60.0,
        timeout: float | None = None,
        on_progress: Hook[MessageBatch] | None = None,
        **options: Unpack[PollOptions],
    ) -> SyncBatchResults:
        """Create a batch, wait for it to end, and read its results (see ``Batches.run``)."""
        batch_body(requests := list(requests))  # refuse bad requests now, not at the first result
        check_sync_hook("on_progress", on_progress)
        _checked(options)

        def locate() -> MessageBatch:
            created = self.create(requests, **options)
            return self.wait(
                created.id,
                poll_interval=poll_interval,
                max_interval=max_interval,
                timeout=timeout,
                on_progress=on_progress,
                **options,
            )

        return SyncBatchResults(locate, self._client, options)


class SyncFiles(_SyncResource):
    """``Client.files`` (also ``Client.beta.files``): the Files API, as on ``AsyncClient`` (``Files``)."""

    _lane = FILES_LANE

    def _options(self, options: Mapping[str, Any], query: Mapping[str, str | int] | None = None) -> RequestOptions:
        return call_request_options(options, betas=[FILES_BETA], query=query)

    def upload(
        self,
        file: str | os.PathLike[str] | IO[bytes],
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        **options: Unpack[CallOptions],
    ) -> FileMetadata:
        """Upload a file (a path, or a seekable binary file object), streamed; refused before sending past 500 MB."""
        if isinstance(file, str | os.PathLike):
            with open_upload(file) as opened:
                return self._upload(opened, filename, mime_type, options)
        return self._upload(file, filename, mime_type, options)

    def _upload(
        self, file: IO[bytes], filename: str | None, mime_type: str | None, options: Mapping[str, Any]
    ) -> FileMetadata:
        upload = upload_for(file, filename, mime_type)
        return self._call(FileMetadata, "POST", FILES_PATH, None, options, upload=upload, limit=FILE_LIMIT)

    def list(
        self,
        *,
        limit: int | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Iterator[FileMetadata]:
        """Every file, ``limit`` to a page; a page is fetched when needed."""
        return self._list(FILES_PATH, FileMetadata, page_query(limit, after_id, before_id), _checked(options))

    def retrieve(self, file_id: str, **options: Unpack[CallOptions]) -> FileMetadata:
        """A file's metadata (``retrieve_metadata`` is the same call, under the official SDK's name)."""
        return self._call(FileMetadata, "GET", resource_path(FILES_PATH, file_id), None, options)

    retrieve_metadata = retrieve

    def delete(self, file_id: str, **options: Unpack[CallOptions]) -> DeletedFile:
        """Delete a file."""
        return self._call(DeletedFile, "DELETE", resource_path(FILES_PATH, file_id), None, options)

    def download(
        self,
        file_id: str,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = FILE_LIMIT.size,
        **options: Unpack[CallOptions],
    ) -> Path:
        """Save a downloadable file's content at ``path``, streamed in chunks (see ``Files.download``)."""
        content = resource_path(FILES_PATH, file_id, "content")
        body = _SyncResumableBody(self._client, FILES_LANE, content, self._options(_checked(options)), options)
        target = download_target(path, max_bytes)
        try:
            try:  # body.read() raises only streamkit errors: an OSError is the local file's
                with open(target.partial, "wb") as out:
                    while (data := body.read()) is not None:
                        target.count(len(data), body.request_id)
                        out.write(data)
            except OSError as exc:
                raise target.error(exc) from exc
            target.finish()
        finally:
            body.close()
            target.discard()
        return target.path


class SyncBeta:
    """``Client.beta``: where the official SDK puts the beta endpoints (``files``)."""

    def __init__(self, files: SyncFiles) -> None:
        self.files = files
