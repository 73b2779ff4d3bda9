"""The objects of the Message Batches, token counting and Files endpoints, and a batch's results.

Plain data and parsing, no I/O.  The API objects allow extra fields (the API adds fields
without notice) and carry the request id and headers of the response they came from, as
``Message`` does.  A line of a batch's results file becomes a ``BatchResult``; an errored
request's error is a streamkit error of its kind (``InvalidRequestError`` ...), built by
the same machinery as every other one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Required, TypeAlias, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import from_json

from ._errors import APIError, ProtocolError, StreamkitError, result_error
from ._message import APIObject, Message
from ._params import MessageParams


class MessageCreateParams(MessageParams, total=False):
    """Every parameter of a Messages request, ``model``, ``max_tokens`` and ``messages`` required: a batch request's."""

    model: Required[str]
    max_tokens: Required[int]
    messages: Required[Iterable[Mapping[str, Any]]]


class BatchRequest(TypedDict):
    """One request of a batch: ``custom_id`` (unique in the batch: results come in any order) and its ``params``."""

    custom_id: str
    params: MessageCreateParams


class MessageBatchRequestCounts(BaseModel):
    """How many of a batch's requests are in each state (all but ``processing`` final once it ended)."""

    model_config = ConfigDict(extra="allow")
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0


class MessageBatch(APIObject):
    """A Message Batch: its status, its request counts, and where its results are once it ended."""

    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchRequestCounts
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    archived_at: datetime | None = None
    results_url: str | None = None


class DeletedMessageBatch(APIObject):
    """The answer to deleting a batch."""

    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"


class FileMetadata(APIObject):
    """A file stored by the Files API; ``downloadable``: whether its content can be downloaded."""

    id: str
    type: Literal["file"] = "file"
    filename: str
    mime_type: str
    size_bytes: int
    created_at: datetime
    downloadable: bool = False


class DeletedFile(APIObject):
    """The answer to deleting a file."""

    id: str
    type: Literal["file_deleted"] = "file_deleted"


class MessageTokensCount(APIObject):
    """The answer of token counting: the tokens the request's input would take."""

    input_tokens: int


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageBatchSucceededResult:
    """The request succeeded: ``message`` is its reply."""

    message: Message
    type: Literal["succeeded"] = "succeeded"


@dataclass(frozen=True, slots=True)
class MessageBatchErroredResult:
    """The request failed: ``error`` is a streamkit error of its kind (``InvalidRequestError`` ...), neither phase."""

    error: APIError
    type: Literal["errored"] = "errored"


@dataclass(frozen=True, slots=True)
class MessageBatchCanceledResult:
    """The batch was canceled before this request was processed."""

    type: Literal["canceled"] = "canceled"


@dataclass(frozen=True, slots=True)
class MessageBatchExpiredResult:
    """The batch expired (24 hours) before this request was processed."""

    type: Literal["expired"] = "expired"


@dataclass(frozen=True, slots=True)
class MessageBatchUnknownResult:
    """A result type this version does not know, kept as sent (``data``: the whole ``result`` object)."""

    type: str
    data: Mapping[str, Any]


MessageBatchResult: TypeAlias = (
    MessageBatchSucceededResult
    | MessageBatchErroredResult
    | MessageBatchCanceledResult
    | MessageBatchExpiredResult
    | MessageBatchUnknownResult
)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One line of a batch's results: the request's ``custom_id`` and its ``result``."""

    custom_id: str
    result: MessageBatchResult


def parse_result(line: bytes) -> BatchResult:
    """One line of a results file; ``ProtocolError`` if it is not a result."""
    try:
        data = from_json(line)
    except ValueError as exc:
        raise ProtocolError(f"a line of the batch results is not JSON: {exc}", data=line) from exc
    result = data.get("result") if isinstance(data, dict) else None
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    if not isinstance(custom_id, str) or not isinstance(result, dict) or not isinstance(result.get("type"), str):
        raise ProtocolError("a line of the batch results has no custom_id, or no result with a type", data=line)
    kind = result["type"]
    if kind == "succeeded":
        try:
            message = Message.model_validate(result.get("message"))
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise ProtocolError(f"the result of {custom_id!r} is not a Message: {msg}", data=line) from exc
        return BatchResult(custom_id, MessageBatchSucceededResult(message))
    if kind == "errored":
        return BatchResult(custom_id, MessageBatchErroredResult(result_error(result.get("error"))))
    if kind == "canceled":
        return BatchResult(custom_id, MessageBatchCanceledResult())
    if kind == "expired":
        return BatchResult(custom_id, MessageBatchExpiredResult())
    return BatchResult(custom_id, MessageBatchUnknownResult(kind, result))


# -- batch errors that are not API errors -------------------------------------------


class ResultsNotReadyError(StreamkitError):
    """The batch has no results yet (it has not ended): ``batch`` is the state that says so."""

    def __init__(self, message: str, *, batch: MessageBatch) -> None:
        super().__init__(message, request_id=batch.request_id)
        self.batch = batch


class BatchWaitTimeoutError(StreamkitError, TimeoutError):
    """``wait()`` ran out of time before the batch ended; ``batch`` is its last state seen (None: none yet)."""

    def __init__(self, message: str, *, batch: MessageBatch | None) -> None:
        super().__init__(message, request_id=batch.request_id if batch is not None else None)
        self.batch = batch
