"""The rate governor on token counting, batches and files (lanes of their own), and in a resume's record."""

from __future__ import annotations

import io
import time
from collections import Counter
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from _endpoints import ErringServer, call, close_clients  # noqa: F401 - the fixture
from conftest import WORLD, client_for, in_thread, sync_client_for

import streamkit
from streamkit import Governor, GovernorTimeoutError, RateLimitStatusError, ResumeInfo, RetryInfo
from streamkit._governor import BATCHES_LANE, COUNT_TOKENS_LANE, Outcome
from streamkit.testing import Fault, Limits, MockServer, RateLimiter, Reply

BOTH_WORLDS = ("call", "consume")
MODEL = "claude-mock-1"
USER = [{"role": "user", "content": "Hello"}]
BATCHES = "/v1/messages/batches"


def request(custom_id: str) -> streamkit.BatchRequest:
    return {"custom_id": custom_id, "params": {"model": MODEL, "max_tokens": 64, "messages": USER}}


@pytest.mark.anyio
async def test_a_caller_held_in_one_lane_never_holds_up_another_lane() -> None:
    governor = Governor()
    lease, _ = await governor.admit(BATCHES_LANE, 0, 0, retry=False)
    await governor.settle(BATCHES_LANE, lease, Outcome("rate_limited", retry_after=30.0))
    async with anyio.create_task_group() as group:
        group.start_soon(partial(governor.admit, BATCHES_LANE, 0, 0, retry=False))
        while governor.snapshot(endpoint="batches").queued == 0:  # noqa: ASYNC110 - no event tells it joined its line
            await anyio.sleep(0.001)
        with anyio.fail_after(1.0):
            assert await governor.admit(MODEL, 10, 100, retry=False) == ("2", 0.0)
            assert await governor.admit(COUNT_TOKENS_LANE, 0, 0, retry=False) == ("3", 0.0)
        assert (governor.snapshot(endpoint="batches").queued, governor.snapshot(MODEL).queued) == (1, 0)
        group.cancel_scope.cancel()
    assert governor.snapshot(endpoint="batches").queued == 0


# -- over real sockets ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_endpoint_is_admitted_in_its_own_lane_and_light_traffic_never_waits(tmp_path: Path) -> None:
    governor = Governor()
    governed = {"governor": governor}
    async with MockServer(Reply.text("Hi")) as server:
        server.batches.seconds_per_request = 0
        counted = await call(server, lambda c: c.messages.count_tokens(model=MODEL, messages=USER), **governed)
        assert counted.input_tokens == 3 + 4 + 3
        batch = await call(server, lambda c: c.messages.batches.create([request("a"), request("b")]), **governed)
        ended = await call(server, lambda c: c.messages.batches.wait(batch.id, poll_interval=0.01), **governed)
        assert len(await call(server, lambda c: c.messages.batches.list(limit=1), **governed)) == 1
        read = await call(server, lambda c: c.messages.batches.results(ended), **governed)
        assert sorted(result.custom_id for result in read.results) == ["a", "b"]
        await call(server, lambda c: c.messages.batches.delete(batch.id), **governed)
        meta = await call(server, lambda c: c.files.upload(io.BytesIO(b"abc"), filename="a.txt"), **governed)
        assert [f.id for f in await call(server, lambda c: c.files.list(), **governed)] == [meta.id]
        await call(server, lambda c: c.files.retrieve(meta.id), **governed)
        await call(server, lambda c: c.files.delete(meta.id), **governed)
    paths = Counter(
        "count_tokens" if r.path.endswith("count_tokens") else "batches" if r.path.startswith(BATCHES) else "files"
        for r in server.requests
    )
    assert paths["count_tokens"] == 1 and paths["files"] == 4 and paths["batches"] >= 5  # wait() polled until ended
    for endpoint in ("count_tokens", "batches", "files"):
        snapshot = governor.snapshot(endpoint=endpoint)
        assert (snapshot.admitted, snapshot.in_flight, snapshot.queued, snapshot.blocked_for) == (
            paths[endpoint],
            0,
            0,
            0.0,
        )
        assert (snapshot.requests_per_minute, snapshot.output_tokens_per_minute) == (None, None)
    assert (governor.snapshot(MODEL).admitted, governor.snapshot().waited) == (0, 0.0)
    assert governor.snapshot().model is None  # the default is the last model's lane: none was asked


