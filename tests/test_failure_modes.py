"""Issue 2, section 3: every way a stream can fail, over a real loopback socket.

Each case asserts the exception class (phase and kind), every field, and the exact text
of the partial message.  Resume is off here: these are the raw failure modes.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

import streamkit
from streamkit.testing import Fault, MockServer, Reply, lorem

pytestmark = pytest.mark.anyio
TEXT = lorem(400, seed=1)
CHUNK = 8
REQUEST = {"model": "claude-mock-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def sent_text(after: int) -> str:
    """The text delivered before a fault after ``after`` events (message_start, block start, deltas)."""
    return TEXT[: (after - 2) * CHUNK]


async def fail(reply: Reply, **client: Any) -> tuple[streamkit.StreamkitError, list[BaseException]]:
    """Stream ``reply`` and return what was raised, plus what on_error saw."""
    seen: list[BaseException] = []
    async with MockServer(reply) as server:
        options: dict[str, Any] = {"max_retries": 0, "resume": False, **client}
        async with streamkit.AsyncClient(api_key="test-key", base_url=server.base_url, **options) as sk:
            with pytest.raises(streamkit.StreamkitError) as caught:
                async with sk.messages.stream(**REQUEST, on_error=seen.append) as stream:
                    await stream.get_final_message()
    return caught.value, seen


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (400, "invalid_request_error", streamkit.InvalidRequestError),
        (401, "authentication_error", streamkit.AuthenticationError),
        (403, "permission_error", streamkit.PermissionDeniedError),
        (404, "not_found_error", streamkit.NotFoundError),
        (413, "request_too_large", streamkit.RequestTooLargeError),
        (429, "rate_limit_error", streamkit.RateLimitError),
        (500, "api_error", streamkit.InternalServerError),
        (529, "overloaded_error", streamkit.OverloadedError),
    ],
)
async def test_status_before_the_stream(status: int, error_type: str, kind: type[streamkit.APIError]) -> None:
    reply = Reply.error(status, message=f"boom {status}", request_id="req_0123456789abcdefghijklmn")
    error, seen = await fail(reply)
    assert isinstance(error, streamkit.APIStatusError) and isinstance(error, kind)
    assert not isinstance(error, streamkit.StreamError)
    assert (error.status_code, error.error_type, error.message) == (status, error_type, f"boom {status}")
    assert error.request_id == "req_0123456789abcdefghijklmn"
    assert error.body == {
        "type": "error",
        "error": {"type": error_type, "message": f"boom {status}"},
        "request_id": "req_0123456789abcdefghijklmn",
    }
    assert error.retry_after is None and error.partial_message is None
    assert seen == [error]


async def test_request_id_from_the_body_and_retry_after_from_headers() -> None:
    reply = Reply.error(
        429, request_id="req_BODYONLY0123456789abcde", request_id_header=False, headers={"retry-after": "7"}
    )
    error, _ = await fail(reply)
    assert isinstance(error, streamkit.RateLimitError) and isinstance(error, streamkit.APIStatusError)
    assert error.request_id == "req_BODYONLY0123456789abcde"
    assert error.retry_after == 7.0


async def test_unknown_error_type_keeps_the_type_string() -> None:
    error, _ = await fail(Reply.error(400, error_type="brand_new_error", message="new"))
    assert type(error) is streamkit.APIStatusError
    assert (error.status_code, error.error_type, error.message) == (400, "brand_new_error", "new")


async def test_html_413_from_a_cdn() -> None:
    html = "<html><head><title>413 Request Entity Too Large</title></head><body>cloudflare</body></html>"
    error, _ = await fail(Reply.html(413, html))
    assert isinstance(error, streamkit.RequestTooLargeError) and isinstance(error, streamkit.APIStatusError)
    assert (error.status_code, error.error_type, error.request_id, error.body) == (413, "request_too_large", None, None)
    assert error.text == html
    assert error.message.startswith("HTTP 413: 413 Request Entity Too Large (the body is not JSON")


async def test_html_502_is_a_plain_status_error() -> None:
    error, _ = await fail(Reply.html(502, "<html><title>502 Bad Gateway</title></html>"))
    assert type(error) is streamkit.APIStatusError
    assert (error.status_code, error.error_type, error.body) == (502, None, None)
    assert error.message.startswith("HTTP 502: 502 Bad Gateway")


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("overloaded_error", streamkit.OverloadedError), ("api_error", streamkit.InternalServerError)],
)
async def test_error_event_after_a_200(error_type: str, kind: type[streamkit.APIError]) -> None:
    reply = Reply.text(TEXT, chunk_size=CHUNK, request_id="req_STREAM0123456789abcdefg")
    reply = reply.model_copy(update={"fault": Fault(kind="error", after=12, error_type=error_type, message="halfway")})
    error, seen = await fail(reply)
    assert isinstance(error, streamkit.StreamError) and isinstance(error, kind)
    assert not isinstance(error, streamkit.APIStatusError)
    assert (error.status_code, error.error_type, error.message) == (200, error_type, "halfway")
    assert error.request_id == "req_STREAM0123456789abcdefg"
    assert error.body == {"type": "error", "error": {"type": error_type, "message": "halfway"}}
    assert error.partial_message is not None
    assert error.partial_message.text == sent_text(12)
    assert error.partial_message.stop_reason is None
    assert seen == [error]


async def test_cut_connection_after_a_200() -> None:
    error, _ = await fail(Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind="cut", after=9)))
    assert type(error) is streamkit.ConnectionLostError
    assert isinstance(error, streamkit.IncompleteStreamError)
    assert re.fullmatch(r"req_[0-9A-Za-z]{24}", error.request_id or "")
    assert error.partial_message is not None and error.partial_message.text == sent_text(9)
    assert "incomplete chunked read" in error.message


async def test_clean_end_without_message_stop() -> None:
    error, _ = await fail(Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind="truncate", after=20)))
    assert type(error) is streamkit.IncompleteStreamError
    assert error.message == "the stream ended without message_stop: the reply is incomplete"
    assert error.partial_message is not None and error.partial_message.text == sent_text(20)
    assert error.partial_message.stop_reason is None


async def test_read_timeout_after_a_200() -> None:
    reply = Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind="hang", after=6))
    error, _ = await fail(reply, timeout=0.3, stall_timeout=None)
    assert type(error) is streamkit.StreamTimeoutError
    assert error.partial_message is not None and error.partial_message.text == sent_text(6)


async def test_malformed_json_event() -> None:
    error, _ = await fail(Reply.text(TEXT, chunk_size=CHUNK, fault=Fault(kind="malformed", after=7)))
    assert type(error) is streamkit.ProtocolError
    assert error.message == "the data of a 'content_block_delta' event is not valid JSON"
    assert error.data == b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_del'
    assert error.partial_message is not None and error.partial_message.text == sent_text(7)


async def test_a_200_that_is_not_an_event_stream() -> None:
    error, _ = await fail(Reply(body="<html>maintenance</html>", content_type="text/html"))
    assert type(error) is streamkit.ProtocolError
    assert error.message == "expected a text/event-stream response, got 'text/html'"
    assert error.data == b"<html>maintenance</html>"
    assert error.partial_message is None
