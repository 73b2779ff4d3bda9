"""Retries before the stream, create()'s guards and the request size guard.

Every test talks to the loopback MockServer; the delays are tiny so the whole file runs
in a few seconds on asyncio and trio.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import anyio
import pytest
from conftest import WORLD, client_for, closed_port, in_thread, sync_twin

import streamkit
from streamkit import RetryInfo
from streamkit.testing import Fault, MockServer, Reply, lorem

pytestmark = pytest.mark.anyio
BOTH_WORLDS = ("stream_text", "create")  # tests calling these also run on the sync client (conftest.py)

USER = [{"role": "user", "content": "Hello"}]
TEXT = lorem(400, seed=3)
OK = Reply.text(TEXT, chunk_size=7)
LIMIT = 32 * 1024 * 1024


async def stream_text(
    sk: streamkit.AsyncClient, **call: Any
) -> tuple[streamkit.MessageStream | streamkit.SyncMessageStream, str]:
    """Stream to the end with get_final_text(); in the sync world, on a sync client with ``sk``'s options."""
    if WORLD.sync:

        def consume() -> tuple[streamkit.SyncMessageStream, str]:
            with sync_twin(sk) as client:
                sync_stream = client.messages.stream(model="m", max_tokens=100, messages=USER, **call)
                with sync_stream:
                    return sync_stream, sync_stream.get_final_text()

        return await in_thread(consume)
    stream = sk.messages.stream(model="m", max_tokens=100, messages=USER, **call)
    async with stream:
        text = await stream.get_final_text()
    return stream, text


async def create(sk: streamkit.AsyncClient, **call: Any) -> streamkit.Message:
    """``sk.messages.create(**call)``; in the sync world, on a sync client with ``sk``'s options."""
    if WORLD.sync:

        def consume() -> streamkit.Message:
            with sync_twin(sk) as client:
                return client.messages.create(**call)

        return await in_thread(consume)
    return await sk.messages.create(**call)


class Abort(Exception):
    """Raised from on_retry to stop before the (long) backoff is slept."""


# -- which failures are retried -------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
async def test_retryable_status_is_retried(status: int) -> None:
    infos: list[RetryInfo] = []
    async with MockServer(Reply.error(status, request_id="req_failed"), OK) as server, client_for(server) as sk:
        stream, text = await stream_text(sk, on_retry=infos.append)
    assert text == TEXT
    assert len(server.requests) == 2
    assert server.requests[1].body == server.requests[0].body
    [info] = stream.retries
    assert infos == [info]
    assert info.attempt == 1
    assert isinstance(info.error, streamkit.APIStatusError)
    assert (info.error.status_code, info.error.request_id) == (status, "req_failed")
    assert 0.0 <= info.delay <= 0.01


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, streamkit.InvalidRequestError),
        (401, streamkit.AuthenticationError),
        (403, streamkit.PermissionDeniedError),
        (404, streamkit.NotFoundError),
        (413, streamkit.RequestTooLargeError),
    ],
)
async def test_client_errors_are_not_retried(status: int, kind: type[streamkit.APIError]) -> None:
    infos: list[RetryInfo] = []
    async with MockServer(Reply.error(status), OK) as server, client_for(server) as sk:
        stream = sk.messages.stream(model="m", max_tokens=100, messages=USER, on_retry=infos.append)
        with pytest.raises(kind) as caught:
            async with stream:
                pass
        assert len(server.requests) == 1
    assert isinstance(caught.value, streamkit.APIStatusError)
    assert caught.value.status_code == status
    assert stream.retries == [] and infos == []


async def test_a_retry_after_header_alone_does_not_make_a_400_retryable() -> None:
    async with MockServer(Reply.error(400, headers={"retry-after": "0"}), OK) as server, client_for(server) as sk:
        with pytest.raises(streamkit.InvalidRequestError):
            await stream_text(sk)
        assert len(server.requests) == 1


async def test_n_failures_then_success() -> None:
    failures = [Reply.error(529), Reply.error(500), Reply.error(429), Reply.error(503)]
    async with MockServer(*failures, OK) as server, client_for(server) as sk:
        stream, text = await stream_text(sk, max_retries=4)
    assert text == TEXT
    assert len(server.requests) == 5
    assert [info.attempt for info in stream.retries] == [1, 2, 3, 4]
    assert [info.error.status_code for info in stream.retries] == [529, 500, 429, 503]  # type: ignore[attr-defined]
    assert stream.resumes == []