@pytest.mark.anyio
async def test_a_429_on_count_tokens_is_retried_after_its_retry_after_and_the_models_lane_is_untouched() -> None:
    governor = Governor()
    async with ErringServer(Reply.text("Hi")) as server:
        server.errors.append((429, "rate_limit_error", {"retry-after": "0.05"}))
        retries: list[RetryInfo] = []
        counted = await call(
            server,
            lambda c: c.messages.count_tokens(model=MODEL, messages=USER, on_retry=retries.append),
            governor=governor,
        )
        message = await call(
            server, lambda c: c.messages.create(model=MODEL, max_tokens=9, messages=USER), governor=governor
        )
    assert (counted.input_tokens, message.text) == (10, "Hi")
    assert [(r.attempt, type(r.error), r.delay, r.governor_wait) for r in retries] == [
        (1, RateLimitStatusError, 0.05, 0.0)
    ]
    counting, model = governor.snapshot(endpoint="count_tokens"), governor.snapshot(MODEL)
    assert (counting.admitted, counting.in_flight, counting.rate, counting.retries_refused) == (2, 0, 0.5, 0)
    assert counting.retry_budget == pytest.approx(9.0, abs=0.05)  # full, less the retry
    assert counting.seconds_since_429 is not None and counting.blocked_for == 0.0
    assert (model.admitted, model.in_flight, model.rate, model.seconds_since_429, model.retry_budget) == (
        1,
        0,
        1.0,
        None,
        10.0,
    )


@pytest.mark.anyio
async def test_the_count_tokens_limit_is_learned_from_its_answers_apart_from_the_models() -> None:
    governor = Governor(pool_timeout=1.0)
    limits = RateLimiter(Limits(requests_per_minute=1000), endpoints={"count_tokens": 1})
    async with MockServer(Reply.text("Hi"), limits=limits) as server:
        first = time.monotonic()
        await call(server, lambda c: c.messages.count_tokens(model=MODEL, messages=USER), governor=governor)
        with pytest.raises(GovernorTimeoutError) as caught:  # its one request a minute is spent: not sent
            await call(server, lambda c: c.messages.count_tokens(model=MODEL, messages=USER), governor=governor)
        apart = time.monotonic() - first  # at most this long between the two admissions
        message = await call(
            server, lambda c: c.messages.create(model=MODEL, max_tokens=9, messages=USER), governor=governor
        )
    assert message.text == "Hi"
    assert 60.0 - apart - 0.05 <= caught.value.wait <= 60.0  # one a minute, less the refill since the first
    assert [r.path for r in server.requests] == ["/v1/messages/count_tokens", "/v1/messages"]
    assert limits.counts == Counter(admitted=2)
    counting, model = governor.snapshot(endpoint="count_tokens"), governor.snapshot(MODEL)
    assert (counting.requests_per_minute, counting.input_tokens_per_minute, counting.admitted) == (1.0, None, 1)
    assert counting.requests_remaining == pytest.approx(0.0, abs=0.01)
    assert (model.requests_per_minute, model.admitted, model.in_flight) == (1000.0, 1, 0)


