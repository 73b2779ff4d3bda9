"""streamkit.Client, the sync client, against the real loopback mock server.

The mock server is async: it runs in a background thread (an anyio blocking portal) while
the sync client runs in the test thread.  Where a behaviour exists in both worlds, the sync
client's result is checked against the async client's for the same reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from conftest import FAST, STALL, closed_port

import streamkit
from streamkit import ResumeInfo, RetryInfo
from streamkit.testing import Fault, MockServer, Reply, lorem

RID = "req_SYNC0123456789abcdef"
MODEL = "claude-mock-1"
HELLO = "Hello, world"
USER: list[dict[str, Any]] = [{"role": "user", "content": "Hello, Claude"}]
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 1024, "messages": USER}
TEXT = lorem(3000, seed=5)
CHUNK = 7


@dataclass
class SyncServer:
    """A ``MockServer`` running in a portal's thread, driven from the test thread."""

    server: MockServer
    portal: anyio.from_thread.BlockingPortal

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[Any]:
        return list(self.server.requests)

    def wait_connections(self, count: int, timeout: float = 3.0) -> None:
        self.portal.call(lambda: self.server.wait_connections(count, timeout=timeout))


@contextmanager
def serve(*replies: Reply) -> Iterator[SyncServer]:
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(MockServer(*replies)) as server:
            yield SyncServer(server, portal)


def client_for(server: SyncServer | str, **options: Any) -> streamkit.Client:
    base_url = server if isinstance(server, str) else server.base_url
    return streamkit.Client(api_key="test-key", base_url=base_url, **{**FAST, **options})


def one_attempt(server: SyncServer | str, **options: Any) -> streamkit.Client:
    return client_for(server, **{"max_retries": 0, "resume": False, **options})


def async_final(reply: Reply, **call: Any) -> tuple[list[str], streamkit.Message]:
    """What the async client makes of ``reply``: its event types and final message."""

    async def main() -> tuple[list[str], streamkit.Message]:
        async with MockServer(reply) as server:
            async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url) as client:
                async with client.messages.stream(**REQUEST, **call) as stream:
                    types = [event.type async for event in stream]
                    return types, await stream.get_final_message()

    return anyio.run(main)


# -- the three ways to consume ------------------------------------------------------


def test_events_text_stream_and_final_message_match_the_async_client() -> None:
    reply = Reply.text(HELLO, chunk_size=5, request_id=RID, ping_every=2, message_id="msg_sync")
    with serve(reply, reply, reply) as server, client_for(server) as client:
        with client.messages.stream(**REQUEST) as stream:
            events = list(stream)
            message = stream.get_final_message()
            assert stream.current_message is not None and stream.current_message.text == HELLO
        with client.messages.stream(**REQUEST) as stream:
            texts = list(stream.text_stream)
            assert stream.get_final_text() == HELLO
        with client.messages.stream(**REQUEST) as stream:
            alone = stream.get_final_message()
    async_types, async_message = async_final(reply)
    assert [event.type for event in events] == async_types
    assert "ping" in async_types
    assert texts == ["Hello", ", wor", "ld"]
    assert message == alone == async_message
    assert message.model_dump() == async_message.model_dump()
    assert message.request_id == stream.request_id == RID
    assert stream.headers is not None and stream.headers["request-id"] == RID
    assert (stream.retries, stream.resumes, stream.rewinds) == ([], [], [])


def test_text_stream_then_iterator_then_final_text() -> None:
    text = lorem(300, seed=2)
    with serve(Reply.text(text, chunk_size=10)) as server, client_for(server) as client:
        with client.messages.stream(**REQUEST) as stream:
            first = [next(stream.text_stream) for _ in range(3)]
            deltas = [event for event in stream if event.type == "content_block_delta"][:2]
            rest = stream.get_final_text()
    assert "".join(first) == text[:30]
    assert len(deltas) == 2
    assert rest == text


# -- hooks --------------------------------------------------------------------------


