"""Code written for the official ``anthropic`` SDK, ported to streamkit, against the mock server.

The first part ports the SDK's own usage examples (streaming, handling errors, request
ids, raw headers, default headers), written fresh for ``streamkit.AsyncClient``: the
same shape of code, the same branches taken.  The rest pins down what makes that work:
the error classes (names, exports, the exact subclass table), each status's class,
request ids and response headers on streams, messages and errors, the rate-limit
headers parsed, and the headers every request carries.
"""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import closed_port, one_attempt_client

import streamkit
from streamkit import _errors
from streamkit.testing import Fault, MockServer, Reply

pytestmark = pytest.mark.anyio

RID = "req_SDKCOMPAT0123456789abcdef"
MODEL = "claude-mock-1"
HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Hello, Claude"}]
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 1024, "messages": HELLO}
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

LIMITS = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2026-12-01T10:00:05Z",
    "anthropic-ratelimit-tokens-limit": "2000000",
    "anthropic-ratelimit-tokens-remaining": "1999000",
    "anthropic-ratelimit-tokens-reset": "2026-12-01T10:00:01+00:00",
    "anthropic-ratelimit-input-tokens-limit": "1600000",
    "anthropic-ratelimit-input-tokens-remaining": "1599990",
    "anthropic-ratelimit-input-tokens-reset": "2026-12-01T10:00:00.5Z",
    "anthropic-ratelimit-output-tokens-limit": "400000",
    "anthropic-ratelimit-output-tokens-remaining": "399010",
    "anthropic-ratelimit-output-tokens-reset": "2026-12-01T11:00:00+01:00",
}
PARSED_LIMITS = streamkit.RateLimits(
    requests=streamkit.RateLimit(limit=4000, remaining=3999, reset=datetime(2026, 12, 1, 10, 0, 5, tzinfo=UTC)),
    tokens=streamkit.RateLimit(limit=2_000_000, remaining=1_999_000, reset=datetime(2026, 12, 1, 10, 0, 1, tzinfo=UTC)),
    input_tokens=streamkit.RateLimit(
        limit=1_600_000, remaining=1_599_990, reset=datetime(2026, 12, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    ),
    output_tokens=streamkit.RateLimit(
        limit=400_000, remaining=399_010, reset=datetime(2026, 12, 1, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    ),
)


# -- the SDK's usage examples, ported ------------------------------------------------


async def test_port_streaming_helpers_text_stream_then_final_message() -> None:
    """``async with client.messages.stream(...)``: print the text as it comes, then the final message."""
    printed: list[str] = []
    async with MockServer(Reply.text("Hello there! How can I help?", chunk_size=5, request_id=RID)) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url) as client:
            async with client.messages.stream(
                max_tokens=1024,
                messages=[{"role": "user", "content": "Say hello there!"}],
                model=MODEL,
            ) as stream:
                async for text in stream.text_stream:
                    printed.append(text)
            message = await stream.get_final_message()
    assert printed == ["Hello", " ther", "e! Ho", "w can", " I he", "lp?"]
    assert message.text == "Hello there! How can I help?"
    assert json.loads(message.model_dump_json())["content"] == [
        {"type": "text", "text": "Hello there! How can I help?", "citations": None}
    ]
    assert message._request_id == message.request_id == stream.request_id == RID


async def test_port_streaming_responses_event_types() -> None:
    """``async for event in stream: print(event.type)``."""
    async with MockServer(Reply.text("Hello, human")) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url) as client:
            async with client.messages.stream(**REQUEST) as stream:
                types = [event.type async for event in stream]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def handle(client: streamkit.AsyncClient) -> list[Any]:
    """The SDK's "Handling errors" example: three except clauses, in its order."""
    seen: list[Any] = []
    try:
        await client.messages.create(max_tokens=1024, messages=HELLO, model=MODEL)
    except streamkit.APIConnectionError as e:
        seen += ["The server could not be reached", type(e.__cause__)]
    except streamkit.RateLimitError as e:
        seen += ["A 429 status code was received; we should back off a bit.", e.status_code]
    except streamkit.APIStatusError as e:
        seen += ["Another non-200-range status code was received", e.status_code, e.request_id]
    return seen