@pytest.mark.anyio
async def test_a_model_named_like_an_endpoint_keeps_a_lane_of_its_own() -> None:
    governor = Governor(output_tokens_per_minute=600)
    async with MockServer(Reply.text("Hi", output_tokens=100)) as server:
        first = time.monotonic()
        message = await call(
            server, lambda c: c.messages.create(model="batches", max_tokens=300, messages=USER), governor=governor
        )
        await call(server, lambda c: c.messages.batches.create([request("a")]), governor=governor)
    model, batches = governor.snapshot("batches"), governor.snapshot(endpoint="batches")
    apart = time.monotonic() - first  # at least the time since the admission
    assert message.text == "Hi"
    assert (model.model, model.output_tokens_per_minute, model.admitted, model.in_flight) == ("batches", 600.0, 1, 0)
    # 300 reserved at admission, settled to the 100 used, plus what refilled since (10 a second).
    assert model.output_tokens_remaining is not None
    assert 500.0 <= model.output_tokens_remaining <= 500.0 + 10 * apart
    assert (batches.model, batches.output_tokens_per_minute, batches.output_tokens_remaining) == ("batches", None, None)
    assert (batches.admitted, batches.in_flight) == (1, 0)
    with pytest.raises(streamkit.StreamkitError) as caught:
        governor.snapshot(endpoint="messages")
    assert str(caught.value) == (
        "Governor.snapshot: endpoint= is one of count_tokens, batches, files (and no model with it), "
        "got endpoint='messages', model=None"
    )


@pytest.mark.anyio
async def test_the_mock_limits_the_batch_endpoints_requests_with_a_429() -> None:
    limits = RateLimiter(Limits(), endpoints={"batches": 2})
    async with MockServer(Reply.text("Hi"), limits=limits) as server:
        batch = await call(server, lambda c: c.messages.batches.create([request("a")]))
        await call(server, lambda c: c.messages.batches.retrieve(batch.id))
        with pytest.raises(RateLimitStatusError) as caught:
            await call(server, lambda c: c.messages.batches.retrieve(batch.id), max_retries=0)
        await call(server, lambda c: c.messages.count_tokens(model=MODEL, messages=USER))  # not limited
    assert caught.value.message == "mock server: batches requests per minute exceeded"
    limited = {name: value for name, value in caught.value.headers.items() if "ratelimit" in name or "retry" in name}
    assert limited == {
        "anthropic-ratelimit-requests-limit": "2",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": limited["anthropic-ratelimit-requests-reset"],
        "retry-after": "30",
    }
    assert batch.rate_limits.requests == streamkit.RateLimit(
        limit=2,
        remaining=1,
        reset=batch.rate_limits.requests.reset,  # type: ignore[union-attr]
    )
    assert limits.counts == Counter(admitted=2, rate_limited=1)


@pytest.mark.anyio
async def test_a_cut_read_is_resumed_as_a_new_attempt_and_every_attempt_is_settled_once(tmp_path: Path) -> None:
    governor = Governor()
    async with MockServer(Reply.text("Hi")) as server:
        batch_id = server.batches.synthetic(40, 300)
        server.batches.cut_results(1000, times=3)
        read = await call(server, lambda c: c.messages.batches.results(batch_id), governor=governor)
        file_id = server.files.add(size=200_000)
        server.files.cut_downloads(50_000, times=2)
        await call(server, lambda c: c.files.download(file_id, tmp_path / "out.txt"), governor=governor)
    assert (len(read.results), read.resumes) == (40, 3)
    batches, files = governor.snapshot(endpoint="batches"), governor.snapshot(endpoint="files")
    assert (batches.admitted, batches.in_flight) == (5, 0)  # the batch retrieved, then four reads
    assert (files.admitted, files.in_flight) == (3, 0)
    assert [r.headers.get("range") for r in server.requests if r.path.endswith("/content")] == [
        None,
        "bytes=50000-",
        "bytes=100000-",
    ]


@pytest.mark.anyio
async def test_an_endpoints_settlement_finishes_under_a_cancel() -> None:
    governor = Governor()
    settled: list[tuple[str, str]] = []
    backend = governor._backend
    real_settle = backend.settle

    def settle(lane: str, lease: str | None, outcome: Outcome) -> bool:
        scope.cancel()  # the caller is cancelled while its answer is settled (a Redis twin: test_governor_redis)
        settled.append((lane, outcome.status))
        return real_settle(lane, lease, outcome)

    backend.settle = settle  # type: ignore[method-assign]
    async with MockServer() as server, client_for(server, governor=governor) as client:
        with anyio.CancelScope() as scope:
            await client.messages.count_tokens(model=MODEL, messages=USER)
            await anyio.lowlevel.checkpoint()  # where the cancel lands, the call done
    assert scope.cancelled_caught
    assert settled == [(COUNT_TOKENS_LANE, "ok")]
    assert (
        governor.snapshot(endpoint="count_tokens").admitted,
        governor.snapshot(endpoint="count_tokens").in_flight,
    ) == (1, 0)


