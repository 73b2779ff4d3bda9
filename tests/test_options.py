"""Per-call options, typed parameters and ``with_options``, checked on the requests the mock recorded.

Options (``timeout``, ``max_retries``, ``extra_headers``, ``extra_query``, ``extra_body``,
``betas``) never go in the JSON body; each lands where it belongs.  A parameter not passed
is not sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import STALL, client_for, one_attempt_client

import streamkit
from streamkit.testing import Fault, MockServer, Reply

pytestmark = pytest.mark.anyio

USER: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
REQUEST: dict[str, Any] = {"model": "claude-mock-1", "max_tokens": 64, "messages": USER}
OPTIONS: dict[str, Any] = {
    "timeout": 30.0,
    "max_retries": 0,
    "extra_headers": {"Anthropic-Beta": "b-0", "x-trace": "t-1"},
    "extra_query": {"beta": "true", "n": 2},
    "extra_body": {"speed": "fast"},
    "betas": ["b-1", "b-0", "b-2"],
}


def assert_options_applied(request: Any, body: dict[str, Any]) -> None:
    assert request.json == body
    assert (request.path, request.query) == ("/v1/messages", "beta=true&n=2")
    assert request.headers["anthropic-beta"] == "b-0,b-1,b-2"
    assert request.headers["x-trace"] == "t-1"


async def test_stream_options_never_reach_the_body() -> None:
    async with MockServer(Reply.text("ok")) as server:
        async with client_for(server) as client:
            async with client.messages.stream(**REQUEST, temperature=0.5, **OPTIONS) as stream:
                assert await stream.get_final_text() == "ok"
    [request] = server.requests
    assert_options_applied(request, {**REQUEST, "temperature": 0.5, "speed": "fast", "stream": True})


async def test_create_options_never_reach_the_body() -> None:
    async with MockServer(Reply.text("ok")) as server:
        async with client_for(server) as client:
            message = await client.messages.create(**REQUEST, temperature=0.5, **OPTIONS)
    assert message.text == "ok"
    [request] = server.requests
    assert_options_applied(request, {**REQUEST, "temperature": 0.5, "speed": "fast"})


async def test_parameters_not_given_are_not_sent() -> None:
    async with MockServer(default=Reply.text("ok")) as server:
        async with client_for(server) as client:
            async with client.messages.stream(**REQUEST) as stream:
                await stream.get_final_message()
            await client.messages.create(**REQUEST)
    assert [r.json for r in server.requests] == [{**REQUEST, "stream": True}, REQUEST]
    assert [("anthropic-beta" in r.headers, r.query) for r in server.requests] == [(False, ""), (False, "")]


async def test_every_typed_parameter_is_sent_as_given() -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    params: dict[str, Any] = {
        "system": ({"type": "text", "text": "Be brief."},),  # any iterable, sent as a list
        "metadata": {"user_id": "u-1"},
        "stop_sequences": ("END",),
        "temperature": 0.25,
        "top_p": 0.5,
        "top_k": 7,
        "tools": (t for t in [tool]),
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "disabled"},
        "service_tier": "standard_only",
        "container": None,  # None is sent as null: only what is not passed is left out
        "cache_control": {"type": "ephemeral"},
        "inference_geo": "us",
        "output_config": {"effort": "low"},
    }
    async with MockServer(Reply.text("ok")) as server:
        async with client_for(server) as client:
            assert (await client.messages.create(**REQUEST, **params)).text == "ok"
    assert server.requests[0].json == {
        **REQUEST,
        "system": [{"type": "text", "text": "Be brief."}],
        "metadata": {"user_id": "u-1"},
        "stop_sequences": ["END"],
        "temperature": 0.25,
        "top_p": 0.5,
        "top_k": 7,
        "tools": [tool],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "disabled"},
        "service_tier": "standard_only",
        "container": None,
        "cache_control": {"type": "ephemeral"},
        "inference_geo": "us",
        "output_config": {"effort": "low"},
    }
    assert sorted(params) == sorted(streamkit.MessageParams.__optional_keys__)


async def test_a_misspelled_parameter_is_refused_before_sending() -> None:
    async with MockServer(Reply.text("never")) as server:
        async with client_for(server) as client:
            with pytest.raises(TypeError) as by_create:
                await client.messages.create(**REQUEST, temprature=0.5)
            with pytest.raises(TypeError) as by_stream:
                client.messages.stream(**REQUEST, mcp_servers=[])
    assert str(by_create.value) == (
        "create() got an unexpected keyword argument 'temprature' (not a Messages API parameter "
        "streamkit knows; send a newer one with extra_body={...})"
    )
    assert str(by_stream.value).startswith("stream() got an unexpected keyword argument 'mcp_servers' (")
    assert server.requests == []


async def test_newer_parameters_go_through_extra_body_merged_last() -> None:
    async with MockServer(default=Reply.text("ok")) as server:
        async with client_for(server) as client:
            extra = {"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}], "temperature": 1.0}
            async with client.messages.stream(**REQUEST, temperature=0.0, extra_body=extra) as stream:
                await stream.get_final_message()
    assert server.requests[0].json == {**REQUEST, **extra, "stream": True}


async def test_betas_alone_and_as_one_string() -> None:
    async with MockServer(default=Reply.text("ok")) as server:
        async with client_for(server) as client:
            await client.messages.create(**REQUEST, betas=["b-1", "b-2"])
            await client.messages.create(**REQUEST, betas="b-3")
            await client.messages.create(**REQUEST, betas=[])
    assert [r.headers.get("anthropic-beta") for r in server.requests] == ["b-1,b-2", "b-3", None]
    assert [r.json for r in server.requests] == [REQUEST] * 3


async def test_every_resumed_attempt_carries_the_options() -> None:
    text = "The options ride along with every attempt of the reply."
    replies = [Reply.text(text, chunk_size=4, fault=Fault("cut", after=6)), Reply.text(text, chunk_size=4)]
    async with MockServer(*replies) as server:
        async with client_for(server, resume="prefill") as client:
            async with client.messages.stream(**REQUEST, **OPTIONS) as stream:
                assert await stream.get_final_text() == text
                assert [info.strategy for info in stream.resumes] == ["prefill"]
    assert len(server.requests) == 2
    for request in server.requests:
        assert (request.query, request.headers["anthropic-beta"]) == ("beta=true&n=2", "b-0,b-1,b-2")
    first, second = (request.json for request in server.requests)
    assert first == {**REQUEST, "speed": "fast", "stream": True}
    assert second == {**first, "messages": [*USER, {"role": "assistant", "content": "The options ride"}]}


# -- the per-call timeout -----------------------------------------------------------------------


async def test_create_times_out_per_call() -> None:
    async with MockServer(default=Reply.text("late", fault=Fault("hang"))) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.APITimeoutError) as caught:
                await client.messages.create(**REQUEST, timeout=STALL)
    assert type(caught.value) is streamkit.APITimeoutError
    assert caught.value.message == "the request timed out before the API answered: ReadTimeout('')"
    assert caught.value.request_id is None
    assert server.requests[0].json == REQUEST


async def test_a_per_call_read_timeout_shorter_than_the_stall_timeout_ends_a_silent_stream() -> None:
    async with MockServer(Reply.text("abcdefgh", chunk_size=2, fault=Fault("hang", after=4))) as server:
        async with one_attempt_client(server, stall_timeout=5.0) as client:
            with pytest.raises(streamkit.StreamTimeoutError) as caught:
                async with client.messages.stream(**REQUEST, timeout=STALL) as stream:
                    await stream.get_final_message()
    assert type(caught.value) is streamkit.StreamTimeoutError
    assert caught.value.message == "the connection failed after the stream started: ReadTimeout('')"
    assert caught.value.partial_message is not None and caught.value.partial_message.text == "abcd"


async def test_the_stall_watchdog_still_works_with_a_per_call_timeout() -> None:
    """Pings keep a per-call read timeout from firing; the watchdog sees no progress and fires."""
    reply = Reply.text("abcdefgh", chunk_size=2, fault=Fault("stall", after=4, ping_interval=0.02))
    async with MockServer(reply) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.StallError) as caught:
                async with client.messages.stream(**REQUEST, timeout=STALL / 2, stall_timeout=STALL) as stream:
                    await stream.get_final_message()
    assert type(caught.value) is streamkit.StallError
    assert caught.value.message == f"no progress for {STALL} s (only pings or silence): the stream stalled"
    assert caught.value.partial_message is not None and caught.value.partial_message.text == "abcd"


async def test_a_per_call_timeout_longer_than_the_stall_timeout_leaves_the_stall_to_the_watchdog() -> None:
    async with MockServer(Reply.text("abcdefgh", chunk_size=2, fault=Fault("hang", after=4))) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.StallError) as caught:
                async with client.messages.stream(**REQUEST, timeout=30.0, stall_timeout=STALL) as stream:
                    await stream.get_final_message()
    assert caught.value.message == f"no progress for {STALL} s (only pings or silence): the stream stalled"


# -- with_options --------------------------------------------------------------------------------


async def test_with_options_shares_the_pool_and_changes_defaults() -> None:
    async with MockServer(default=Reply.text("ok")) as server:
        async with client_for(server, default_headers={"x-team": "a"}, default_query={"v": "1"}) as client:
            derived = client.with_options(
                max_retries=0, default_headers={"x-app": "b"}, default_query={"w": 2}, api_version="2099-01-01"
            )
            assert derived._http is client._http
            assert derived is not client and derived.messages is not client.messages
            assert (derived.retry_policy.max_retries, client.retry_policy.max_retries) == (0, 2)
            assert derived.default_headers == {"x-team": "a", "x-app": "b"}
            assert (derived.api_key, derived.base_url) == (client.api_key, client.base_url)
            assert derived.retry_policy.initial_delay == client.retry_policy.initial_delay == 0.01
            await derived.messages.create(**REQUEST, extra_headers={"x-app": "c"})
            async with derived:
                pass  # closing the derived client leaves the pool open
            assert not client._http.is_closed
            await client.messages.create(**REQUEST)
        assert client._http.is_closed
    sent = [(r.headers.get("x-team"), r.headers.get("x-app"), r.headers["anthropic-version"]) for r in server.requests]
    assert [r.query for r in server.requests] == ["v=1&w=2", "v=1"]
    assert sent == [("a", "c", "2099-01-01"), ("a", None, "2023-06-01")]


async def test_with_options_timeout_applies_to_the_shared_pool() -> None:
    async with MockServer(default=Reply.text("late", fault=Fault("hang"))) as server:
        async with one_attempt_client(server) as client:
            quick = client.with_options(timeout=STALL)
            with pytest.raises(streamkit.APITimeoutError) as caught:
                await quick.messages.create(**REQUEST)
            assert (quick.timeout, client.timeout) == (STALL, streamkit.NOT_GIVEN)
    assert caught.value.message == "the request timed out before the API answered: ReadTimeout('')"