async def test_port_handling_errors_connection() -> None:
    async with streamkit.AsyncClient(
        api_key="test-key", base_url=f"http://127.0.0.1:{closed_port()}", max_retries=0
    ) as client:
        assert await handle(client) == ["The server could not be reached", httpx.ConnectError]


async def test_port_handling_errors_rate_limit() -> None:
    async with MockServer(Reply.error(429, request_id=RID)) as server:
        async with one_attempt_client(server) as client:
            assert await handle(client) == ["A 429 status code was received; we should back off a bit.", 429]


@pytest.mark.parametrize("status", [400, 404, 500, 503, 529])
async def test_port_handling_errors_other_status(status: int) -> None:
    async with MockServer(Reply.error(status, request_id=RID)) as server:
        async with one_attempt_client(server) as client:
            assert await handle(client) == ["Another non-200-range status code was received", status, RID]


async def test_port_handling_errors_catch_all_api_error() -> None:
    """"All errors inherit from APIError": a connection failure and a status error alike."""
    caught: list[str] = []
    async with MockServer(Reply.error(401, request_id=RID)) as server:
        for base_url in (server.base_url, f"http://127.0.0.1:{closed_port()}"):
            async with one_attempt_client(base_url) as client:
                try:
                    await client.messages.create(**REQUEST)
                except streamkit.APIError as e:
                    caught.append(type(e).__name__)
    assert caught == ["AuthenticationStatusError", "APIConnectionError"]


async def test_port_request_ids() -> None:
    """``print(message._request_id)``, for create() and for a stream."""
    async with MockServer(Reply.text("Hi", request_id=RID), Reply.text("Hi", request_id=RID + "2")) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url) as client:
            message = await client.messages.create(**REQUEST)
            async with client.messages.stream(**REQUEST) as stream:
                streamed = await stream.get_final_message()
    assert (message._request_id, message.request_id) == (RID, RID)
    assert (streamed._request_id, streamed.request_id) == (RID + "2", RID + "2")
    assert message == streamkit.Message.model_validate(message.model_dump())  # the origin does not count


async def test_port_raw_response_headers() -> None:
    """``response.headers.get('X-My-Header')``: the headers come with the message itself."""
    reply = Reply.text("Hi", request_id=RID, headers={"x-my-header": "my value"})
    async with MockServer(reply, reply) as server:
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url) as client:
            message = await client.messages.create(**REQUEST)
            async with client.messages.stream(**REQUEST) as stream:
                assert stream.headers is not None
                assert stream.headers.get("X-My-Header") == "my value"
                streamed = await stream.get_final_message()
    assert message.headers is not None and streamed.headers is not None
    assert message.headers.get("X-My-Header") == streamed.headers.get("x-my-header") == "my value"
    assert message.headers.get("request-id") == RID
    assert message.content[0].type == "text"


async def test_port_default_headers_anthropic_version() -> None:
    """The SDK overrides ``anthropic-version`` with default headers; streamkit has a parameter."""
    async with MockServer(Reply.text("a"), Reply.text("b"), Reply.text("c")) as server:
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url, api_version="2099-01-01") as client:
            await client.messages.create(**REQUEST)
            async with client.messages.stream(**REQUEST) as stream:
                await stream.get_final_text()
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
            await client.messages.create(**REQUEST)
        sent = [request.headers.get("anthropic-version") for request in server.requests]
    assert sent == ["2099-01-01", "2099-01-01", "2023-06-01"]