# -- a resume's record --------------------------------------------------------------------------


async def consume(server: MockServer, governor: Governor) -> tuple[str, list[ResumeInfo], list[RetryInfo]]:
    """A stream read to its end in the test's world: its text, resumes and retries.

    A token count first (in a lane of its own) opens the connection, which takes longer than
    the pacing the tests measure.
    """
    if WORLD.sync:

        def run() -> tuple[str, list[ResumeInfo], list[RetryInfo]]:
            with sync_client_for(server, governor=governor) as client:
                client.messages.count_tokens(model=MODEL, messages=USER)
                with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                    return stream.get_final_text(), stream.resumes, stream.retries

        return await in_thread(run)
    async with client_for(server, governor=governor) as client:
        await client.messages.count_tokens(model=MODEL, messages=USER)
        async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
            return await stream.get_final_text(), stream.resumes, stream.retries


BROKEN = Reply.text("Hello, world", chunk_size=4, fault=Fault("error", after=4))  # overloaded_error mid-stream


@pytest.mark.anyio
async def test_a_resume_records_how_long_the_governor_held_its_continuation() -> None:
    # One at once, then one every 0.6 s (every 0.67 s once cut): slack for a slow machine's first stream.
    governor = Governor(initial_window=1, ramp_seconds=0.6, backoff=0.9)
    async with MockServer(BROKEN, Reply.text("Hello, world")) as server:
        started = time.monotonic()
        text, resumes, retries = await consume(server, governor)
        elapsed = time.monotonic() - started
    assert (text, retries) == ("Hello, world", [])
    [resume] = resumes
    assert resume.strategy == "prefill"
    assert resume.governor_wait == governor.snapshot().waited  # the governor's only wait
    # The pacer's interval, cut by the overload, less the time from the first admission to the
    # resume (at most the time all of it took but the wait): slack above for a slow wake-up.
    interval = 0.6 / 0.9
    assert max(0.0, interval - (elapsed - resume.governor_wait) - 0.05) <= resume.governor_wait <= interval + 0.25


@pytest.mark.anyio
async def test_a_resume_whose_prefill_was_refused_records_the_waits_of_both_its_opens() -> None:
    # One at once, then one every 0.1 s (0.11 s once cut).
    governor = Governor(initial_window=1, ramp_seconds=0.1, backoff=0.9)
    text = "Hello, world"
    broken = Reply.text(text, chunk_size=4, fault=Fault("error", after=4), reject_prefill=True)
    refusal = Reply.text(text, reject_prefill=True)  # answers the prefill with its 400
    async with MockServer(broken, refusal, Reply.text(text, reject_prefill=True)) as server:
        started = time.monotonic()
        got, resumes, retries = await consume(server, governor)
        elapsed = time.monotonic() - started
    assert (got, retries) == (text, [])
    [resume] = resumes
    assert resume.strategy == "continue"
    snapshot = governor.snapshot()
    assert snapshot.admitted == 3
    # Both opens' waits, the governor's only ones (the prefill waited its turn, the continuation
    # went at once): the last open's alone would be 0.0.
    assert resume.governor_wait == snapshot.waited
    interval = 0.1 / 0.9  # less the time from the first admission to the prefill; slack above
    assert max(0.0, interval - (elapsed - resume.governor_wait) - 0.05) <= resume.governor_wait <= interval + 0.25


@pytest.mark.anyio
async def test_a_resume_that_went_at_once_records_no_wait() -> None:
    governor = Governor()
    async with MockServer(BROKEN, Reply.text("Hello, world")) as server:
        text, resumes, _ = await consume(server, governor)
    assert text == "Hello, world"
    assert [(resume.attempt, resume.governor_wait) for resume in resumes] == [(1, 0.0)]
    assert (governor.snapshot(MODEL).admitted, governor.snapshot().waited) == (2, 0.0)