def test_plain_function_hooks_see_every_piece() -> None:
    seen: dict[str, list[Any]] = {"text": [], "event": [], "message": []}
    with serve(Reply.text(HELLO, chunk_size=5)) as server, client_for(server) as client:
        with client.messages.stream(
            **REQUEST,
            on_text=seen["text"].append,
            on_event=lambda event: seen["event"].append(event.type),
            on_message=seen["message"].append,
        ) as stream:
            final = stream.get_final_message()
    assert seen["text"] == ["Hello", ", wor", "ld"]
    assert seen["event"][0] == "message_start" and seen["event"][-1] == "message_stop"
    assert seen["message"] == [final]


def test_an_async_hook_is_refused() -> None:
    async def on_text(text: str) -> None:
        pass

    with streamkit.Client(api_key="k", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(TypeError, match=r"async function: streamkit\.Client calls hooks as plain functions"):
            client.messages.stream(**REQUEST, on_text=on_text)


def test_a_hook_returning_an_awaitable_is_refused() -> None:
    async def later(text: str) -> None:
        pass

    with serve(Reply.text(HELLO, chunk_size=5)) as server, client_for(server) as client:
        with client.messages.stream(**REQUEST, on_text=lambda text: later(text)) as stream:
            with pytest.raises(TypeError, match="returned an awaitable"):
                stream.get_final_message()


def test_on_error_sees_the_error_raised() -> None:
    errors: list[streamkit.StreamkitError] = []
    with serve(Reply.error(400, request_id=RID)) as server, one_attempt(server) as client:
        with pytest.raises(streamkit.BadRequestError) as caught:
            with client.messages.stream(**REQUEST, on_error=errors.append):
                pass
    assert errors == [caught.value]


# -- create, retries, resumes ------------------------------------------------------


def test_create_returns_the_whole_message() -> None:
    with serve(Reply.text(HELLO, request_id=RID, headers={"x-my-header": "v"})) as server, client_for(server) as client:
        message = client.messages.create(**REQUEST)
    assert message.text == HELLO
    assert message.request_id == RID
    assert message.headers is not None and message.headers["x-my-header"] == "v"
    assert json.loads(server.requests[0].body).get("stream", False) is False
    assert server.requests[0].headers["accept"] == "application/json"


def test_create_refuses_a_reply_that_must_be_streamed() -> None:
    with streamkit.Client(api_key="k", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(streamkit.StreamingRequiredError):
            client.messages.create(model=MODEL, max_tokens=100_000, messages=USER)


def test_a_429_before_the_stream_is_retried() -> None:
    retries: list[RetryInfo] = []
    with serve(Reply.error(429, request_id="req_1"), Reply.text(HELLO, request_id="req_2")) as server:
        with client_for(server) as client:
            with client.messages.stream(**REQUEST, on_retry=retries.append) as stream:
                assert stream.get_final_text() == HELLO
            created_retries: list[RetryInfo] = []
            server.server.push(Reply.error(529), Reply.text("again"))
            assert client.messages.create(**REQUEST, on_retry=created_retries.append).text == "again"
    assert [type(info.error) for info in retries] == [streamkit.RateLimitStatusError]
    assert stream.retries == retries and stream.request_id == "req_2"
    assert [info.attempt for info in created_retries] == [1]
    assert len(server.requests) == 4


def resumed(fault: Fault, **call: Any) -> tuple[streamkit.SyncMessageStream, str, streamkit.Message, list[ResumeInfo]]:
    hooked: list[ResumeInfo] = []
    first = Reply.text(TEXT, chunk_size=CHUNK, fault=fault, request_id="req_first")
    with serve(first, Reply.text(TEXT, chunk_size=CHUNK, request_id="req_second")) as server:
        with client_for(server, stall_timeout=STALL) as client:
            with client.messages.stream(
                model="m", max_tokens=4096, messages=USER, on_resume=hooked.append, **call
            ) as stream:
                streamed = "".join(stream.text_stream)
                message = stream.get_final_message()
    return stream, streamed, message, hooked


def test_a_cut_stream_is_resumed_with_prefill_byte_identical() -> None:
    stream, streamed, message, hooked = resumed(Fault("cut", after=40), resume="prefill")
    assert streamed == message.text == TEXT
    assert streamed.encode() == TEXT.encode()
    assert [info.strategy for info in stream.resumes] == ["prefill"]
    assert hooked == stream.resumes
    assert isinstance(hooked[0].cause, streamkit.ConnectionLostError)
    assert message.stop_reason == "end_turn" and stream.request_id == "req_second"


def test_an_overload_inside_the_stream_is_resumed() -> None:
    stream, streamed, message, _ = resumed(Fault("error", after=40))
    assert streamed == message.text == TEXT
    assert len(stream.resumes) == 1 and isinstance(stream.resumes[0].cause, streamkit.OverloadedError)


def test_a_stall_of_pings_is_resumed() -> None:
    stream, streamed, message, _ = resumed(Fault("stall", after=40, ping_interval=0.02))
    assert streamed == message.text == TEXT
    assert isinstance(stream.resumes[0].cause, streamkit.StallError)


# -- the stall watchdog -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stall", "hang"], ids=["pings-only", "silence"])
def test_a_stall_is_detected_with_the_async_message(kind: str) -> None:
    reply = Reply.text(HELLO, chunk_size=5, fault=Fault(kind, after=3, ping_interval=0.02))  # type: ignore[arg-type]
    with serve(reply) as server, one_attempt(server, stall_timeout=STALL) as client:
        with client.messages.stream(**REQUEST) as stream:
            with pytest.raises(streamkit.StallError) as caught:
                stream.get_final_message()
        server.wait_connections(0)
    assert str(caught.value).startswith(f"no progress for {STALL} s (only pings or silence): the stream stalled")
    partial = caught.value.partial_message
    assert partial is not None and partial.text == "Hello"


def test_trouble_after_message_stop_keeps_the_finished_reply() -> None:
    reply = Reply.text(HELLO, chunk_size=5, fault=Fault("stall", after=8, ping_interval=0.02))
    with serve(reply) as server, one_attempt(server, stall_timeout=STALL, drain_timeout=0.1) as client:
        with client.messages.stream(**REQUEST) as stream:
            assert stream.get_final_text() == HELLO


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, streamkit.BadRequestError),
        (401, streamkit.AuthenticationError),
        (404, streamkit.NotFoundError),
        (429, streamkit.RateLimitError),
        (500, streamkit.InternalServerError),
        (529, streamkit.OverloadedError),
    ],
)
def test_errors_by_class_with_request_ids(status: int, cls: type[Exception]) -> None:
    with serve(Reply.error(status, request_id=RID), Reply.error(status, request_id=RID)) as server:
        with one_attempt(server) as client:
            with pytest.raises(cls) as on_create:
                client.messages.create(**REQUEST)
            with pytest.raises(cls) as on_stream:
                with client.messages.stream(**REQUEST):
                    pass
    for caught in (on_create, on_stream):
        assert isinstance(caught.value, streamkit.APIStatusError)
        assert caught.value.status_code == status and caught.value.request_id == RID