async def test_port_retries_max_retries() -> None:
    """``client = Anthropic(max_retries=0)``: one request, the overload raised as it came."""
    async with MockServer(Reply.error(529, request_id=RID), Reply.text("never sent")) as server:
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(streamkit.OverloadedError) as caught:
                await client.messages.create(**REQUEST)
        assert len(server.requests) == 1
    assert type(caught.value) is streamkit.OverloadedStatusError
    assert not isinstance(caught.value, streamkit.InternalServerError)  # as in the SDK


# -- the error classes ----------------------------------------------------------------

KINDS = [
    streamkit.InvalidRequestError,
    streamkit.AuthenticationError,
    streamkit.PermissionDeniedError,
    streamkit.NotFoundError,
    streamkit.ConflictError,
    streamkit.RequestTooLargeError,
    streamkit.UnprocessableEntityError,
    streamkit.RateLimitError,
    streamkit.InternalServerError,
    streamkit.OverloadedError,
]
BASES = [
    streamkit.StreamkitError,
    streamkit.APIError,
    streamkit.APIStatusError,
    streamkit.StreamError,
    streamkit.APIConnectionError,
    streamkit.IncompleteStreamError,
    *KINDS,
]
S, A, P, E = streamkit.StreamkitError, streamkit.APIError, streamkit.APIStatusError, streamkit.StreamError

# Every class streamkit can raise, and exactly which of BASES it is a subclass of.
CLASS_TABLE: list[tuple[type[Exception], set[type[Exception]]]] = [
    (streamkit.InvalidRequestStatusError, {S, A, P, streamkit.InvalidRequestError}),
    (streamkit.InvalidRequestStreamError, {S, A, E, streamkit.InvalidRequestError}),
    (streamkit.AuthenticationStatusError, {S, A, P, streamkit.AuthenticationError}),
    (streamkit.AuthenticationStreamError, {S, A, E, streamkit.AuthenticationError}),
    (streamkit.PermissionDeniedStatusError, {S, A, P, streamkit.PermissionDeniedError}),
    (streamkit.PermissionDeniedStreamError, {S, A, E, streamkit.PermissionDeniedError}),
    (streamkit.NotFoundStatusError, {S, A, P, streamkit.NotFoundError}),
    (streamkit.NotFoundStreamError, {S, A, E, streamkit.NotFoundError}),
    (streamkit.ConflictStatusError, {S, A, P, streamkit.ConflictError}),
    (streamkit.RequestTooLargeStatusError, {S, A, P, streamkit.RequestTooLargeError}),
    (streamkit.RequestTooLargeStreamError, {S, A, E, streamkit.RequestTooLargeError}),
    (streamkit.UnprocessableEntityStatusError, {S, A, P, streamkit.UnprocessableEntityError}),
    (streamkit.RateLimitStatusError, {S, A, P, streamkit.RateLimitError}),
    (streamkit.RateLimitStreamError, {S, A, E, streamkit.RateLimitError}),
    (streamkit.InternalServerStatusError, {S, A, P, streamkit.InternalServerError}),
    (streamkit.InternalServerStreamError, {S, A, E, streamkit.InternalServerError}),
    (streamkit.OverloadedStatusError, {S, A, P, streamkit.OverloadedError}),
    (streamkit.OverloadedStreamError, {S, A, E, streamkit.OverloadedError}),
    (streamkit.APIStatusError, {S, A, P}),
    (streamkit.StreamError, {S, A, E}),
    (streamkit.APIConnectionError, {S, A, streamkit.APIConnectionError}),
    (streamkit.APITimeoutError, {S, A, streamkit.APIConnectionError}),
    (streamkit.RequestTooLargeError, {S, A, streamkit.RequestTooLargeError}),  # the local 32 MB refusal
    (streamkit.IncompleteStreamError, {S, streamkit.IncompleteStreamError}),
    (streamkit.ConnectionLostError, {S, streamkit.IncompleteStreamError}),
    (streamkit.StreamTimeoutError, {S, streamkit.IncompleteStreamError}),
    (streamkit.StallError, {S, streamkit.IncompleteStreamError}),
    (streamkit.ProtocolError, {S}),
    (streamkit.StreamingRequiredError, {S}),
    (streamkit.RequestBodyError, {S}),
    (streamkit.LocalFileError, {S}),  # a download's target could not be written
    (streamkit.ClientClosedError, {S}),  # a request on a closed pool: nothing sent
    (streamkit.StreamkitError, {S}),
]


