"""The mock server's rate limits, over real sockets: buckets and their headers, 429s, the acceleration
limit, overload episodes and generated load replies.  The limiter's clock is the test's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import one_attempt_client

import streamkit
from streamkit.testing import (
    Acceleration,
    Generation,
    Limits,
    MockServer,
    Overload,
    RateLimiter,
    Reply,
)

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=UTC)
PREFIX = "anthropic-ratelimit-"


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, limits: Limits | None = None, **options: Any) -> RateLimiter:
    return RateLimiter(limits or Limits(60, 6_000, 3_000), clock=clock, started_at=START, **options)


def body(text: str = "x" * 40, *, max_tokens: int = 100, model: str = "m", stream: bool = True) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": text}]}


def limit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith(PREFIX) or k == "retry-after"}


Bucket = tuple[int, int, str]  # limit, remaining, reset (minutes:seconds past 2026-01-01T00:00)


def expected(requests: Bucket, inputs: Bucket, outputs: Bucket) -> dict[str, str]:
    headers: dict[str, str] = {}
    dimensions = (("requests", requests), ("input-tokens", inputs), ("output-tokens", outputs))
    for name, (limit, remaining, reset) in dimensions:
        headers |= {f"{PREFIX}{name}-limit": str(limit), f"{PREFIX}{name}-remaining": str(remaining)}
        headers[f"{PREFIX}{name}-reset"] = f"2026-01-01T00:{reset}Z"
    tightest = min((inputs, outputs), key=lambda dimension: dimension[1])
    headers |= {f"{PREFIX}tokens-limit": str(tightest[0]), f"{PREFIX}tokens-remaining": str(tightest[1])}
    headers[f"{PREFIX}tokens-reset"] = f"2026-01-01T00:{tightest[2]}Z"
    return headers


async def test_every_answer_carries_the_buckets_which_refill_continuously() -> None:
    clock = Clock()
    reply = Reply.text("Hello", output_tokens=30)
    limits = limiter(clock)
    async with MockServer(reply, reply, limits=limits) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        first = await http.post("/v1/messages", json=body())
        # 1 request of 60/min (full in 1 s), 10 input tokens of 6,000 (0.1 s, rounded up to the
        # second), 100 output tokens reserved from max_tokens of 3,000 (2 s).
        assert first.status_code == 200
        assert limit_headers(first) == expected((60, 59, "00:01"), (6_000, 5_990, "00:01"), (3_000, 2_900, "00:02"))
        assert '"usage":{"output_tokens":30}' in first.text

        clock.now += 0.5  # half a request and 25 output tokens come back
        second = await http.post("/v1/messages", json=body("y" * 41, max_tokens=200))
        # Output: 2,900 + 70 settled (100 reserved, 30 used) + 25 refilled - 200 reserved = 2,795.
        # Requests: 59 + 0.5 - 1 = 58.5, full again 1.5 s after 00:00:00.5.  Input: 6,000 again (100 a second),
        # less 11 tokens (41 characters / 4, rounded up).
        assert limit_headers(second) == expected((60, 58, "00:02"), (6_000, 5_989, "00:01"), (3_000, 2_795, "00:05"))

        clock.now += 0.5
        third = await http.post("/v1/messages", json=body(stream=False))  # the built-in default, not streamed
        # Output: 2,795 + 170 settled + 25 refilled - 100 reserved; full 2.2 s after 00:00:01.
        assert third.status_code == 200
        assert limit_headers(third) == expected((60, 58, "00:03"), (6_000, 5_990, "00:02"), (3_000, 2_890, "00:04"))
        clock.now += 10
        # The default reply settled to its 2,000 characters / 4 = 500 tokens: 2,890 + 100 - 500 + 500 refilled.
        assert limits.headers("m")[f"{PREFIX}output-tokens-remaining"] == "2990"


async def test_an_empty_bucket_draws_a_429_with_retry_after_and_the_headers() -> None:
    clock = Clock()
    limits = limiter(clock, Limits(requests_per_minute=2, output_tokens_per_minute=1_000))
    async with MockServer(default=Reply.text("Hi", output_tokens=1), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.post("/v1/messages", json=body())).status_code == 200
            assert (await http.post("/v1/messages", json=body())).status_code == 200
            refused = await http.post("/v1/messages", json=body())
            assert refused.status_code == 429
            assert refused.json()["error"] == {
                "type": "rate_limit_error",
                "message": "mock server: requests per minute (2) exceeded",
            }
            # No input-token limit: its headers are absent, and tokens-* is the output bucket.
            assert limit_headers(refused) == {
                f"{PREFIX}requests-limit": "2",
                f"{PREFIX}requests-remaining": "0",
                f"{PREFIX}requests-reset": "2026-01-01T00:01:00Z",
                f"{PREFIX}output-tokens-limit": "1000",
                f"{PREFIX}output-tokens-remaining": "998",
                f"{PREFIX}output-tokens-reset": "2026-01-01T00:00:01Z",
                f"{PREFIX}tokens-limit": "1000",
                f"{PREFIX}tokens-remaining": "998",
                f"{PREFIX}tokens-reset": "2026-01-01T00:00:01Z",
                "retry-after": "30",  # one request comes back in 30 s
            }
            clock.now += 30
            assert (await http.post("/v1/messages", json=body())).status_code == 200
    assert limits.counts == {"admitted": 3, "rate_limited": 1}
    assert limits.output_tokens == 3


async def test_a_request_larger_than_the_bucket_goes_when_the_bucket_is_full() -> None:
    clock = Clock()
    limits = limiter(clock, Limits(output_tokens_per_minute=600))
    async with MockServer(default=Reply.text("Hi", output_tokens=1), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.post("/v1/messages", json=body(max_tokens=1_000))).status_code == 200
            assert limits.headers("m")[f"{PREFIX}output-tokens-remaining"] == "599"  # settled to 1 token
            refused = await http.post("/v1/messages", json=body(max_tokens=1_000))
            assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")  # 0.1 s, rounded up
            assert refused.json()["error"]["message"] == "mock server: output tokens per minute (600) exceeded"
            clock.now += 0.1
            assert (await http.post("/v1/messages", json=body(max_tokens=1_000))).status_code == 200


async def test_the_client_sees_the_429_as_a_rate_limit_error_with_its_limits() -> None:
    clock = Clock()
    limits = limiter(clock, Limits(requests_per_minute=1))
    full = streamkit.RateLimit(limit=1, remaining=0, reset=START.replace(minute=1))
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        # No governor: it would read the headers and hold the second call for the minute they announce.
        async with one_attempt_client(server, governor=False) as client:
            message = await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "a"}])
            assert message.rate_limits.requests == full
            with pytest.raises(streamkit.RateLimitStatusError) as caught:
                await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "a"}])
    assert caught.value.retry_after == 60.0
    assert caught.value.rate_limits.requests == full


async def test_models_have_buckets_of_their_own() -> None:
    clock = Clock()
    limits = limiter(clock, Limits(requests_per_minute=1), models={"big": Limits(requests_per_minute=100)})
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            statuses = [(await http.post("/v1/messages", json=body(model=model))).status_code for model in "aabb"]
            assert statuses == [200, 429, 200, 429]
            big = await http.post("/v1/messages", json=body(model="big"))
            assert limit_headers(big) == {
                f"{PREFIX}requests-limit": "100",
                f"{PREFIX}requests-remaining": "99",
                f"{PREFIX}requests-reset": "2026-01-01T00:00:01Z",
            }


async def test_input_tokens_count_the_system_prompt_and_text_blocks() -> None:
    clock = Clock()
    limits = limiter(clock, Limits(input_tokens_per_minute=1_000))
    request = {
        "model": "m",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "s" * 8}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "u" * 9}, {"type": "image", "source": {}}]},
            {"role": "assistant", "content": "a" * 3},
        ],
    }
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/v1/messages", json=request)
    assert response.headers[f"{PREFIX}input-tokens-remaining"] == "995"  # 20 characters: 5 tokens


async def test_a_sharp_rise_in_the_request_rate_draws_429s_below_the_limits() -> None:
    clock = Clock()
    rule = Acceleration(window=5, trailing=60, factor=2, floor=3)
    limits = limiter(clock, Limits(requests_per_minute=1_000), acceleration=rule)
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:

            async def burst(n: int) -> list[int]:
                return [(await http.post("/v1/messages", json=body())).status_code for _ in range(n)]

            assert await burst(4) == [200, 200, 200, 429]  # from a standstill: the floor, 3 per window
            refused = await http.post("/v1/messages", json=body())
            assert refused.json()["error"]["message"] == (
                "mock server: the request rate rose too sharply (3 requests in the last 5 s,"
                " at most 3 after the trailing rate); ramp up gradually"
            )
            assert refused.headers["retry-after"] == "5"
            assert refused.headers[f"{PREFIX}requests-remaining"] == "997"  # refusals take nothing
            clock.now += 4
            assert await burst(1) == [429]
            clock.now += 1  # 3 in the trailing minute: 2 * 3 * 5 / 60 + 3 = 3.5 per window
            assert await burst(4) == [200, 200, 200, 429]
            clock.now += 5  # 6 in the trailing minute: 4 per window
            assert await burst(5) == [200, 200, 200, 200, 429]
    assert limits.counts == {"admitted": 10, "acceleration_limited": 5}


async def test_an_overload_episode_refuses_its_share_with_529_before_the_stream() -> None:
    clock = Clock()
    limits = limiter(clock, overloads=[Overload(start=10, end=20, fraction=0.5)])
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:

            async def statuses(n: int) -> list[int]:
                return [(await http.post("/v1/messages", json=body())).status_code for _ in range(n)]

            clock.now += 9
            assert await statuses(2) == [200, 200]
            clock.now += 1
            assert await statuses(4) == [200, 529, 200, 529]
            overloaded = await http.post("/v1/messages", json=body())
            assert overloaded.status_code == 200
            overloaded = await http.post("/v1/messages", json=body())
            assert overloaded.status_code == 529
            assert overloaded.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
            assert overloaded.headers[f"{PREFIX}requests-remaining"] == "56"  # an overloaded request takes nothing
            clock.now += 10
            assert await statuses(2) == [200, 200]
    # The same body every time: to the limiter, six attempts of one request.
    assert limits.counts == {"admitted": 7, "overloaded": 3, "during_overload": 6, "overload_requests": 1}


async def test_the_attempts_of_an_overload_are_told_apart_from_its_requests_by_their_bodies() -> None:
    clock = Clock()
    limits = limiter(clock, overloads=[Overload(start=5, end=10)])
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            sent = [body("first"), body("second"), body("first"), body("first")]  # the first, then two retries
            assert [(await http.post("/v1/messages", json=b)).status_code for b in sent[:1]] == [200]
            clock.now += 5
            assert [(await http.post("/v1/messages", json=b)).status_code for b in sent] == [529] * 4
            clock.now += 5
            assert (await http.post("/v1/messages", json=body("third"))).status_code == 200
    assert limits.counts == {"admitted": 2, "overloaded": 4, "during_overload": 4, "overload_requests": 2}


async def test_an_overload_episode_in_stream_sends_an_error_event_after_the_200() -> None:
    clock = Clock()
    limits = limiter(clock, overloads=[Overload(start=0, end=1, in_stream=True, after=1)])
    async with MockServer(default=Reply.text("Hello", output_tokens=2), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            broken = await http.post("/v1/messages", json=body())
            assert broken.status_code == 200
            events = [line for line in broken.text.splitlines() if line.startswith("event: ")]
            assert events == ["event: message_start", "event: error"]
            assert 'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}' in broken.text
            clock.now += 1
            whole = await http.post("/v1/messages", json=body())
            # The broken reply settled to 0 output tokens: 3,000 - 100 reserved + 100 settled, - 100 reserved.
            assert whole.headers[f"{PREFIX}output-tokens-remaining"] == "2900"
            assert whole.text.count("event: error") == 0
    assert limits.output_tokens == 2


async def test_generated_replies_follow_max_tokens_and_queued_replies_still_win() -> None:
    clock = Clock()
    generation = Generation(tokens_per_second=10_000, tokens_per_event=4)
    limits = limiter(clock, generation=generation)
    async with MockServer(Reply.text("queued", output_tokens=7), limits=limits) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            queued = await http.post("/v1/messages", json=body(max_tokens=10))
            assert '"text":"queued"' in queued.text
            generated = await http.post("/v1/messages", json=body(max_tokens=10))
    deltas = [json.loads(line[6:]) for line in generated.text.splitlines() if line.startswith("data: ")]
    texts = [d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta"]
    assert [len(text) for text in texts] == [16, 16, 8]  # 10 tokens of 4 characters, 4 tokens a delta
    assert deltas[-2]["usage"] == {"output_tokens": 10}
    assert deltas[-2]["delta"]["stop_reason"] == "max_tokens"
    assert limits.output_tokens == 17


def test_generated_replies_are_paced_and_sized_as_configured() -> None:
    reply = Generation(output_tokens=30, tokens_per_second=60, tokens_per_event=6).reply(max_tokens=1_000)
    assert (reply.output_tokens, reply.delay, reply.blocks[0].chunk_size) == (30, 0.1, 24)  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"  # it stopped before max_tokens
    assert len(reply.blocks[0].text) == 120  # type: ignore[union-attr]


def test_an_overload_episode_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match=r"^an overload episode needs start <= end and 0 <= fraction <= 1"):
        Overload(start=5, end=4)
