"""A hostile server: bounded reads, linear parsing, a capped reply, no redirects, no foreign exceptions.

Over real loopback sockets, each case checks the exact error and a bound on the time or on
the growth of this process's peak memory.  The bounds are generous: they catch unbounded
work (a gigabyte inflated, a quadratic scan), not a slowdown of a few percent.
"""

from __future__ import annotations

import json
import resource
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from conftest import one_attempt_client

import streamkit
from streamkit._errors import _readable
from streamkit._limits import MAX_ERROR_BODY, MAX_REPLY_BYTES, MAX_RESPONSE_BODY
from streamkit._sse import MAX_EVENT_SIZE
from streamkit.testing import MockServer, Reply

REQUEST: dict[str, Any] = {"model": "claude-mock-1", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
NOT_JSON = " (the body is not JSON: it likely came from a proxy or CDN in front of the API)"
MB = 1024 * 1024
GZIP = {"content-encoding": "gzip"}


@pytest.fixture(scope="session")
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzipped (about 1 MB), never held inflated.

    One MiB of zeros is compressed once and closed with a full flush, which resets the
    compressor: the same bytes then stand for every following MiB.  (The trailer's CRC is
    not that of 1 GiB; no reader gets that far.)
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(bytes(MB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = again.compress(bytes(MB)) + again.flush(zlib.Z_FULL_FLUSH)
    return head + block * 1023 + again.flush()


@contextmanager
def bounded(what: str, *, seconds: float, megabytes: int = 200) -> Iterator[None]:
    """Fail unless the block took less than ``seconds`` and grew the peak RSS by less than ``megabytes``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    began = time.perf_counter()
    yield
    elapsed = time.perf_counter() - began
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    print(f"\n{what}: {elapsed:.2f} s, peak RSS +{growth:.0f} MB")
    assert elapsed < seconds
    assert growth < megabytes


async def stream_error(server: MockServer, **options: Any) -> streamkit.StreamkitError:
    async with one_attempt_client(server, **options) as client:
        with pytest.raises(streamkit.StreamkitError) as caught:
            async with client.messages.stream(**REQUEST) as stream:
                await stream.get_final_message()
    return caught.value


async def create_error(server: MockServer, **options: Any) -> streamkit.StreamkitError:
    async with one_attempt_client(server, **options) as client:
        with pytest.raises(streamkit.StreamkitError) as caught:
            await client.messages.create(**REQUEST)
    return caught.value


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


MESSAGE_START = sse(
    {
        "type": "message_start",
        "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-mock-1", "content": []},
    }
)
TEXT_START = sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
STOP = sse({"type": "content_block_stop", "index": 0}) + sse({"type": "message_stop"})


def text_delta(text: str) -> bytes:
    return sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})


# -- gzip bombs ------------------------------------------------------------------------


def bomb_reply(bomb: bytes, status: int, content_type: str = "text/html") -> Reply:
    return Reply(status=status, raw_body=bomb, content_type=content_type, headers=GZIP)


@pytest.mark.anyio
@pytest.mark.parametrize("call", ["stream", "create"])
async def test_a_gzip_bomb_as_an_error_body_is_read_to_the_cap_on_every_retry(gzip_bomb: bytes, call: str) -> None:
    async with MockServer(*[bomb_reply(gzip_bomb, 500)] * 3) as server:
        with bounded(f"500 with a 1 GiB gzip bomb, {call}(), three attempts", seconds=10):
            fail = stream_error if call == "stream" else create_error
            error = await fail(server, max_retries=2, retry_initial_delay=0.01, retry_max_delay=0.01)
    assert isinstance(error, streamkit.InternalServerError) and isinstance(error, streamkit.APIStatusError)
    assert error.status_code == 500
    assert error.message == f"HTTP 500 (the body was cut at {MAX_ERROR_BODY:,} bytes)"
    assert error.truncated
    assert error.text == "\0" * MAX_ERROR_BODY
    assert error.body is None
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_a_gzip_bomb_as_the_event_stream_is_refused_at_the_event_cap(gzip_bomb: bytes) -> None:
    async with MockServer(bomb_reply(gzip_bomb, 200, "text/event-stream")) as server:
        with bounded("200 event stream of a 1 GiB gzip bomb", seconds=10):
            error = await stream_error(server)
    assert type(error) is streamkit.ProtocolError
    assert error.message.startswith(f"an event of more than {MAX_EVENT_SIZE:,} bytes (")
    assert error.message.endswith(" so far): refused, no real event is that large")
    assert error.partial_message is None


@pytest.mark.anyio
async def test_a_gzip_bomb_as_the_body_of_create_is_refused_at_the_body_cap(gzip_bomb: bytes) -> None:
    async with MockServer(bomb_reply(gzip_bomb, 200, "application/json")) as server:
        with bounded("200 create() body of a 1 GiB gzip bomb", seconds=10):
            error = await create_error(server)
    assert type(error) is streamkit.ProtocolError
    assert (
        error.message == f"the response body is over {MAX_RESPONSE_BODY:,} bytes: refused, no real reply is that large"
    )
    assert error.data == b"\0" * 500


# -- HTML error pages that stall a backtracking regex -------------------------------------

HOSTILE_PAGES = [("<title>" * 20_000, "<t"), ("<" * 200_000, "<" * 200), ("<>" * 100_000, "<>" * 100)]


@pytest.mark.parametrize(("page", "gist"), HOSTILE_PAGES, ids=["titles", "open-brackets", "empty-tags"])
def test_the_gist_of_a_hostile_page_takes_linear_time(page: str, gist: str) -> None:
    began = time.perf_counter()
    assert _readable(page) == gist  # "<t": the 64 KiB prefix ends inside a <title>, which is text then
    assert time.perf_counter() - began < 0.5


@pytest.mark.parametrize(
    ("page", "gist"),
    [
        ("<html><head><TITLE>502  Bad\nGateway</Title></head><body>x</body></html>", "502 Bad Gateway"),
        ("<html><body><h1>Bad   Gateway</h1>\n<hr><p>nginx</p></body></html>", "Bad Gateway nginx"),
        ("<title>never closed <b>bold</b> a<>b", "never closed bold a<>b"),
        ("a < b and c > d", "a d"),  # as the regex did: "< b and c >" is a tag
        ("İ<title>x</title>", "x"),  # a character whose lower case is longer does not shift the title
        ("binary\0\x01\x7fgarbage", "binary garbage"),
        ("<p>" + "word " * 100, "word " * 40),  # cut at 200 characters
    ],
)
def test_the_gist_of_ordinary_pages(page: str, gist: str) -> None:
    assert _readable(page) == gist


@pytest.mark.anyio
@pytest.mark.parametrize(("page", "gist"), HOSTILE_PAGES, ids=["titles", "open-brackets", "empty-tags"])
async def test_a_hostile_error_page_over_the_socket(page: str, gist: str) -> None:
    async with MockServer(Reply.html(502, page)) as server:
        with bounded("hostile 502 page", seconds=2):
            error = await stream_error(server)
    assert type(error) is streamkit.InternalServerStatusError
    assert (error.status_code, error.text, error.truncated) == (502, page, False)
    assert error.message == f"HTTP 502: {gist}{NOT_JSON}"


# -- a reply without end -----------------------------------------------------------------

PIECE = "abcdefgh" * 8192  # 64 KiB


@pytest.mark.anyio
async def test_a_reply_of_100_million_characters_is_refused_at_the_reply_cap() -> None:
    count = -(-100_000_000 // len(PIECE))
    body = b"".join([MESSAGE_START, TEXT_START, *[text_delta(PIECE)] * count, STOP])
    async with MockServer(Reply(raw_body=body, content_type="text/event-stream")) as server:
        with bounded("a reply of 100 million characters", seconds=10):
            error = await stream_error(server)
    assert type(error) is streamkit.ProtocolError
    assert error.message == f"the reply holds more than max_reply_bytes={MAX_REPLY_BYTES:,} bytes of content: refused"
    assert error.data.startswith(b"{'type': 'content_block_delta', 'index': 0, 'delta': {'type': 'text_delta'")
    assert error.partial_message is not None
    # 512 pieces would fill the cap exactly; the block's own JSON ({"type":"text","text":""}) counts too.
    assert error.partial_message.text == PIECE * 511


# -- deep nesting --------------------------------------------------------------------------

DEEP = "[" * 200_000


@pytest.mark.anyio
@pytest.mark.parametrize("call", ["stream", "create"])
async def test_a_deeply_nested_error_body_is_an_api_error(call: str) -> None:
    async with MockServer(Reply(status=400, body=DEEP, content_type="application/json")) as server:
        error = await (stream_error if call == "stream" else create_error)(server)
    assert isinstance(error, streamkit.InvalidRequestError) and isinstance(error, streamkit.APIStatusError)
    assert (error.status_code, error.error_type, error.body, error.text) == (400, "invalid_request_error", None, DEEP)
    assert error.message == f"HTTP 400: {'[' * 200}{NOT_JSON}"


@pytest.mark.anyio
async def test_a_deeply_nested_event_is_a_protocol_error() -> None:
    body = MESSAGE_START + f"event: content_block_start\ndata: {DEEP}\n\n".encode()
    async with MockServer(Reply(raw_body=body, content_type="text/event-stream")) as server:
        error = await stream_error(server)
    assert type(error) is streamkit.ProtocolError
    assert error.message == "the data of a 'content_block_start' event is not valid JSON"


@pytest.mark.anyio
async def test_a_deeply_nested_create_body_is_a_protocol_error() -> None:
    async with MockServer(Reply(body=DEEP, content_type="application/json")) as server:
        error = await create_error(server)
    assert type(error) is streamkit.ProtocolError
    assert error.message == "the response is not a Message: Invalid JSON: recursion limit exceeded at line 1 column 202"


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (nested(100_000), "RecursionError: maximum recursion depth exceeded"),
        (
            "lone \ud800",
            "UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' in position 84: surrogates not allowed",
        ),
        ({1j}, "TypeError: Object of type set is not JSON serializable"),
    ],
    ids=["deep", "lone-surrogate", "not-json"],
)
async def test_a_request_json_cannot_hold_is_refused_before_sending(content: Any, reason: str) -> None:
    async with MockServer() as server:
        async with one_attempt_client(server) as client:
            with pytest.raises(streamkit.RequestBodyError) as caught:
                await client.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": content}]})
    assert isinstance(caught.value, ValueError)
    assert caught.value.message.startswith(f"the request body cannot be sent as JSON: {reason}")
    assert server.requests == []


@pytest.mark.anyio
async def test_a_lone_surrogate_escape_in_tool_json_is_a_protocol_error() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
    body = b"".join(
        [
            MESSAGE_START,
            sse({"type": "content_block_start", "index": 0, "content_block": tool}),
            b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
            b'"delta": {"type": "input_json_delta", "partial_json": "{\\"q\\": \\"\\ud800"}}\n\n',  # a lone surrogate
        ]
    )
    async with MockServer(Reply(raw_body=body, content_type="text/event-stream")) as server:
        error = await stream_error(server)
    assert type(error) is streamkit.ProtocolError
    assert error.message == "the data of a 'content_block_delta' event is not valid JSON"
    assert error.partial_message is not None
    assert error.partial_message.content == [streamkit.ToolUseBlock(id="toolu_1", name="lookup", input={})]


# -- redirects and the API key ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("call", ["stream", "create"])
async def test_a_redirect_to_another_host_is_an_error_and_the_key_stays_home(call: str) -> None:
    async with MockServer(host="127.0.0.2") as elsewhere:
        target = f"{elsewhere.base_url}/v1/messages"
        async with MockServer(Reply(status=307, body="", headers={"location": target})) as server:
            async with httpx.AsyncClient(follow_redirects=True) as http:
                async with streamkit.AsyncClient(
                    api_key="secret-key", base_url=server.base_url, http_client=http, max_retries=0
                ) as client:
                    with pytest.raises(streamkit.APIStatusError) as caught:
                        if call == "stream":
                            async with client.messages.stream(**REQUEST):
                                pass
                        else:
                            await client.messages.create(**REQUEST)
                # The same client, used directly, does hand the key on: what streamkit prevents.
                server.push(Reply(status=307, body="", headers={"location": target}))
                await http.post(f"{server.base_url}/v1/messages", json=REQUEST, headers={"x-api-key": "bait"})
    error = caught.value
    assert type(error) is streamkit.APIStatusError
    assert (error.status_code, error.error_type) == (307, None)
    assert error.message == f"the API answered 307 with a redirect to {target!r}: streamkit does not follow redirects"
    assert [request.headers["x-api-key"] for request in server.requests] == ["secret-key", "bait"]
    assert [request.headers["x-api-key"] for request in elsewhere.requests] == ["bait"]


@pytest.mark.anyio
async def test_the_client_repr_hides_the_key() -> None:
    async with streamkit.AsyncClient(api_key="sk-ant-secret", base_url="http://127.0.0.1:9") as client:
        assert repr(client) == "AsyncClient(base_url='http://127.0.0.1:9', api_key=***)"


@pytest.mark.anyio
async def test_an_error_body_that_does_not_decompress_is_a_protocol_error() -> None:
    async with MockServer(Reply(status=500, raw_body=b"not gzip at all", headers=GZIP)) as server:
        error = await stream_error(server)
    assert type(error) is streamkit.ProtocolError
    assert error.message.startswith("the response body is not valid gzip: DecodingError(")