@pytest.mark.parametrize(("cls", "bases"), CLASS_TABLE, ids=[cls.__name__ for cls, _ in CLASS_TABLE])
def test_subclass_table(cls: type[Exception], bases: set[type[Exception]]) -> None:
    assert {base for base in BASES if issubclass(cls, base)} == bases


def test_the_sdk_relations_hold() -> None:
    assert streamkit.BadRequestError is streamkit.InvalidRequestError
    assert issubclass(streamkit.APIConnectionError, streamkit.APIError)
    assert issubclass(streamkit.APITimeoutError, streamkit.APIConnectionError)
    assert issubclass(streamkit.APIStatusError, streamkit.APIError)
    assert not issubclass(streamkit.OverloadedError, streamkit.InternalServerError)
    assert not issubclass(streamkit.InternalServerError, streamkit.OverloadedError)
    assert not issubclass(streamkit.APIConnectionError, streamkit.APIStatusError)
    # streamkit's axes, kept: a failure after the 200 is not a connection failure, nor a status error.
    assert not issubclass(streamkit.ConnectionLostError, streamkit.APIConnectionError)
    assert not issubclass(streamkit.StreamTimeoutError, streamkit.APITimeoutError)
    assert not issubclass(streamkit.StreamError, streamkit.APIStatusError)


def raisable() -> set[type[BaseException]]:
    """Every exception class defined in ``streamkit._errors`` (an alias counted once)."""
    return {
        cls
        for _, cls in inspect.getmembers(_errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == _errors.__name__
    }


def test_every_error_class_is_named_exported_documented_and_in_the_table() -> None:
    classes = raisable()
    assert len(classes) == 43
    assert {cls for cls, _ in CLASS_TABLE} | set(KINDS) | {streamkit.APIError} == classes
    for cls in classes:
        assert getattr(streamkit, cls.__name__) is cls, cls
        assert cls.__name__ in streamkit.__all__
        assert cls.__qualname__ == cls.__name__
        assert cls.__doc__, cls
        assert f"`{cls.__name__}`" in README, f"{cls.__name__} is not in the README"
    assert "BadRequestError" in streamkit.__all__


def test_readme_maps_every_sdk_name() -> None:
    sdk_names = [
        "APIError",
        "APIStatusError",
        "APIConnectionError",
        "APITimeoutError",
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "ConflictError",
        "RequestTooLargeError",
        "UnprocessableEntityError",
        "RateLimitError",
        "InternalServerError",
        "OverloadedError",
    ]
    rows = [line for line in README.splitlines() if line.startswith("| `anthropic.")]
    assert [row.split("`")[1] for row in rows][: len(sdk_names)] == [f"anthropic.{name}" for name in sdk_names]
    for name in sdk_names:
        assert isinstance(getattr(streamkit, name), type)


STATUS_CLASSES = [
    (400, streamkit.InvalidRequestStatusError, streamkit.BadRequestError),
    (401, streamkit.AuthenticationStatusError, streamkit.AuthenticationError),
    (403, streamkit.PermissionDeniedStatusError, streamkit.PermissionDeniedError),
    (404, streamkit.NotFoundStatusError, streamkit.NotFoundError),
    (409, streamkit.ConflictStatusError, streamkit.ConflictError),
    (413, streamkit.RequestTooLargeStatusError, streamkit.RequestTooLargeError),
    (422, streamkit.UnprocessableEntityStatusError, streamkit.UnprocessableEntityError),
    (429, streamkit.RateLimitStatusError, streamkit.RateLimitError),
    (500, streamkit.InternalServerStatusError, streamkit.InternalServerError),
    (502, streamkit.InternalServerStatusError, streamkit.InternalServerError),
    (503, streamkit.InternalServerStatusError, streamkit.InternalServerError),
    (504, streamkit.InternalServerStatusError, streamkit.InternalServerError),
    (529, streamkit.OverloadedStatusError, streamkit.OverloadedError),
    (402, streamkit.APIStatusError, streamkit.APIStatusError),
    (418, streamkit.APIStatusError, streamkit.APIStatusError),
]
OWN_TYPES = {402: "billing_error", 418: "teapot_error"}  # the mock would say api_error


@pytest.mark.parametrize(("status", "cls", "sdk_name"), STATUS_CLASSES)
async def test_each_status_raises_the_class_the_sdk_would_catch(
    status: int, cls: type[Exception], sdk_name: type[Exception]
) -> None:
    error_type = OWN_TYPES.get(status)
    reply = Reply.error(status, error_type, message=f"no {status}", request_id=RID, headers=LIMITS)
    async with MockServer(reply) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(sdk_name) as caught:
                await client.messages.create(**REQUEST)
    error = caught.value
    assert type(error) is cls
    assert isinstance(error, streamkit.APIStatusError)
    assert (error.status_code, error.message, error.request_id) == (status, f"no {status}", RID)
    assert error.headers is not None and error.headers["request-id"] == RID
    assert error.rate_limits == PARSED_LIMITS


async def test_the_kind_follows_the_status_even_when_the_body_names_another_type() -> None:
    async with MockServer(Reply.error(500, error_type="overloaded_error", request_id=RID)) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.APIStatusError) as caught:
                await client.messages.create(**REQUEST)
    assert type(caught.value) is streamkit.InternalServerStatusError
    assert caught.value.error_type == "overloaded_error"


