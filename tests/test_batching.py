"""The sans-I/O decisions of the batch and files calls: results location, page cursors, the poll schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamkit import MessageBatch, MessageBatchRequestCounts, ProtocolError, RequestBodyError, ResultsNotReadyError
from streamkit._batching import Page, PollSchedule, batch_body, next_page_query, resource_path, results_path

BASE = "https://proxy.example/anthropic"


def batch(results_url: str | None, status: str = "ended") -> MessageBatch:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return MessageBatch.model_validate(
        {
            "id": "msgbatch_1",
            "processing_status": status,
            "request_counts": MessageBatchRequestCounts().model_dump(),
            "created_at": now,
            "expires_at": now,
            "results_url": results_url,
        }
    )


def test_results_are_read_on_the_clients_own_host() -> None:
    assert results_path(batch(f"{BASE}/v1/messages/batches/msgbatch_1/results"), BASE) == (
        "/v1/messages/batches/msgbatch_1/results"
    )
    # Another host (the API's own URL, through a proxy): its path on the client's base URL, never the key elsewhere.
    assert results_path(batch("https://api.anthropic.com/v1/messages/batches/msgbatch_1/results?x=1"), BASE) == (
        "/v1/messages/batches/msgbatch_1/results?x=1"
    )
    with pytest.raises(ResultsNotReadyError) as caught:
        results_path(batch(None, "canceling"), BASE)
    assert caught.value.message == ("batch msgbatch_1 has no results yet: it is canceling (wait() until it has ended)")
    assert caught.value.batch.processing_status == "canceling"


@pytest.mark.parametrize("hostile", ["@evil.example/x", ".evil.example/x", "evil", "http://[::1"])
def test_a_results_url_that_would_change_the_host_is_a_protocol_error(hostile: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        results_path(batch(hostile), "http://127.0.0.1:8080")
    assert caught.value.message == (
        f"batch msgbatch_1's results_url {hostile!r} does not lead to a path on http://127.0.0.1:8080: not read "
        "(the API key is sent to the configured host only)"
    )
    # An absolute URL elsewhere is read at its path on the client's own host, dot segments and all.
    assert results_path(batch("https://evil.example/v1/.."), BASE) == "/v1/.."


def test_ids_are_quoted_into_one_path_segment() -> None:
    assert resource_path("/v1/files", "file_1") == "/v1/files/file_1"
    assert resource_path("/v1/files", "../x?y", "content") == "/v1/files/..%2Fx%3Fy/content"


def test_the_next_page_goes_on_from_the_right_end() -> None:
    page = Page(data=[], has_more=True, first_id="f", last_id="l")
    assert next_page_query({"limit": 2}, page) == {"limit": 2, "after_id": "l"}
    assert next_page_query({"limit": 2, "after_id": "a"}, page) == {"limit": 2, "after_id": "l"}
    assert next_page_query({"before_id": "b"}, page) == {"before_id": "f"}
    assert next_page_query({}, Page(data=[], has_more=False, first_id="f", last_id="l")) is None
    assert next_page_query({}, Page(data=[], has_more=True)) is None  # no cursor: nothing to go on from


def test_the_poll_schedule_grows_by_half_to_its_cap_jittered_and_within_the_deadline() -> None:
    schedule = PollSchedule(1.0, 3.0)
    intervals = []
    for _ in range(6):
        intervals.append(schedule.interval)
        delay = schedule.next_delay(None)
        assert intervals[-1] / 2 <= delay <= intervals[-1]
    assert intervals == [1.0, 1.5, 2.25, 3.0, 3.0, 3.0]
    assert schedule.next_delay(0.1) <= 0.1
    assert schedule.next_delay(-1.0) == 0.0
    with pytest.raises(RequestBodyError) as caught:
        PollSchedule(0, 1)
    assert str(caught.value) == "poll_interval must be > 0 and max_interval >= poll_interval (got 0, 1)"
    with pytest.raises(RequestBodyError):
        PollSchedule(2, 1)


def test_a_batch_request_without_its_fields_is_refused_before_sending() -> None:
    with pytest.raises(RequestBodyError) as caught:
        batch_body([{"custom_id": "a", "params": {"model": "m", "messages": []}}])  # type: ignore[typeddict-item]
    assert str(caught.value) == "request 0 of the batch has no max_tokens: nothing was sent"
    with pytest.raises(RequestBodyError) as caught:
        batch_body([{"custom_id": "a", "params": {"model": "m", "max_tokens": 1, "messages": []}}, {}])  # type: ignore[typeddict-item]
    assert str(caught.value) == "request 1 of the batch has no custom_id, params: nothing was sent"


def test_the_batch_files_and_token_counting_names_are_public_with_docstrings() -> None:
    import streamkit

    names = [
        "AsyncBatchResults", "Batches", "Beta", "BatchRequest", "BatchResult", "BatchWaitTimeoutError",
        "BodyCallOptions", "CallOptions", "CountTokensParams", "DeletedFile", "DeletedMessageBatch",
        "FileMetadata", "Files", "MessageBatch", "MessageBatchCanceledResult", "MessageBatchErroredResult",
        "MessageBatchExpiredResult", "MessageBatchRequestCounts", "MessageBatchSucceededResult",
        "MessageBatchUnknownResult", "MessageCreateParams", "MessageTokensCount", "PollOptions",
        "ResultsNotReadyError", "SyncBatchResults", "SyncBatches", "SyncBeta", "SyncFiles",
    ]  # fmt: skip
    for name in names:
        assert name in streamkit.__all__, name
        assert getattr(streamkit, name).__doc__, name
    assert "MessageBatchResult" in streamkit.__all__
    client = streamkit.Client(api_key="k", base_url="http://127.0.0.1:9")
    assert client.beta.files is client.files and type(client.messages.batches) is streamkit.SyncBatches
    client.close()