def test_an_error_event_without_resume_is_raised_with_its_partial_reply() -> None:
    reply = Reply.text(HELLO, chunk_size=5, fault=Fault("error", after=3), request_id=RID)
    with serve(reply) as server, one_attempt(server) as client:
        with client.messages.stream(**REQUEST) as stream:
            with pytest.raises(streamkit.OverloadedStreamError) as caught:
                list(stream)
    assert caught.value.request_id == RID
    assert caught.value.partial_message is not None and caught.value.partial_message.text == "Hello"


def test_a_connection_refused_is_a_connection_error() -> None:
    with one_attempt(f"http://127.0.0.1:{closed_port()}") as client:
        with pytest.raises(streamkit.APIConnectionError) as caught:
            client.messages.create(**REQUEST)
    assert type(caught.value.__cause__) is httpx.ConnectError


# -- lifecycle, options -------------------------------------------------------------


def test_leaving_the_with_early_closes_the_connection() -> None:
    reply = Reply.text(lorem(4000), chunk_size=8, delay=0.005)  # still streaming for seconds
    with serve(reply, Reply.text(HELLO)) as server, client_for(server) as client:
        with client.messages.stream(**REQUEST) as stream:
            for event in stream:
                if event.type == "content_block_delta":
                    break
        server.wait_connections(0)
        assert client.messages.create(**REQUEST).text == HELLO  # the pool still works


