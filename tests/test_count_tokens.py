"""client.messages.count_tokens across real sockets to the mock server, on both clients."""

from __future__ import annotations

import pytest
from _endpoints import ErringServer, call, close_clients  # noqa: F401 - the fixture

from streamkit import MessageTokensCount, RequestTooLargeError, RequestTooLargeStatusError, RetryInfo
from streamkit.testing import MockServer

pytestmark = pytest.mark.anyio

BOTH_WORLDS = ("call",)
MESSAGES = [{"role": "user", "content": "Hello, Claude"}]  # 13 characters
TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]


async def test_count_tokens_sends_the_typed_parameters_and_returns_the_count() -> None:
    async with MockServer() as server:
        counted = await call(
            server,
            lambda c: c.messages.count_tokens(
                model="claude-mock-1", messages=MESSAGES, system="Be brief.", tools=TOOLS, thinking={"type": "disabled"}
            ),
        )
        # The mock's estimate: 3 + 4 per message + ceil(characters / 4) of system, messages and tools.
        characters = len("Be brief.") + len("user") + len("Hello, Claude") + len("get_weatherWeatherobject")
        assert counted == MessageTokensCount(input_tokens=3 + 4 + -(-characters // 4))
        assert counted.request_id is not None and counted.request_id.startswith("req_")
        sent = server.requests[-1]
        assert (sent.method, sent.path) == ("POST", "/v1/messages/count_tokens")
        assert sent.json == {
            "model": "claude-mock-1",
            "messages": MESSAGES,
            "system": "Be brief.",
            "tools": TOOLS,
            "thinking": {"type": "disabled"},
        }


async def test_a_parameter_the_endpoint_does_not_take_is_a_type_error() -> None:
    async with MockServer() as server:
        with pytest.raises(TypeError) as caught:
            await call(server, lambda c: c.messages.count_tokens(model="m", messages=MESSAGES, temperature=0.5))
        assert str(caught.value) == (
            "count_tokens() got an unexpected keyword argument 'temperature' (not a Messages API parameter "
            "streamkit knows; send a newer one with extra_body={...})"
        )
        assert server.requests == []


async def test_count_tokens_retries_a_429_after_its_retry_after() -> None:
    async with ErringServer() as server:
        server.errors.append((429, "rate_limit_error", {"retry-after": "0.02"}))
        retries: list[RetryInfo] = []
        counted = await call(
            server, lambda c: c.messages.count_tokens(model="m", messages=MESSAGES, on_retry=retries.append)
        )
        assert counted.input_tokens == 3 + 4 + -(-len("userHello, Claude") // 4)
        assert [(r.attempt, r.error.status_code, r.delay) for r in retries] == [(1, 429, 0.02)]  # type: ignore[attr-defined]


async def test_over_32_mb_is_refused_before_sending_and_the_cdn_413_is_mapped() -> None:
    async with MockServer(size_limits={"count_tokens": 500}) as server:
        with pytest.raises(RequestTooLargeStatusError) as cdn:
            await call(
                server, lambda c: c.messages.count_tokens(model="m", messages=[{"role": "user", "content": "x" * 600}])
            )
        assert (cdn.value.status_code, cdn.value.error_type) == (413, "request_too_large")
        assert cdn.value.message.startswith("HTTP 413: 413 Request Entity Too Large")
        huge = [{"role": "user", "content": "x" * (32 * 1024 * 1024)}]
        with pytest.raises(RequestTooLargeError) as local:
            await call(server, lambda c: c.messages.count_tokens(model="m", messages=huge))
        size = len('{"model":"m","messages":[{"role":"user","content":""}]}') + 32 * 1024 * 1024
        assert local.value.message == (
            f"the request body is {size:,} bytes, over the API's limit of 33,554,432 bytes: it was not sent "
            "(shrink the messages or use the Files API)"
        )
        assert len(server.refused) == 1