async def test_default_max_retries_is_two_and_the_last_error_is_raised() -> None:
    failures = [Reply.error(529, request_id=f"req_{n}") for n in (1, 2, 3)]
    infos: list[RetryInfo] = []
    async with MockServer(*failures, OK) as server, client_for(server) as sk:
        stream = sk.messages.stream(model="m", max_tokens=100, messages=USER, on_retry=infos.append)
        with pytest.raises(streamkit.OverloadedError) as caught:
            async with stream:
                pass
        assert len(server.requests) == 3
    error = caught.value
    assert isinstance(error, streamkit.APIStatusError)
    assert not isinstance(error, streamkit.StreamError)
    assert (error.status_code, error.error_type, error.message, error.request_id) == (
        529,
        "overloaded_error",
        "Overloaded",
        "req_3",
    )
    assert [(info.attempt, info.error.request_id) for info in stream.retries] == [(1, "req_1"), (2, "req_2")]
    assert infos == stream.retries


async def test_per_call_max_retries_overrides_the_client() -> None:
    async with MockServer(Reply.error(529)) as server, client_for(server, max_retries=5) as sk:
        with pytest.raises(streamkit.OverloadedError):
            await stream_text(sk, max_retries=0)
        assert len(server.requests) == 1
        server.push(Reply.error(529), Reply.error(529), Reply.error(529), OK)
        stream, text = await stream_text(sk, max_retries=3)
        assert text == TEXT and len(stream.retries) == 3
        assert len(server.requests) == 1 + 4


async def test_client_max_retries_zero() -> None:
    async with MockServer(Reply.error(503), OK) as server, client_for(server, max_retries=0) as sk:
        with pytest.raises(streamkit.APIStatusError) as caught:
            await stream_text(sk)
        assert caught.value.status_code == 503
        assert len(server.requests) == 1


async def test_backoff_is_exponential_with_full_jitter_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[tuple[float, float]] = []

    def top_of_the_range(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr("random.uniform", top_of_the_range)
    async with MockServer(*[Reply.error(500)] * 5, OK) as server, client_for(server, max_retries=5) as sk:
        stream, text = await stream_text(sk)
    assert text == TEXT
    # full jitter: uniform(0, min(max_delay, initial * 2**n))
    assert bounds == [(0.0, 0.01), (0.0, 0.02), (0.0, 0.04), (0.0, 0.05), (0.0, 0.05)]
    assert [info.delay for info in stream.retries] == [0.01, 0.02, 0.04, 0.05, 0.05]


async def test_backoff_delays_stay_within_their_caps() -> None:
    async with MockServer(*[Reply.error(529)] * 4, OK) as server, client_for(server, max_retries=4) as sk:
        stream, _ = await stream_text(sk)
    caps = [0.01, 0.02, 0.04, 0.05]
    assert len(stream.retries) == 4
    for info, cap in zip(stream.retries, caps, strict=True):
        assert 0.0 <= info.delay <= cap


# -- the server's hints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "20"}, 0.02),
        ({"retry-after": "0.03"}, 0.03),
        ({"retry-after-ms": "10", "retry-after": "30"}, 0.01),
        ({"retry-after-ms": "soon", "retry-after": "0.02"}, 0.02),
        ({"retry-after": email.utils.formatdate(0, usegmt=True)}, 0.0),
    ],
    ids=["after-0", "after-ms-20", "after-fraction", "ms-wins", "bad-ms-falls-back", "date-in-the-past"],
)
async def test_retry_after_is_the_delay(headers: dict[str, str], delay: float) -> None:
    infos: list[RetryInfo] = []
    async with MockServer(Reply.error(529, headers=headers), OK) as server, client_for(server) as sk:
        stream, text = await stream_text(sk, on_retry=infos.append)
    assert text == TEXT
    assert [info.delay for info in infos] == [delay]
    assert stream.retries == infos
    assert infos[0].error.retry_after == delay  # type: ignore[attr-defined]


async def test_retry_after_is_actually_waited() -> None:
    async with MockServer(Reply.error(429, headers={"retry-after-ms": "150"}), OK) as server, client_for(server) as sk:
        started = anyio.current_time()
        stream, text = await stream_text(sk)
        elapsed = anyio.current_time() - started
    assert text == TEXT and [info.delay for info in stream.retries] == [0.15]
    assert elapsed >= 0.15


async def test_retry_after_as_a_future_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    infos: list[RetryInfo] = []

    def abort(info: RetryInfo) -> None:
        infos.append(info)
        raise Abort

    async with MockServer(Reply.error(503, headers={"retry-after": when}), OK) as server, client_for(server) as sk:
        with pytest.raises(Abort):
            await stream_text(sk, on_retry=abort)
        assert len(server.requests) == 1
    [info] = infos
    assert 28.0 < info.delay <= 30.0  # the date has whole seconds