async def test_a_status_the_sdk_does_not_map_takes_the_kind_of_a_known_type() -> None:
    async with MockServer(Reply.error(418, error_type="rate_limit_error", request_id=RID)) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.RateLimitError) as caught:
                await client.messages.create(**REQUEST)
    assert type(caught.value) is streamkit.RateLimitStatusError
    assert (caught.value.status_code, caught.value.error_type) == (418, "rate_limit_error")


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("invalid_request_error", streamkit.InvalidRequestStreamError),
        ("authentication_error", streamkit.AuthenticationStreamError),
        ("permission_error", streamkit.PermissionDeniedStreamError),
        ("not_found_error", streamkit.NotFoundStreamError),
        ("request_too_large", streamkit.RequestTooLargeStreamError),
        ("rate_limit_error", streamkit.RateLimitStreamError),
        ("api_error", streamkit.InternalServerStreamError),
        ("overloaded_error", streamkit.OverloadedStreamError),
        ("timeout_error", streamkit.StreamError),
    ],
)
async def test_each_in_stream_error_type_raises_its_named_class(error_type: str, cls: type[Exception]) -> None:
    reply = Reply.text("Hello world", chunk_size=3, request_id=RID, fault=Fault("error", 4, error_type=error_type))
    async with MockServer(reply) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.StreamError) as caught:
                async with client.messages.stream(**REQUEST) as stream:
                    await stream.get_final_message()
    error = caught.value
    assert type(error) is cls
    assert (error.status_code, error.error_type, error.request_id, error.headers) == (200, error_type, RID, None)
    assert error.partial_message is not None
    assert (error.partial_message.text, error.partial_message.request_id) == ("Hello ", RID)


# -- request ids and headers ----------------------------------------------------------


