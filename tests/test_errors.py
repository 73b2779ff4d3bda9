"""Errors, over a real loopback socket: every status, every in-stream failure, exact fields.

Resume and retries are off: these are the raw failure modes a caller sees.  Each case
checks the exact class (phase and kind), every field, and the exact partial text.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import pytest
from conftest import STALL, WORLD, in_thread, one_attempt_client, sync_client_for

import streamkit
from streamkit.testing import Fault, MockServer, Reply, lorem

pytestmark = pytest.mark.anyio
BOTH_WORLDS = ("fail",)  # tests that fail through fail() also run on the sync client (conftest.py)

TEXT = lorem(300, seed=3)
CHUNK = 7
N_DELTAS = -(-len(TEXT) // CHUNK)  # text deltas of Reply.text(TEXT, chunk_size=CHUNK)
REQUEST: dict[str, Any] = {"model": "claude-mock-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
RID = "req_ERRORS0123456789abcdefg"
REQUEST_ID = re.compile(r"req_[0-9A-Za-z]{24}")
NOT_JSON = " (the body is not JSON: it likely came from a proxy or CDN in front of the API)"


def sent_text(after: int) -> str:
    """Text delivered before a fault after ``after`` events.

    The mock streams message_start (event 1), content_block_start (event 2), then one
    text_delta of CHUNK characters per event.
    """
    assert 2 <= after <= 2 + N_DELTAS
    return TEXT[: (after - 2) * CHUNK]


FaultKind = Literal["error", "cut", "truncate", "malformed", "stall", "hang"]


def faulty(kind: FaultKind, after: int, **fault: Any) -> Reply:
    return Reply.text(TEXT, chunk_size=CHUNK, request_id=RID, fault=Fault(kind, after, **fault))


async def fail(reply: Reply, **options: Any) -> tuple[streamkit.StreamkitError, list[Any]]:
    """Stream ``reply`` to the end with get_final_message(); return the error and what on_error saw."""
    seen: list[Any] = []
    async with MockServer(reply) as server:
        if WORLD.sync:

            def consume() -> streamkit.StreamkitError:
                with sync_client_for(server, **{"max_retries": 0, "resume": False, **options}) as client:
                    with pytest.raises(streamkit.StreamkitError) as caught:
                        with client.messages.stream(**REQUEST, on_error=seen.append) as stream:
                            stream.get_final_message()
                return caught.value

            return await in_thread(consume), seen
        async with one_attempt_client(server, **options) as client:
            with pytest.raises(streamkit.StreamkitError) as caught:
                async with client.messages.stream(**REQUEST, on_error=seen.append) as stream:
                    await stream.get_final_message()
    return caught.value, seen


def error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}


# -- before the stream: JSON error bodies ------------------------------------------

STATUSES = [
    (400, "invalid_request_error", streamkit.InvalidRequestError),
    (401, "authentication_error", streamkit.AuthenticationError),
    (403, "permission_error", streamkit.PermissionDeniedError),
    (404, "not_found_error", streamkit.NotFoundError),
    (413, "request_too_large", streamkit.RequestTooLargeError),
    (429, "rate_limit_error", streamkit.RateLimitError),
    (500, "api_error", streamkit.InternalServerError),
    (529, "overloaded_error", streamkit.OverloadedError),
]
ALL_KINDS = [kind for _, _, kind in STATUSES]


@pytest.mark.parametrize(("status", "error_type", "kind"), STATUSES)
async def test_status_error_with_json_body(status: int, error_type: str, kind: type[streamkit.APIError]) -> None:
    error, seen = await fail(Reply.error(status, message=f"boom {status}", request_id=RID))
    assert isinstance(error, streamkit.APIStatusError)
    assert isinstance(error, kind)
    assert isinstance(error, streamkit.APIError)
    assert not isinstance(error, streamkit.StreamError)
    assert [other for other in ALL_KINDS if isinstance(error, other)] == [kind]
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.message == f"boom {status}"
    assert error.request_id == RID
    assert error.body == error_body(error_type, f"boom {status}", RID)
    assert error.text is not None and json.loads(error.text) == error.body
    assert error.retry_after is None
    assert error.should_retry is None
    assert error.partial_message is None
    assert str(error) == f"boom {status} (status={status}, type={error_type}, request_id={RID})"
    assert len(seen) == 1 and seen[0] is error


@pytest.mark.parametrize(("status", "error_type", "kind"), STATUSES)
async def test_default_messages_of_each_status(status: int, error_type: str, kind: type[streamkit.APIError]) -> None:
    """The message is taken from the body, whatever the server put there."""
    error, _ = await fail(Reply.error(status))
    assert isinstance(error, streamkit.APIStatusError) and isinstance(error, kind)
    assert isinstance(error.body, dict)
    assert error.message == error.body["error"]["message"] != ""
    assert error.error_type == error_type
    assert REQUEST_ID.fullmatch(error.request_id or "")
    assert error.body["request_id"] == error.request_id


async def test_request_id_from_the_body_when_the_header_is_absent() -> None:
    error, _ = await fail(Reply.error(529, request_id="req_BODYONLY0123456789abcde", request_id_header=False))
    assert isinstance(error, streamkit.OverloadedError) and isinstance(error, streamkit.APIStatusError)
    assert error.request_id == "req_BODYONLY0123456789abcde"
    assert error.body == error_body("overloaded_error", "Overloaded", "req_BODYONLY0123456789abcde")


async def test_request_id_header_wins_over_the_body() -> None:
    reply = Reply.error(500, request_id="req_BODY00000000000000000000", headers={"request-id": "req_HEADER"})
    error, _ = await fail(reply)
    assert error.request_id == "req_HEADER"
    assert isinstance(error, streamkit.APIError)
    assert isinstance(error.body, dict) and error.body["request_id"] == "req_BODY00000000000000000000"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the finer hint wins
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # an HTTP date in the past
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "later"}, None),
        ({}, None),
    ],
)
async def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    error, _ = await fail(Reply.error(429, request_id=RID, headers=headers))
    assert isinstance(error, streamkit.RateLimitError) and isinstance(error, streamkit.APIStatusError)
    assert error.retry_after == expected


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("FALSE", False), ("maybe", None)])
async def test_x_should_retry_header(value: str, expected: bool | None) -> None:
    error, _ = await fail(Reply.error(529, request_id=RID, headers={"x-should-retry": value}))
    assert isinstance(error, streamkit.APIError)
    assert error.should_retry is expected


async def test_unknown_error_type_takes_its_kind_from_the_status() -> None:
    """As in the official SDK, a 400 is a BadRequestError whatever type its body names."""
    error, _ = await fail(Reply.error(400, error_type="brand_new_error", message="something new", request_id=RID))
    assert type(error) is streamkit.InvalidRequestStatusError
    assert (error.status_code, error.error_type, error.message, error.request_id) == (
        400,
        "brand_new_error",
        "something new",
        RID,
    )
    assert error.body == error_body("brand_new_error", "something new", RID)
    assert str(error) == f"something new (status=400, type=brand_new_error, request_id={RID})"


async def test_unlisted_status_with_json_body_keeps_its_type() -> None:
    error, _ = await fail(Reply.error(418, error_type="teapot_error", message="short and stout", request_id=RID))
    assert type(error) is streamkit.APIStatusError
    assert (error.status_code, error.error_type, error.message) == (418, "teapot_error", "short and stout")


async def test_unlisted_status_without_json_body() -> None:
    error, seen = await fail(Reply(status=418, body="I'm a teapot", content_type="text/plain", request_id=RID))
    assert type(error) is streamkit.APIStatusError
    assert error.status_code == 418
    assert error.error_type is None
    assert error.message == "HTTP 418: I'm a teapot" + NOT_JSON
    assert error.request_id == RID
    assert error.body is None
    assert error.text == "I'm a teapot"
    assert error.partial_message is None
    assert seen == [error]


async def test_html_502_without_json_body() -> None:
    html = (
        "<html>\n<head><title>502 Bad Gateway</title></head>\n"
        "<body><center><h1>502 Bad Gateway</h1></center></body>\n</html>"
    )
    error, _ = await fail(Reply.html(502, html))
    assert type(error) is streamkit.InternalServerStatusError  # any 5xx, as in the official SDK
    assert (error.status_code, error.error_type, error.request_id, error.body) == (502, None, None, None)
    assert error.text == html
    assert error.message == "HTTP 502: 502 Bad Gateway" + NOT_JSON
    assert str(error) == "HTTP 502: 502 Bad Gateway" + NOT_JSON + " (status=502)"


async def test_html_without_title_gives_its_text() -> None:
    html = "<html><body><h1>Bad   Gateway</h1>\n<hr><p>nginx</p></body></html>"
    error, _ = await fail(Reply.html(502, html))
    assert type(error) is streamkit.InternalServerStatusError
    assert error.message == "HTTP 502: Bad Gateway nginx" + NOT_JSON


async def test_empty_502_body() -> None:
    error, _ = await fail(Reply(status=502, body="", request_id=RID))
    assert type(error) is streamkit.InternalServerStatusError
    assert (error.status_code, error.error_type, error.message, error.body, error.text) == (
        502,
        None,
        "HTTP 502",
        None,
        "",
    )


async def test_html_413_from_a_cdn() -> None:
    html = (
        "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n"
        "<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    error, seen = await fail(Reply.html(413, html))
    assert isinstance(error, streamkit.RequestTooLargeError)
    assert isinstance(error, streamkit.APIStatusError)
    assert not isinstance(error, streamkit.StreamError)
    assert error.status_code == 413
    assert error.error_type == "request_too_large"
    assert error.request_id is None
    assert error.body is None
    assert error.text == html
    assert error.message == "HTTP 413: 413 Request Entity Too Large" + NOT_JSON
    assert seen == [error]


async def test_plain_text_529_from_a_proxy_is_still_an_overload() -> None:
    error, _ = await fail(Reply(status=529, body="overloaded, try later", content_type="text/plain"))
    assert isinstance(error, streamkit.OverloadedError) and isinstance(error, streamkit.APIStatusError)
    assert (error.error_type, error.body, error.text) == ("overloaded_error", None, "overloaded, try later")
    assert error.message == "HTTP 529: overloaded, try later" + NOT_JSON


async def test_connection_refused_before_the_stream() -> None:
    async with MockServer() as server:
        base_url = server.base_url
    seen: list[Any] = []
    async with streamkit.AsyncClient(api_key="k", base_url=base_url, max_retries=0, resume=False) as client:
        with pytest.raises(streamkit.APIConnectionError) as caught:
            async with client.messages.stream(**REQUEST, on_error=seen.append):
                pytest.fail("entered a stream that has no server")
    error = caught.value
    assert type(error) is streamkit.APIConnectionError
    assert error.message.startswith(f"could not reach the API at {base_url}/v1/messages: ConnectError(")
    assert error.partial_message is None and error.request_id is None
    assert seen == [error]


# -- after a 200: the event: error -------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "message", "kind", "after"),
    [
        ("overloaded_error", "Overloaded", streamkit.OverloadedError, 10),
        ("api_error", "Internal server error", streamkit.InternalServerError, 5),
        ("overloaded_error", "Overloaded", streamkit.OverloadedError, 2),
    ],
)
async def test_error_event_after_n_events(
    error_type: str, message: str, kind: type[streamkit.APIError], after: int
) -> None:
    error, seen = await fail(faulty("error", after, error_type=error_type, message=message))
    assert isinstance(error, streamkit.StreamError)
    assert isinstance(error, kind)
    assert not isinstance(error, streamkit.APIStatusError)
    assert [other for other in ALL_KINDS if isinstance(error, other)] == [kind]
    assert error.status_code == 200
    assert error.error_type == error_type
    assert error.message == message
    assert error.request_id == RID
    assert error.body == {"type": "error", "error": {"type": error_type, "message": message}}
    assert error.text is not None and json.loads(error.text) == error.body
    assert error.retry_after is None
    assert error.partial_message is not None
    assert error.partial_message.text == sent_text(after)
    assert error.partial_message.stop_reason is None
    assert error.partial_message.model == "claude-mock-1"
    assert seen == [error] and seen[0] is error


async def test_error_event_is_not_caught_as_a_status_error() -> None:
    async with MockServer(faulty("error", 6)) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.StreamError) as caught:
                try:
                    async with client.messages.stream(**REQUEST) as stream:
                        await stream.get_final_text()
                except streamkit.APIStatusError:  # pragma: no cover - the point of the test
                    pytest.fail("an in-stream error was caught as a pre-stream status error")
    assert isinstance(caught.value, streamkit.OverloadedError)
    try:
        raise caught.value
    except streamkit.OverloadedError as overload:  # the kind catches both phases
        assert overload is caught.value


async def test_error_event_with_unknown_type() -> None:
    error, _ = await fail(faulty("error", 4, error_type="brand_new_error", message="new"))
    assert type(error) is streamkit.StreamError
    assert (error.status_code, error.error_type, error.message) == (200, "brand_new_error", "new")
    assert error.partial_message is not None and error.partial_message.text == sent_text(4)


async def test_error_event_seen_by_the_event_iterator() -> None:
    """The iterator yields every event before the error, then raises it: never a silent end."""
    types: list[type] = []
    async with MockServer(faulty("error", 5)) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.StreamError) as caught:
                async with client.messages.stream(**REQUEST) as stream:
                    async for event in stream:
                        types.append(type(event))
                assert stream.current_message is not None
                assert stream.current_message.text == sent_text(5)
    assert types == [
        streamkit.MessageStartEvent,
        streamkit.ContentBlockStartEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
        streamkit.ContentBlockDeltaEvent,
    ]
    assert caught.value.partial_message is not None
    assert caught.value.partial_message.text == sent_text(5)


async def test_error_event_seen_by_text_stream() -> None:
    pieces: list[str] = []
    async with MockServer(faulty("error", 8, error_type="api_error", message="boom")) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.InternalServerError) as caught:
                async with client.messages.stream(**REQUEST) as stream:
                    async for piece in stream.text_stream:
                        pieces.append(piece)
    assert isinstance(caught.value, streamkit.StreamError)
    assert "".join(pieces) == sent_text(8)
    assert caught.value.partial_message is not None and caught.value.partial_message.text == sent_text(8)


# -- after a 200: the connection breaks or the body ends early ----------------------


@pytest.mark.parametrize("after", [3, 11])
async def test_cut_connection(after: int) -> None:
    error, seen = await fail(faulty("cut", after))
    assert type(error) is streamkit.ConnectionLostError
    assert isinstance(error, streamkit.IncompleteStreamError)
    assert not isinstance(error, streamkit.APIError)
    assert error.request_id == RID
    assert error.message.startswith("the connection failed after the stream started: RemoteProtocolError(")
    assert error.partial_message is not None
    assert error.partial_message.text == sent_text(after)
    assert error.partial_message.stop_reason is None
    assert seen == [error]


@pytest.mark.parametrize("after", [1, 2, 9, 2 + N_DELTAS])
async def test_truncated_body(after: int) -> None:
    """A clean end before message_stop: incomplete, even when every text delta arrived."""
    error, seen = await fail(faulty("truncate", after))
    assert type(error) is streamkit.IncompleteStreamError
    assert error.message == "the stream ended without message_stop: the reply is incomplete"
    assert error.request_id == RID
    assert error.partial_message is not None
    assert error.partial_message.text == (sent_text(after) if after >= 2 else "")
    assert len(error.partial_message.content) == (0 if after < 2 else 1)
    assert error.partial_message.stop_reason is None
    assert seen == [error]


async def test_truncated_after_message_delta_is_still_incomplete() -> None:
    """message_delta carries stop_reason, but without message_stop the reply is not final."""
    error, _ = await fail(faulty("truncate", 2 + N_DELTAS + 2))
    assert type(error) is streamkit.IncompleteStreamError
    assert error.partial_message is not None
    assert error.partial_message.text == TEXT


@pytest.mark.parametrize("consumer", ["iterator", "text_stream", "get_final_text"])
async def test_truncation_raises_for_every_consumer(consumer: str) -> None:
    async with MockServer(faulty("truncate", 6)) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.IncompleteStreamError) as caught:
                async with client.messages.stream(**REQUEST) as stream:
                    if consumer == "iterator":
                        async for _ in stream:
                            pass
                    elif consumer == "text_stream":
                        async for _ in stream.text_stream:
                            pass
                    else:
                        await stream.get_final_text()
            # Asked again after the failure, the stream gives the same error, never a result.
            with pytest.raises(streamkit.IncompleteStreamError) as again:
                await stream.get_final_message()
    assert type(caught.value) is streamkit.IncompleteStreamError
    assert again.value is caught.value
    assert caught.value.partial_message is not None and caught.value.partial_message.text == sent_text(6)


async def test_read_timeout_after_the_stream_started() -> None:
    error, seen = await fail(faulty("hang", 6), timeout=STALL, stall_timeout=None)
    assert type(error) is streamkit.StreamTimeoutError
    assert isinstance(error, streamkit.IncompleteStreamError)
    assert error.message.startswith("the connection failed after the stream started: ReadTimeout(")
    assert error.request_id == RID
    assert error.partial_message is not None and error.partial_message.text == sent_text(6)
    assert seen == [error]


async def test_a_read_timeout_shorter_than_the_stall_timeout_wins() -> None:
    error, _ = await fail(faulty("hang", 6), timeout=STALL, stall_timeout=5.0)
    assert type(error) is streamkit.StreamTimeoutError
    assert error.message.startswith("the connection failed after the stream started: ReadTimeout(")


async def test_silence_longer_than_the_stall_timeout() -> None:
    error, _ = await fail(faulty("hang", 6), stall_timeout=STALL)
    assert type(error) is streamkit.StallError
    assert error.message == f"no progress for {STALL} s (only pings or silence): the stream stalled"
    assert error.partial_message is not None and error.partial_message.text == sent_text(6)


async def test_stall_of_pings() -> None:
    error, _ = await fail(faulty("stall", 7, ping_interval=0.02), stall_timeout=STALL)
    assert type(error) is streamkit.StallError
    assert error.message == f"no progress for {STALL} s (only pings or silence): the stream stalled"
    assert error.partial_message is not None and error.partial_message.text == sent_text(7)


async def test_malformed_json_event() -> None:
    error, seen = await fail(faulty("malformed", 9))
    assert type(error) is streamkit.ProtocolError
    assert error.message == "the data of a 'content_block_delta' event is not valid JSON"
    assert error.data == b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_del'
    assert error.request_id == RID
    assert error.partial_message is not None
    assert error.partial_message.text == sent_text(9)
    assert error.partial_message.stop_reason is None
    assert seen == [error]


async def test_a_200_that_is_not_an_event_stream() -> None:
    seen: list[Any] = []
    reply = Reply(body="<html>hi</html>", content_type="text/html", request_id=RID)
    async with MockServer(reply) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.ProtocolError) as caught:
                async with client.messages.stream(**REQUEST, on_error=seen.append):
                    pytest.fail("entered a stream that is not an event stream")  # raised on entering
    error = caught.value
    assert type(error) is streamkit.ProtocolError
    assert error.message == "expected a text/event-stream response, got 'text/html'"
    assert error.data == b"<html>hi</html>"
    assert error.request_id == RID
    assert error.partial_message is None
    assert seen == [error]


@pytest.mark.parametrize(
    "reply",
    [
        Reply.error(529),
        Reply.html(413, "<html></html>"),
        faulty("error", 4),
        faulty("cut", 4),
        faulty("truncate", 4),
        faulty("malformed", 4),
        Reply(body="nope", content_type="text/plain"),
    ],
    ids=["status", "html", "event", "cut", "truncate", "malformed", "not-sse"],
)
async def test_streamkit_error_catches_everything(reply: Reply) -> None:
    error, seen = await fail(reply)
    assert isinstance(error, streamkit.StreamkitError)
    assert seen == [error]


async def test_async_on_error_hook_gets_the_raised_object() -> None:
    seen: list[BaseException] = []

    async def on_error(error: BaseException) -> None:
        seen.append(error)

    async with MockServer(faulty("cut", 5)) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.ConnectionLostError) as caught:
                async with client.messages.stream(**REQUEST, on_error=on_error) as stream:
                    await stream.get_final_message()
    assert len(seen) == 1 and seen[0] is caught.value


# -- create(): the same mapping without a stream -----------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (529, "overloaded_error", streamkit.OverloadedError),
        (400, "invalid_request_error", streamkit.InvalidRequestError),
    ],
)
async def test_create_maps_status_errors(status: int, error_type: str, kind: type[streamkit.APIError]) -> None:
    reply = Reply.error(status, message=f"no {status}", request_id=RID, headers={"retry-after": "2"})
    async with MockServer(reply) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.APIStatusError) as caught:
                await client.messages.create(**REQUEST)
        assert server.requests[0].json == REQUEST
    error = caught.value
    assert isinstance(error, kind) and not isinstance(error, streamkit.StreamError)
    assert (error.status_code, error.error_type, error.message, error.request_id) == (
        status,
        error_type,
        f"no {status}",
        RID,
    )
    assert error.body == error_body(error_type, f"no {status}", RID)
    assert error.retry_after == 2.0
    assert error.partial_message is None


async def test_create_unknown_error_type() -> None:
    async with MockServer(Reply.error(400, error_type="brand_new_error", message="new")) as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.APIStatusError) as caught:
                await client.messages.create(**REQUEST)
    assert type(caught.value) is streamkit.InvalidRequestStatusError
    assert caught.value.error_type == "brand_new_error"