@pytest.mark.parametrize("status", [429, 500, 529])
async def test_x_should_retry_false_wins_over_the_status(status: int) -> None:
    async with MockServer(Reply.error(status, headers={"x-should-retry": "false"}), OK) as server:
        async with client_for(server) as sk:
            stream = sk.messages.stream(model="m", max_tokens=100, messages=USER)
            with pytest.raises(streamkit.APIStatusError) as caught:
                async with stream:
                    pass
        assert len(server.requests) == 1
    assert caught.value.status_code == status
    assert caught.value.should_retry is False
    assert stream.retries == []


async def test_x_should_retry_false_on_a_529() -> None:
    async with MockServer(Reply.error(529, headers={"x-should-retry": "false"}), OK) as server:
        async with client_for(server) as sk:
            with pytest.raises(streamkit.OverloadedError) as caught:
                await stream_text(sk)
        assert len(server.requests) == 1
    assert isinstance(caught.value, streamkit.APIStatusError) and caught.value.status_code == 529


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
async def test_x_should_retry_true_wins_over_the_status(status: int) -> None:
    async with MockServer(Reply.error(status, headers={"x-should-retry": "true"}), OK) as server:
        async with client_for(server) as sk:
            stream, text = await stream_text(sk)
        assert len(server.requests) == 2
    assert text == TEXT
    [info] = stream.retries
    assert isinstance(info.error, streamkit.APIStatusError)
    assert (info.error.status_code, info.error.should_retry) == (status, True)


async def test_x_should_retry_true_still_counts_against_max_retries() -> None:
    replies = [Reply.error(400, headers={"x-should-retry": "true"}) for _ in range(3)]
    async with MockServer(*replies, OK) as server, client_for(server) as sk:
        with pytest.raises(streamkit.InvalidRequestError):
            await stream_text(sk)
        assert len(server.requests) == 3


# -- connection failures ---------------------------------------------------------------


async def test_connection_refused_is_retried_then_raised() -> None:
    port = closed_port()
    infos: list[RetryInfo] = []
    async with client_for(f"http://127.0.0.1:{port}") as sk:
        stream = sk.messages.stream(model="m", max_tokens=100, messages=USER, on_retry=infos.append)
        with pytest.raises(streamkit.APIConnectionError) as caught:
            async with stream:
                pass
    assert type(caught.value) is streamkit.APIConnectionError
    assert caught.value.message.startswith(f"could not reach the API at http://127.0.0.1:{port}/v1/messages: ")
    assert [info.attempt for info in stream.retries] == [1, 2]
    assert all(type(info.error) is streamkit.APIConnectionError for info in stream.retries)
    assert infos == stream.retries


async def test_connection_refused_with_create() -> None:
    port = closed_port()
    infos: list[RetryInfo] = []
    async with client_for(f"http://127.0.0.1:{port}", max_retries=3) as sk:
        with pytest.raises(streamkit.APIConnectionError) as caught:
            await create(sk, model="m", max_tokens=100, messages=USER, on_retry=infos.append)
    assert type(caught.value) is streamkit.APIConnectionError
    assert [info.attempt for info in infos] == [1, 2, 3]


# -- create() retries too ----------------------------------------------------------------


async def test_create_retries_a_status_error() -> None:
    infos: list[RetryInfo] = []
    async with MockServer(Reply.error(529), Reply.error(500), OK) as server, client_for(server) as sk:
        message = await create(sk, model="m", max_tokens=100, messages=USER, on_retry=infos.append)
        assert len(server.requests) == 3
        assert "stream" not in server.requests[2].json
    assert message.text == TEXT
    assert [(info.attempt, info.error.status_code) for info in infos] == [(1, 529), (2, 500)]  # type: ignore[attr-defined]


async def test_create_per_call_max_retries_and_should_retry() -> None:
    # The retry policy alone: after these six 529s the governor would rightly hold the next
    # request back for seconds (what it does after 529s is tested in test_governor).
    async with MockServer(Reply.error(529)) as server, client_for(server, governor=False) as sk:
        with pytest.raises(streamkit.OverloadedError):
            await create(sk, model="m", max_tokens=100, messages=USER, max_retries=0)
        assert len(server.requests) == 1
        server.push(Reply.error(529, headers={"x-should-retry": "false"}))
        with pytest.raises(streamkit.OverloadedError):
            await create(sk, model="m", max_tokens=100, messages=USER)
        assert len(server.requests) == 2
        server.push(Reply.error(400, headers={"x-should-retry": "true"}), OK)
        message = await create(sk, model="m", max_tokens=100, messages=USER, max_retries=1)
        assert message.text == TEXT
        assert len(server.requests) == 4  # the 400 and its retry
        server.push(Reply.error(529), Reply.error(529), Reply.error(529), OK)
        message = await create(sk, model="m", max_tokens=100, messages=USER, max_retries=3)
        assert message.text == TEXT
        assert len(server.requests) == 8