def test_the_client_closes_its_pool_and_only_its_own() -> None:
    with streamkit.Client(api_key="k", base_url="http://127.0.0.1:9") as client:
        derived = client.with_options(max_retries=5, default_headers={"x-a": "1"})
        derived.close()
        assert not client._http.is_closed
    assert client._http.is_closed
    assert derived.retry_policy.max_retries == 5 and derived.default_headers == {"x-a": "1"}
    assert repr(client) == "Client(base_url='http://127.0.0.1:9', api_key=***)"
    own = httpx.Client()
    with streamkit.Client(api_key="k", http_client=own):
        pass
    assert not own.is_closed
    own.close()


def test_options_never_go_in_the_body() -> None:
    with serve(Reply.text("a"), Reply.text("b")) as server:
        with client_for(server, default_query={"q0": "0"}).with_options(default_headers={"x-d": "d"}) as client:
            with client.messages.stream(
                **REQUEST,
                extra_body={"metadata": {"user_id": "u"}},
                extra_query={"q": "1"},
                extra_headers={"x-e": "e"},
                betas=["beta-1", "beta-2"],
                temperature=0.5,
            ) as stream:
                stream.get_final_text()
            client.messages.create(**REQUEST, betas="beta-3", timeout=5.0)
        first, second = server.requests
    body = json.loads(first.body)
    assert body["metadata"] == {"user_id": "u"} and body["temperature"] == 0.5 and body["stream"] is True
    assert not {"extra_body", "extra_query", "extra_headers", "betas", "timeout"} & body.keys()
    assert first.headers["anthropic-beta"] == "beta-1,beta-2" and second.headers["anthropic-beta"] == "beta-3"
    assert first.headers["x-e"] == "e" and first.headers["x-d"] == "d"
    assert first.query == "q0=0&q=1"
    assert first.headers["user-agent"].startswith("streamkit/")


def test_the_default_client_has_keepalive_sockets() -> None:
    from streamkit._transport import keepalive_socket_options

    with streamkit.Client(api_key="k", base_url="http://127.0.0.1:9") as client:
        transport = client._http._transport
        assert isinstance(transport, httpx.HTTPTransport)
        assert transport._pool._socket_options == keepalive_socket_options()


# -- the SDK's usage examples, ported (tests/test_sdk_compat.py, for streamkit.Client) ---


def test_port_streaming_helpers_text_stream_then_final_message() -> None:
    printed: list[str] = []
    with serve(Reply.text("Hello there! How can I help?", chunk_size=5, request_id=RID)) as server:
        with streamkit.Client(api_key="test-key", base_url=server.base_url) as client:
            with client.messages.stream(
                max_tokens=1024,
                messages=[{"role": "user", "content": "Say hello there!"}],
                model=MODEL,
            ) as stream:
                for text in stream.text_stream:
                    printed.append(text)
            message = stream.get_final_message()
    assert printed == ["Hello", " ther", "e! Ho", "w can", " I he", "lp?"]
    assert message.text == "Hello there! How can I help?"
    assert message._request_id == message.request_id == stream.request_id == RID