async def test_stream_headers_and_rate_limits_are_those_of_the_attempt_being_read() -> None:
    first = Reply.text("Hello world", chunk_size=3, request_id=RID, headers=LIMITS, fault=Fault("cut", 4))
    second = Reply.text("Hello world", chunk_size=3, request_id=RID + "2")
    async with MockServer(first, second) as server:
        async with one_attempt_client(server, resume="prefill", max_resumes=1) as client:
            stream = client.messages.stream(**REQUEST)
            assert (stream.headers, stream.request_id, stream.rate_limits) == (None, None, streamkit.RateLimits())
            async with stream:
                assert stream.request_id == RID
                assert stream.headers is not None and stream.headers["request-id"] == RID
                assert stream.rate_limits == PARSED_LIMITS
                message = await stream.get_final_message()
                assert stream.request_id == RID + "2"
                assert stream.headers["request-id"] == RID + "2"
                assert stream.rate_limits == streamkit.RateLimits()
    assert message.text == "Hello world"
    assert message.request_id == RID + "2"
    assert message.headers is stream.headers
    assert [(info.failed_request_id, info.request_id) for info in stream.resumes] == [(RID, RID + "2")]


async def test_create_message_headers_and_rate_limits() -> None:
    async with MockServer(Reply.text("Hi", request_id=RID, headers=LIMITS)) as server:
        async with client_of(server) as client:
            message = await client.messages.create(**REQUEST)
    assert message.request_id == RID
    assert message.headers is not None and message.headers["anthropic-ratelimit-tokens-limit"] == "2000000"
    assert message.rate_limits == PARSED_LIMITS


async def test_on_message_and_partial_message_carry_the_request_id() -> None:
    seen: list[streamkit.Message] = []
    replies = [Reply.text("Hi", request_id=RID), Reply.text("Hi", request_id=RID + "2", fault=Fault("cut", 3))]
    async with MockServer(*replies) as server:
        async with one_attempt_client(server) as client:
            async with client.messages.stream(**REQUEST, on_message=seen.append) as stream:
                await stream.get_final_message()
            with pytest.raises(streamkit.ConnectionLostError) as caught:
                async with client.messages.stream(**REQUEST) as stream:
                    await stream.get_final_message()
    assert [message.request_id for message in seen] == [RID]
    assert caught.value.request_id == RID + "2"
    assert caught.value.partial_message is not None and caught.value.partial_message.request_id == RID + "2"


def test_a_message_built_by_hand_has_no_origin() -> None:
    message = streamkit.Message(id="msg_1", model=MODEL)
    assert (message.request_id, message._request_id, message.headers) == (None, None, None)
    assert message.rate_limits == streamkit.RateLimits()


@pytest.mark.parametrize(
    ("reply", "cls"),
    [
        (Reply(body='{"not": "a message"}', content_type="application/json", request_id=RID), streamkit.ProtocolError),
        (Reply.text("Hello world", request_id=RID, fault=Fault("cut", 1)), streamkit.APIConnectionError),
        (Reply.text("Hello world", request_id=RID, fault=Fault("stall", 1)), streamkit.APITimeoutError),
    ],
    ids=["not-a-message", "cut-body", "stalled-body"],
)
async def test_create_failures_after_the_headers_carry_the_request_id(reply: Reply, cls: type[Exception]) -> None:
    async with MockServer(reply) as server:
        async with one_attempt_client(server, timeout=0.3) as client:
            with pytest.raises(streamkit.StreamkitError) as caught:
                await client.messages.create(**REQUEST)
    assert type(caught.value) is cls
    assert caught.value.request_id == RID


# -- rate limits parsed ----------------------------------------------------------------


def test_rate_limits_parsed_from_every_dimension() -> None:
    assert streamkit.RateLimits.from_headers(LIMITS) == PARSED_LIMITS
    assert streamkit.RateLimits.from_headers(httpx.Headers(LIMITS)) == PARSED_LIMITS
    upper = {name.upper(): value for name, value in LIMITS.items()}
    assert streamkit.RateLimits.from_headers(upper) == PARSED_LIMITS


def test_rate_limits_missing_dimensions_and_parts() -> None:
    assert streamkit.RateLimits.from_headers(None) == streamkit.RateLimits()
    assert streamkit.RateLimits.from_headers({}) == streamkit.RateLimits(
        requests=None, tokens=None, input_tokens=None, output_tokens=None
    )
    only = streamkit.RateLimits.from_headers({"anthropic-ratelimit-tokens-remaining": "7", "x-other": "1"})
    assert only == streamkit.RateLimits(tokens=streamkit.RateLimit(limit=None, remaining=7, reset=None))