async def test_create_does_not_retry_a_400() -> None:
    async with MockServer(Reply.error(400, message="bad field"), OK) as server, client_for(server) as sk:
        with pytest.raises(streamkit.InvalidRequestError) as caught:
            await create(sk, model="m", max_tokens=100, messages=USER)
        assert len(server.requests) == 1
    assert caught.value.message == "bad field"


async def test_create_retries_a_broken_connection() -> None:
    infos: list[RetryInfo] = []
    async with MockServer(Reply.text(TEXT, fault=Fault("cut")), OK) as server, client_for(server) as sk:
        message = await create(sk, model="m", max_tokens=100, messages=USER, on_retry=infos.append)
        assert len(server.requests) == 2
    assert message.text == TEXT
    [info] = infos
    assert type(info.error) is streamkit.APIConnectionError


async def test_create_retries_a_timeout() -> None:
    infos: list[RetryInfo] = []
    async with MockServer(Reply.text(TEXT, fault=Fault("hang")), OK) as server:
        async with client_for(server, timeout=0.3) as sk:
            message = await create(sk, model="m", max_tokens=100, messages=USER, on_retry=infos.append)
        assert len(server.requests) == 2
    assert message.text == TEXT
    [info] = infos
    assert type(info.error) is streamkit.APITimeoutError


# -- create() refuses what must stream ----------------------------------------------------


async def test_create_refuses_max_tokens_that_may_run_past_ten_minutes() -> None:
    async with MockServer(OK, OK) as server, client_for(server) as sk:
        with pytest.raises(streamkit.StreamingRequiredError) as caught:
            await create(sk, model="m", max_tokens=21_334, messages=USER)
        assert server.requests == []
        assert isinstance(caught.value, ValueError)
        assert str(caught.value) == (
            "max_tokens=21334 may take longer than 10 minutes without streaming; "
            "the API requires streaming for such requests: use client.messages.stream(...)"
        )
        with pytest.raises(streamkit.StreamingRequiredError):
            await create(sk, model="m", max_tokens=64_000, messages=USER)
        assert server.requests == []

        message = await create(sk, model="m", max_tokens=21_333, messages=USER)
        assert message.text == TEXT
        assert len(server.requests) == 1
        assert server.requests[0].json == {"model": "m", "max_tokens": 21_333, "messages": USER}

        # streaming has no such limit
        async with sk.messages.stream(model="m", max_tokens=64_000, messages=USER) as live:
            assert await live.get_final_text() == TEXT
        assert server.requests[1].json["max_tokens"] == 64_000


# -- the request size guard ----------------------------------------------------------------


def padded(extra: int, *, stream: bool, char: str = "x") -> tuple[list[dict[str, str]], int]:
    """Messages whose request body is LIMIT + extra bytes (as streamkit serialises it)."""
    body: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": ""}]}
    if stream:
        body["stream"] = True
    overhead = len(json.dumps(body, separators=(",", ":")).encode())
    width = len(char.encode())
    count, rest = divmod(LIMIT + extra - overhead, width)
    assert rest == 0
    return [{"role": "user", "content": char * count}], LIMIT + extra


def too_large_message(size: int) -> str:
    return (
        f"the request body is {size:,} bytes, over the API's limit of {LIMIT:,} bytes: "
        "it was not sent (shrink the messages or use the Files API)"
    )


async def test_request_over_32_mb_is_refused_locally_by_create() -> None:
    messages, size = padded(1, stream=False)
    async with MockServer(OK) as server, client_for(server) as sk:
        with pytest.raises(streamkit.RequestTooLargeError) as caught:
            await create(sk, model="m", max_tokens=100, messages=messages)
        assert server.requests == []
    assert caught.value.message == too_large_message(size)
    assert f"{size:,}" in str(caught.value)
    assert caught.value.status_code is None


@pytest.mark.parametrize(("extra", "char"), [(1, "x"), (2, "\u00e9")], ids=["ascii", "utf8"])
async def test_request_over_32_mb_is_refused_locally_by_stream(extra: int, char: str) -> None:
    """The size counts UTF-8 bytes: with "\u00e9" the body has half as many characters as bytes."""
    messages, size = padded(extra, stream=True, char=char)
    async with MockServer(OK) as server, client_for(server) as sk:
        with pytest.raises(streamkit.RequestTooLargeError) as caught:
            async with sk.messages.stream(model="m", max_tokens=100, messages=messages):
                pass
        assert server.requests == []
    assert caught.value.message == too_large_message(size)


async def test_a_body_of_exactly_32_mb_is_sent() -> None:
    messages, size = padded(0, stream=True)
    async with MockServer(OK) as server, client_for(server) as sk:
        async with sk.messages.stream(model="m", max_tokens=100, messages=messages) as stream:
            assert await stream.get_final_text() == TEXT
        assert len(server.requests) == 1
        assert len(server.requests[0].body) == size == LIMIT
