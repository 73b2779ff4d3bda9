"""client.messages.batches across real sockets to the mock server, on both clients."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from _endpoints import ErringServer, Read, call, close_clients  # noqa: F401 - the fixture

import streamkit
from streamkit import (
    BatchRequest,
    BatchWaitTimeoutError,
    DeletedMessageBatch,
    InvalidRequestError,
    MessageBatch,
    MessageBatchCanceledResult,
    MessageBatchErroredResult,
    MessageBatchExpiredResult,
    MessageBatchRequestCounts,
    MessageBatchSucceededResult,
    OverloadedError,
    RateLimitStatusError,
    RequestBodyError,
    RequestTooLargeError,
    RequestTooLargeStatusError,
    ResultsNotReadyError,
    RetryInfo,
)
from streamkit.testing import MockServer, Reply

pytestmark = pytest.mark.anyio

BOTH_WORLDS = ("call",)
MODEL = "claude-mock-1"
PATH = "/v1/messages/batches"


def request(custom_id: str, text: str = "Hello") -> BatchRequest:
    return {
        "custom_id": custom_id,
        "params": {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]},
    }


def counts(**changes: int) -> MessageBatchRequestCounts:
    return MessageBatchRequestCounts(**changes)


async def test_create_retrieve_cancel_and_delete() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        created = await call(server, lambda c: c.messages.batches.create([request("a"), request("b")]))
        assert type(created) is MessageBatch
        assert re.fullmatch(r"msgbatch_\w{24}", created.id)
        assert (created.processing_status, created.request_counts) == ("in_progress", counts(processing=2))
        assert (created.ended_at, created.results_url) == (None, None)
        assert (created.expires_at - created.created_at).total_seconds() == 24 * 3600
        assert created.request_id is not None and created.request_id.startswith("req_")
        sent = server.requests[-1]
        assert (sent.method, sent.path) == ("POST", PATH)
        assert sent.json == {
            "requests": [
                {
                    "custom_id": "a",
                    "params": {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
                },
                {
                    "custom_id": "b",
                    "params": {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
                },
            ]
        }
        assert await call(server, lambda c: c.messages.batches.retrieve(created.id)) == created
        canceling = await call(server, lambda c: c.messages.batches.cancel(created.id))
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        assert server.requests[-1].path == f"{PATH}/{created.id}/cancel"
        with pytest.raises(InvalidRequestError) as caught:
            await call(server, lambda c: c.messages.batches.delete(created.id))
        assert caught.value.status_code == 400
        server.batches.finish(created.id)
        ended = await call(server, lambda c: c.messages.batches.retrieve(created.id))
        assert (ended.processing_status, ended.request_counts) == ("ended", counts(canceled=2))
        deleted = await call(server, lambda c: c.messages.batches.delete(created.id))
        assert deleted == DeletedMessageBatch(id=created.id, type="message_batch_deleted")
        assert (server.requests[-1].method, server.requests[-1].path) == ("DELETE", f"{PATH}/{created.id}")


async def test_list_reads_every_page_lazily_forwards_and_backwards() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        ids = [(await call(server, lambda c: c.messages.batches.create([request("a")]))).id for _ in range(5)]
        newest_first = ids[::-1]
        before = len(server.requests)
        listed = await call(server, lambda c: c.messages.batches.list(limit=2))
        assert [batch.id for batch in listed] == newest_first
        pages = server.requests[before:]
        assert [r.query for r in pages] == [
            "limit=2",
            f"limit=2&after_id={newest_first[1]}",
            f"limit=2&after_id={newest_first[3]}",
        ]
        backwards = await call(server, lambda c: c.messages.batches.list(limit=2, before_id=newest_first[4]))
        # Read backwards, the pages come nearest first, each in the list's order.
        assert [batch.id for batch in backwards] == [*newest_first[2:4], *newest_first[0:2]]
        assert server.requests[-1].query == f"limit=2&before_id={newest_first[2]}"
        after = await call(server, lambda c: c.messages.batches.list(after_id=newest_first[2]))
        assert [batch.id for batch in after] == newest_first[3:]


async def test_list_fetches_a_page_only_when_the_one_before_is_read() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        for _ in range(3):
            await call(server, lambda c: c.messages.batches.create([request("a")]))
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
            before = len(server.requests)
            listing = client.messages.batches.list(limit=1)
            assert len(server.requests) == before
            await listing.__anext__()
            assert len(server.requests) == before + 1
            await listing.__anext__()
            assert len(server.requests) == before + 2


async def test_results_are_typed_one_per_request() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        server.batches.script(
            {"ok-*": Reply.text("Done."), "bad": Reply.error(400, message="no such tool"), "late": "expired"}
        )
        batch = await call(
            server, lambda c: c.messages.batches.create([request("ok-1"), request("bad"), request("late")])
        )
        with pytest.raises(ResultsNotReadyError) as caught:
            await call(server, lambda c: c.messages.batches.results(batch.id))
        assert caught.value.message == (
            f"batch {batch.id} has no results yet: it is in_progress (wait() until it has ended)"
        )
        server.batches.finish()
        read: Read = await call(server, lambda c: c.messages.batches.results(batch.id))
        assert read.batch is not None and read.batch.processing_status == "ended" and read.resumes == 0
        by_id = {result.custom_id: result.result for result in read.results}
        assert sorted(by_id) == ["bad", "late", "ok-1"]
        ok = by_id["ok-1"]
        assert isinstance(ok, MessageBatchSucceededResult) and ok.message.text == "Done."
        bad = by_id["bad"]
        assert isinstance(bad, MessageBatchErroredResult)
        assert type(bad.error) is InvalidRequestError
        assert (bad.error.message, bad.error.error_type) == ("no such tool", "invalid_request_error")
        assert by_id["late"] == MessageBatchExpiredResult()
        results_request = server.requests[-1]
        assert results_request.path == f"{PATH}/{batch.id}/results"
        assert results_request.headers["accept-encoding"] == "identity" and "range" not in results_request.headers


async def test_results_of_an_ended_batch_object_need_no_retrieve() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        server.batches.seconds_per_request = 0
        batch = await call(server, lambda c: c.messages.batches.create([request("a")]))
        ended = await call(server, lambda c: c.messages.batches.retrieve(batch.id))
        before = len(server.requests)
        read = await call(server, lambda c: c.messages.batches.results(ended))
        assert [r.custom_id for r in read.results] == ["a"]
        assert [r.path for r in server.requests[before:]] == [f"{PATH}/{batch.id}/results"]


async def test_a_cut_results_file_resumes_with_range_and_delivers_each_result_once() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        batch_id = server.batches.synthetic(40, 300)
        server.batches.cut_results(1000, times=3)  # three cuts in a row: each resumed read makes progress
        read = await call(server, lambda c: c.messages.batches.results(batch_id))
        assert [r.custom_id for r in read.results] == [f"synthetic-{i:010d}" for i in reversed(range(40))]
        assert read.resumes == 3
        ranges = [r.headers.get("range") for r in server.requests if r.path.endswith("/results")]
        assert ranges == [None, "bytes=1000-", "bytes=2000-", "bytes=3000-"]


async def test_a_cut_right_after_the_last_byte_loses_nothing_and_resumes_nothing() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        batch_id = server.batches.synthetic(3, 50)
        server.batches.cut_results(server.batches.results_size(batch_id))  # every byte, then the close
        read = await call(server, lambda c: c.messages.batches.results(batch_id))
        assert [r.custom_id for r in read.results] == [f"synthetic-{i:010d}" for i in (2, 1, 0)]
        assert read.resumes == 0
        assert [r.headers.get("range") for r in server.requests if r.path.endswith("/results")] == [None]


async def test_a_results_file_that_keeps_breaking_is_given_up_after_max_resumes() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        batch_id = server.batches.synthetic(5, 400)
        server.batches.cut_results(0, times=None)  # headers, then nothing, every time
        with pytest.raises(streamkit.APIConnectionError) as caught:
            await call(server, lambda c: c.messages.batches.results(batch_id), max_resumes=2)
        assert caught.value.message.startswith("the connection failed while reading the response body")
        assert sum(r.path.endswith("/results") for r in server.requests) == 3


@pytest.mark.parametrize("hostile", ["@{evil}/x", ".evil.example/x", "http://{evil}/v1/.."])
async def test_a_results_url_that_leads_to_another_host_is_refused_and_nothing_is_sent(hostile: str) -> None:
    async with MockServer(Reply.text("Hi")) as server, MockServer(Reply.text("Hi")) as evil:
        server.batches.seconds_per_request = 0
        batch = await call(server, lambda c: c.messages.batches.create([request("a")]))
        ended = await call(server, lambda c: c.messages.batches.retrieve(batch.id))
        # "@127.0.0.1:<port>/x" after base_url would be the userinfo of a URL on the evil server.
        url = hostile.format(evil=evil.base_url.removeprefix("http://"))
        forged = ended.model_copy(update={"results_url": url})
        before = len(server.requests)
        if url.startswith("http://"):  # an absolute URL: only its path is taken, on our own host
            with pytest.raises(streamkit.APIStatusError):
                await call(server, lambda c: c.messages.batches.results(forged))
            assert server.requests[before:] != []
        else:
            with pytest.raises(streamkit.ProtocolError) as caught:
                await call(server, lambda c: c.messages.batches.results(forged))
            assert caught.value.message == (
                f"batch {batch.id}'s results_url {url!r} does not lead to a path on {server.base_url}: not read "
                "(the API key is sent to the configured host only)"
            )
            assert server.requests[before:] == []
        assert evil.requests == [] and evil.refused == []


async def test_an_early_exit_closes_the_results_connection() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        batch_id = server.batches.synthetic(2000, 200)
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
            async with client.messages.batches.results(batch_id) as results:
                first = await results.__anext__()
                assert first.custom_id == "synthetic-0000001999"
            await server.wait_connections(0)
            with pytest.raises(StopAsyncIteration):
                await results.__anext__()


async def test_wait_polls_with_growing_intervals_and_reports_progress() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        server.batches.advance_per_poll = 1.0  # each request takes a second of the mock's clock
        batch = await call(server, lambda c: c.messages.batches.create([request(f"r{i}") for i in range(3)]))
        seen: list[MessageBatchRequestCounts] = []
        ended = await call(
            server,
            lambda c: c.messages.batches.wait(
                batch.id, poll_interval=0.001, max_interval=0.004, on_progress=lambda b: seen.append(b.request_counts)
            ),
        )
        assert ended.processing_status == "ended" and ended.request_counts == counts(succeeded=3)
        assert seen[-1] == counts(succeeded=3)
        assert seen[0] == counts(processing=3)
        assert len(seen) >= 2


async def test_wait_gives_up_at_its_timeout_with_the_last_state() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        batch = await call(server, lambda c: c.messages.batches.create([request("a")]))
        with pytest.raises(BatchWaitTimeoutError) as caught:
            await call(server, lambda c: c.messages.batches.wait(batch.id, poll_interval=0.01, timeout=0.3))
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.batch is not None and caught.value.batch.processing_status == "in_progress"
        assert caught.value.message == f"batch {batch.id} had not ended after 0.3 s (it is in_progress)"


async def test_wait_is_cancelled_cleanly_by_a_cancel_scope() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
            batch = await client.messages.batches.create([request("a")])
            polled = anyio.Event()
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def wait() -> None:
                        await client.messages.batches.wait(
                            batch.id, poll_interval=60, on_progress=lambda b: polled.set()
                        )

                    tg.start_soon(wait)
                    await polled.wait()
                    scope.cancel()
            assert scope.cancelled_caught
            assert sum(r.path == f"{PATH}/{batch.id}" for r in server.requests) == 1


async def test_polls_and_results_retry_a_429_and_a_529_after_retry_after() -> None:
    async with ErringServer(Reply.text("Hi")) as server:
        server.batches.seconds_per_request = 0
        batch = await call(server, lambda c: c.messages.batches.create([request("a")]))
        server.errors.extend(
            [(429, "rate_limit_error", {"retry-after": "0.01"}), (529, "overloaded_error", {"retry-after-ms": "10"})]
        )
        retries: list[RetryInfo] = []
        ended = await call(
            server, lambda c: c.messages.batches.wait(batch.id, poll_interval=0.01, on_retry=retries.append)
        )
        assert ended.processing_status == "ended"
        assert [(r.attempt, type(r.error), r.delay) for r in retries] == [
            (1, RateLimitStatusError, 0.01),
            (2, streamkit.OverloadedStatusError, 0.01),
        ]
        server.errors.append((529, "overloaded_error", {"retry-after": "0"}))
        read = await call(server, lambda c: c.messages.batches.results(ended))
        assert [r.custom_id for r in read.results] == ["a"]
        server.errors.extend([(529, "overloaded_error", {"retry-after": "0"})] * 3)
        with pytest.raises(OverloadedError) as caught:
            await call(server, lambda c: c.messages.batches.retrieve(batch.id), max_retries=2)
        assert (caught.value.status_code, caught.value.message) == (529, "scripted 529")
        assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")


async def test_run_creates_waits_and_reads_in_one_call() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        server.batches.advance_per_poll = 5.0
        server.batches.script({"x": "canceled", "a": Reply.text("Hi")})
        progress: list[str] = []
        read = await call(
            server,
            lambda c: c.messages.batches.run(
                [request("a"), request("x")],
                poll_interval=0.001,
                on_progress=lambda b: progress.append(b.processing_status),
            ),
        )
        assert read.batch is not None and read.batch.request_counts == counts(succeeded=1, canceled=1)
        assert progress[-1] == "ended"
        by_id = {r.custom_id: r.result for r in read.results}
        assert isinstance(by_id["a"], MessageBatchSucceededResult) and by_id["a"].message.text == "Hi"
        assert by_id["x"] == MessageBatchCanceledResult()


async def test_a_batch_over_the_cdn_limit_is_the_html_413_as_request_too_large() -> None:
    async with MockServer(Reply.text("Hi"), size_limits={"batches": 2000}) as server:
        with pytest.raises(RequestTooLargeStatusError) as caught:
            await call(server, lambda c: c.messages.batches.create([request(f"r{i}", "x" * 100) for i in range(20)]))
        error = caught.value
        assert (error.status_code, error.error_type, error.request_id) == (413, "request_too_large", None)
        assert error.message == (
            "HTTP 413: 413 Request Entity Too Large (the body is not JSON: it likely came from a proxy or CDN in "
            "front of the API)"
        )
        assert [r.status for r in server.refused] == [413]


async def test_bad_batches_are_refused_before_sending() -> None:
    async with MockServer(Reply.text("Hi")) as server:
        with pytest.raises(RequestBodyError) as duplicate:
            await call(server, lambda c: c.messages.batches.create([request("a"), request("b"), request("a")]))
        assert duplicate.value.message == (
            "custom_id 'a' is used by two requests of the batch: results are matched to requests by custom_id, "
            "so each must be unique; nothing was sent"
        )
        many = iter([request("same")] * 100_001)  # counted before anything else is checked
        with pytest.raises(RequestTooLargeError) as too_many:
            await call(server, lambda c: c.messages.batches.create(many))
        assert too_many.value.message == (
            "a batch holds at most 100,000 requests, not 100,001: it was not sent "
            "(split the requests into several batches)"
        )
        bad: Any = {"custom_id": "a", "params": {"model": "m", "max_tokens": 1, "messages": [], "temprature": 1}}
        with pytest.raises(TypeError):
            await call(server, lambda c: c.messages.batches.create([bad]))
        assert server.requests == [] and server.refused == []


async def test_the_batch_size_guard_counts_the_encoded_body() -> None:
    from streamkit._request import BATCH_LIMIT, BodyLimit, RequestOptions

    client = streamkit.Client(api_key="k", base_url="http://127.0.0.1:9")
    body = {"requests": [{"custom_id": "a", "params": {"text": "é" * 60}}]}
    size = len(b'{"requests":[{"custom_id":"a","params":{"text":"' + "é".encode() * 60 + b'"}}]}')
    with pytest.raises(RequestTooLargeError) as caught:
        client._requester.build(PATH, body, RequestOptions(), limit=BodyLimit(100, BATCH_LIMIT.advice))
    assert caught.value.message == (
        f"the request body is {size:,} bytes, over the API's limit of 100 bytes: it was not sent "
        "(split the requests into several batches)"
    )
    assert BATCH_LIMIT.size == 256 * 1024 * 1024
    client.close()