def test_rate_limits_of_a_repeated_header() -> None:
    # A mapping with a name twice (in two cases): the last wins.
    twice = {"anthropic-ratelimit-requests-limit": "1", "Anthropic-RateLimit-Requests-Limit": "2"}
    assert streamkit.RateLimits.from_headers(twice) == streamkit.RateLimits(requests=streamkit.RateLimit(limit=2))
    # httpx joins a repeated header's values ("1, 2"): not a count.
    joined = httpx.Headers([("anthropic-ratelimit-requests-limit", "1"), ("anthropic-ratelimit-requests-limit", "2")])
    assert streamkit.RateLimits.from_headers(joined) == streamkit.RateLimits(requests=streamkit.RateLimit())
    # Near misses are not these headers.
    near = {"anthropic-ratelimit-requests": "1", "anthropic-ratelimit-requests-limits": "1", "x-ratelimit-limit": "1"}
    assert streamkit.RateLimits.from_headers(near) == streamkit.RateLimits()


@pytest.mark.parametrize(
    "value",
    ["", " ", "-1", "1.5", "1e3", "0x10", "ten", "٣", "²", "1" * 31, "+5", "5 5", "null"],
)
def test_malformed_counts_are_none(value: str) -> None:
    parsed = streamkit.RateLimits.from_headers(
        {"anthropic-ratelimit-requests-limit": value, "anthropic-ratelimit-requests-remaining": " 12 "}
    )
    assert parsed == streamkit.RateLimits(requests=streamkit.RateLimit(limit=None, remaining=12, reset=None))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "tomorrow",
        "2026-12-01",  # no time
        "2026-12-01T10:00:00",  # no offset: not RFC 3339
        "2026-13-01T10:00:00Z",
        "2026-12-01T25:00:00Z",
        "Tue, 01 Dec 2026 10:00:00 GMT",  # an HTTP date, not RFC 3339
        "2026-12-01T10:00:00Z" + "0" * 100,
        "\uff11\uff19\uff19\uff19-01-01T00:00:00Z",  # fullwidth digits
    ],
)
def test_malformed_resets_are_none(value: str) -> None:
    parsed = streamkit.RateLimits.from_headers({"anthropic-ratelimit-output-tokens-reset": value})
    assert parsed == streamkit.RateLimits(output_tokens=streamkit.RateLimit())


# -- the headers every request carries ---------------------------------------------------


async def test_user_agent_and_anthropic_version_on_every_request() -> None:
    async with MockServer(Reply.text("a"), Reply.text("b")) as server:
        async with client_of(server) as client:
            await client.messages.create(**REQUEST)
            async with client.messages.stream(**REQUEST) as stream:
                await stream.get_final_text()
        heads = [(r.headers.get("user-agent"), r.headers.get("anthropic-version")) for r in server.requests]
    assert heads == [(f"streamkit/{streamkit.__version__}", "2023-06-01")] * 2
    assert streamkit.__version__ == "0.1.0"


async def test_extra_headers_override_the_defaults() -> None:
    async with MockServer(Reply.text("a")) as server:
        async with client_of(server) as client:
            await client.messages.create(
                **REQUEST, extra_headers={"user-agent": "my-app/2", "anthropic-version": "2024-01-01"}
            )
        head = server.requests[0].headers
    assert (head["user-agent"], head["anthropic-version"]) == ("my-app/2", "2024-01-01")


def test_default_model_is_current() -> None:
    assert streamkit.DEFAULT_MODEL == "claude-sonnet-5-5"
    assert "claude-sonnet-4-5" not in README


def client_of(server: MockServer) -> streamkit.AsyncClient:
    return one_attempt_client(server)