def test_port_streaming_responses_event_types() -> None:
    with serve(Reply.text("Hello, human")) as server:
        with streamkit.Client(api_key="test-key", base_url=server.base_url) as client:
            with client.messages.stream(**REQUEST) as stream:
                types = [event.type for event in stream]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def handle(client: streamkit.Client) -> list[Any]:
    """The SDK's "Handling errors" example: three except clauses, in its order."""
    seen: list[Any] = []
    try:
        client.messages.create(max_tokens=1024, messages=USER, model=MODEL)
    except streamkit.APIConnectionError as e:
        seen += ["The server could not be reached", type(e.__cause__)]
    except streamkit.RateLimitError as e:
        seen += ["A 429 status code was received; we should back off a bit.", e.status_code]
    except streamkit.APIStatusError as e:
        seen += ["Another non-200-range status code was received", e.status_code, e.request_id]
    return seen


def test_port_handling_errors_connection() -> None:
    with streamkit.Client(api_key="test-key", base_url=f"http://127.0.0.1:{closed_port()}", max_retries=0) as client:
        assert handle(client) == ["The server could not be reached", httpx.ConnectError]


def test_port_handling_errors_rate_limit() -> None:
    with serve(Reply.error(429, request_id=RID)) as server, one_attempt(server) as client:
        assert handle(client) == ["A 429 status code was received; we should back off a bit.", 429]


@pytest.mark.parametrize("status", [400, 404, 500, 503, 529])
def test_port_handling_errors_other_status(status: int) -> None:
    with serve(Reply.error(status, request_id=RID)) as server, one_attempt(server) as client:
        assert handle(client) == ["Another non-200-range status code was received", status, RID]


def test_port_handling_errors_catch_all_api_error() -> None:
    caught: list[str] = []
    with serve(Reply.error(401, request_id=RID)) as server:
        for base_url in (server.base_url, f"http://127.0.0.1:{closed_port()}"):
            with one_attempt(base_url) as client:
                try:
                    client.messages.create(**REQUEST)
                except streamkit.APIError as e:
                    caught.append(type(e).__name__)
    assert caught == ["AuthenticationStatusError", "APIConnectionError"]


def test_port_request_ids() -> None:
    with serve(Reply.text("Hi", request_id=RID), Reply.text("Hi", request_id=RID + "2")) as server:
        with streamkit.Client(api_key="test-key", base_url=server.base_url) as client:
            message = client.messages.create(**REQUEST)
            with client.messages.stream(**REQUEST) as stream:
                streamed = stream.get_final_message()
    assert (message._request_id, message.request_id) == (RID, RID)
    assert (streamed._request_id, streamed.request_id) == (RID + "2", RID + "2")


def test_port_raw_response_headers() -> None:
    reply = Reply.text("Hi", request_id=RID, headers={"x-my-header": "my value"})
    with serve(reply, reply) as server:
        with streamkit.Client(api_key="test-key", base_url=server.base_url) as client:
            message = client.messages.create(**REQUEST)
            with client.messages.stream(**REQUEST) as stream:
                assert stream.headers is not None
                assert stream.headers.get("X-My-Header") == "my value"
                streamed = stream.get_final_message()
    assert message.headers is not None and streamed.headers is not None
    assert message.headers.get("X-My-Header") == streamed.headers.get("x-my-header") == "my value"


def test_port_default_headers_anthropic_version() -> None:
    with serve(Reply.text("a"), Reply.text("b"), Reply.text("c")) as server:
        with streamkit.Client(api_key="k", base_url=server.base_url, api_version="2099-01-01") as client:
            client.messages.create(**REQUEST)
            with client.messages.stream(**REQUEST) as stream:
                stream.get_final_text()
        with streamkit.Client(api_key="k", base_url=server.base_url) as client:
            client.messages.create(**REQUEST)
        sent = [request.headers.get("anthropic-version") for request in server.requests]
    assert sent == ["2099-01-01", "2099-01-01", "2023-06-01"]


def test_port_retries_max_retries() -> None:
    with serve(Reply.error(529, request_id=RID), Reply.text("never sent")) as server:
        with streamkit.Client(api_key="k", base_url=server.base_url, max_retries=0) as client:
            with pytest.raises(streamkit.OverloadedError) as caught:
                client.messages.create(**REQUEST)
        assert len(server.requests) == 1
    assert type(caught.value) is streamkit.OverloadedStatusError
