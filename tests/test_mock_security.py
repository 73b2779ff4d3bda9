"""The mock server against hostile requests: fixture paths, foreign Hosts, split headers, huge heads.

Every request goes over a real loopback socket (raw bytes where the test needs exact
control of the request, httpx otherwise), on asyncio and on trio.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pydantic
import pytest

from streamkit.testing import BUILTIN_FIXTURES, MockServer, RefusedRequest, Reply, _lorem, _server, lorem
from streamkit.testing._cache import BoundedCache

pytestmark = pytest.mark.anyio

RECORDED = Path(__file__).parent / "fixtures" / "recorded"
BODY = json.dumps({"model": "m", "max_tokens": 100, "stream": True, "messages": []}).encode()
HEADER = "x-streamkit-mock-reply"
MISDIRECTED = (
    "mock server: the Host header must name this machine's loopback (localhost, 127.0.0.1, [::1])"
    " or a host allowed with allowed_hosts / --allow-host"
)
MiB = 1024 * 1024


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> Any:
        return json.loads(self.body)["error"]


def request(*lines: str, body: bytes = BODY) -> bytes:
    """A POST /v1/messages with these header lines, asking the server to close after answering."""
    head = ["POST /v1/messages HTTP/1.1", *lines, "connection: close", f"content-length: {len(body)}"]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


async def exchange(server: MockServer, data: bytes) -> Response:
    """Send raw bytes, read until the server closes the connection, parse the one response."""
    port = int(server.base_url.rsplit(":", 1)[1])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(data)
        received = b""
        with anyio.fail_after(5):
            while True:
                try:
                    received += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return Response(int(status_line.split(" ")[1]), headers, body)


def not_a_name(name: str) -> str:
    return (
        f"fixture {name!r} is not a fixture name: a file name of letters, digits, '.', '_' and '-'"
        " (no path, no '..'), looked up in the mock server's fixture directories"
    )


def sse_content(path: Path) -> bytes:
    """A transcript as the server sends it: with a final blank line."""
    raw = path.read_bytes()
    return raw if raw.endswith(b"\n\n") else raw + b"\n\n"


# --- fixtures by name only --------------------------------------------------------

PATHS = [
    "/etc/passwd",
    "/proc/self/environ",
    "../../../../../../etc/passwd",
    "../fixtures/basic_response.sse",
    "basic_response.sse/..",
    "..",
    "..sse",
    "..\\..\\windows\\win.ini",
    "C:passwd",
    "%2e%2e%2fetc%2fpasswd",
    "..%2fetc%2fpasswd",
    "basic_response\x00.sse",
    "\u2215etc\u2215passwd",  # a division slash, not "/"
    ".env",
    "",
]


@pytest.mark.parametrize("name", PATHS)
def test_a_path_is_refused_when_the_reply_is_built(name: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Reply(fixture=name)
    [error] = caught.value.errors()
    assert (error["type"], error["loc"]) == ("value_error", ("fixture",))
    assert error["msg"] == "Value error, " + not_a_name(name)
    with pytest.raises(pydantic.ValidationError):
        Reply.from_fixture(name)


@pytest.mark.parametrize("name", PATHS)
async def test_a_path_in_the_override_header_gets_400_and_no_file(name: str) -> None:
    override = json.dumps({"fixture": name})  # ASCII: the NUL and the division slash are \u escapes
    async with MockServer(Reply.text("queued")) as server:
        response = await exchange(server, request("host: 127.0.0.1", f"{HEADER}: {override}"))
        assert len(server.requests) == 1
    assert response.status == 400
    assert response.headers["connection"] == "close"
    assert response.error == {
        "type": "invalid_request_error",
        "message": f"invalid {HEADER} header: fixture: Value error, {not_a_name(name)}",
    }
    assert b"root:" not in response.body
    assert os.environ["PATH"].encode() not in response.body


async def test_a_path_slipped_past_validation_is_refused_by_the_server() -> None:
    """model_copy does not validate: the server checks the name again before it opens anything."""
    smuggled = Reply.from_fixture("basic_response").model_copy(update={"fixture": "/etc/passwd"})
    async with MockServer(smuggled) as server:
        response = await exchange(server, request("host: 127.0.0.1"))
    assert response.status == 500
    assert response.error == {"type": "api_error", "message": not_a_name("/etc/passwd")}
    assert b"root:" not in response.body


async def test_a_symlink_out_of_a_fixture_directory_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret.sse").write_bytes(b"event: secret\ndata: {}\n\n")
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "leak.sse").symlink_to(tmp_path / "secret.sse")
    (fixtures / "other.sse").write_bytes(b"event: other\ndata: {}\n\n")
    async with MockServer(Reply.from_fixture("leak"), fixture_dirs=[fixtures]) as server:
        response = await exchange(server, request("host: 127.0.0.1"))
    assert response.status == 500
    assert response.error == {"type": "api_error", "message": "mock server: no fixture named 'leak'"}
    assert b"secret" not in response.body.replace(b"'leak'", b"")
    assert b"other" not in response.body


async def test_a_fixture_by_name_from_the_builtin_directory() -> None:
    async with MockServer(Reply.from_fixture("basic_response"), Reply.from_fixture("stream-a-refusal.sse")) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            basic = await client.post("/v1/messages", content=BODY)
            refusal = await client.post("/v1/messages", content=BODY)
    assert basic.status_code == refusal.status_code == 200
    assert basic.content == sse_content(BUILTIN_FIXTURES / "basic_response.sse")
    assert refusal.content == sse_content(BUILTIN_FIXTURES / "stream-a-refusal.sse")


async def test_a_fixture_by_name_from_a_configured_directory_which_comes_first(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        (directory / "mine.sse").write_bytes(f'event: ping\ndata: {{"from": "{directory.name}"}}\n\n'.encode())
    (first / "basic_response.sse").write_bytes(b"event: ping\ndata: {}\n\n")  # shadows the shipped one
    (second / "only_here.sse").write_bytes(b'event: ping\ndata: {"only": true}\n\n')
    replies = [Reply.from_fixture(name) for name in ("mine", "basic_response", "only_here", "tool_use_response")]
    async with MockServer(*replies, fixture_dirs=[first, str(second)]) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            responses = [await client.post("/v1/messages", content=BODY) for _ in replies]
    mine, shadowed, only_here, shipped = [response.content for response in responses]
    assert mine == b'event: ping\ndata: {"from": "first"}\n\n'
    assert shadowed == b"event: ping\ndata: {}\n\n"
    assert only_here == b'event: ping\ndata: {"only": true}\n\n'
    assert shipped == sse_content(BUILTIN_FIXTURES / "tool_use_response.sse")


def test_a_fixture_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        MockServer(fixture_dirs=[tmp_path / "nowhere"])
    assert str(caught.value) == f"fixture directory {str(tmp_path / 'nowhere')!r} is not a directory"


def test_the_shipped_fixtures_are_the_recorded_ones() -> None:
    """Two copies of the same data: the package's (for users) and the tests' (configured by path)."""
    shipped = sorted(path.name for path in BUILTIN_FIXTURES.glob("*.sse"))
    assert shipped == sorted(path.name for path in RECORDED.glob("*.sse"))
    assert len(shipped) == 10
    assert all((BUILTIN_FIXTURES / name).read_bytes() == (RECORDED / name).read_bytes() for name in shipped)
    assert "Apache License 2.0" in (BUILTIN_FIXTURES / "README.md").read_text()


# --- Host: loopback names only ----------------------------------------------------


@pytest.mark.parametrize(
    "host_lines",
    [
        ["host: evil.example"],
        ["host: 127.0.0.1.evil.example"],
        ["host: localhost.evil"],
        ["host: evil.example:8765"],
        ["host: localhost@evil.example"],
        ["host: 127.1"],
        ["host: 0x7f000001"],
        ["host: [::2]"],
        ["host: [::1]evil"],
        ["host: localhost:http"],
        ["host: 127.0.0.1:80:80"],
        ["host: "],
        [],
        ["host: 127.0.0.1", "host: evil.example"],
    ],
    ids=lambda lines: "|".join(lines) or "no-host",
)
async def test_a_foreign_host_gets_421_and_no_reply(host_lines: list[str]) -> None:
    raw = request(*host_lines, "expect: 100-continue")
    async with MockServer(Reply.text("queued")) as server:
        refused = await exchange(server, raw)
        served = await exchange(server, request("host: localhost"))
        assert server.refused == [RefusedRequest(421, "POST", "/v1/messages", headers_of(raw))]
        assert [recorded.headers["host"] for recorded in server.requests] == ["localhost"]
    assert refused.status == 421
    assert refused.headers["connection"] == "close"
    assert refused.error == {"type": "invalid_request_error", "message": MISDIRECTED}
    assert served.status == 200
    assert b'"text":"queued"' in served.body  # the queue was not consumed by the refused request


def headers_of(raw: bytes) -> dict[str, str]:
    """The header dict the server records for a raw request (names lowercased, repeats joined)."""
    headers: dict[str, str] = {}
    for line in raw.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


@pytest.mark.parametrize(
    "host",
    ["localhost", "LocalHost:8765", "localhost:", "127.0.0.1", "127.0.0.1:1", "127.1.2.3:65535", "[::1]", "[::1]:80"],
)
async def test_a_loopback_host_is_served(host: str) -> None:
    async with MockServer(Reply.text("hi")) as server:
        response = await exchange(server, request(f"host: {host}"))
        assert server.refused == []
    assert response.status == 200
    assert b'"text":"hi"' in response.body


@pytest.mark.parametrize(
    ("host", "status"),
    [("mock.internal", 200), ("MOCK.internal:8080", 200), ("[fd00::1]:1", 200), ("other.internal", 421)],
)
async def test_an_allowed_host_is_served(host: str, status: int) -> None:
    async with MockServer(Reply.text("hi"), allowed_hosts=["mock.internal", "[fd00::1]"]) as server:
        response = await exchange(server, request(f"host: {host}"))
    assert response.status == status


def test_the_command_line_server_takes_fixture_dirs_and_allowed_hosts(tmp_path: Path) -> None:
    (tmp_path / "mine.sse").write_bytes(b"event: ping\ndata: {}\n\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "streamkit.testing", "--port", "0", "--fixtures", str(tmp_path)]
    with subprocess.Popen([*command, "--allow-host", "mock.internal"], stdout=subprocess.PIPE, text=True, env=env) as p:
        try:
            assert p.stdout is not None
            match = re.fullmatch(r"streamkit mock server listening on (http://127\.0\.0\.1:\d+)\n", p.stdout.readline())
            assert match
            url = match.group(1) + "/v1/messages"
            override = {HEADER: Reply.from_fixture("mine").header_value()}
            allowed = httpx.post(url, content=BODY, headers={**override, "host": "mock.internal"})
            foreign = httpx.post(url, content=BODY, headers={**override, "host": "evil.example"})
        finally:
            p.terminate()
            p.wait(timeout=5)
    assert (allowed.status_code, allowed.content) == (200, b"event: ping\ndata: {}\n\n")
    assert (foreign.status_code, foreign.json()["error"]["message"]) == (421, MISDIRECTED)


# --- reply headers cannot split the response --------------------------------------


def control(name: str, value: str) -> str:
    return f"header {name!r} has a control character (CR, LF, NUL...) in its value {value!r}"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"headers": {"x-a": "1\r\nset-cookie: owned=1"}}, control("x-a", "1\r\nset-cookie: owned=1")),
        ({"headers": {"x-a": "1\nset-cookie: owned=1"}}, control("x-a", "1\nset-cookie: owned=1")),
        ({"headers": {"x-a": "1\rset-cookie: owned=1"}}, control("x-a", "1\rset-cookie: owned=1")),
        ({"headers": {"x-a": "a\x00b"}}, control("x-a", "a\x00b")),
        ({"headers": {"x-a\r\nset-cookie": "1"}}, "header name 'x-a\\r\\nset-cookie' is not an HTTP token"),
        ({"headers": {"x a": "1"}}, "header name 'x a' is not an HTTP token"),
        ({"headers": {"x-a:": "1"}}, "header name 'x-a:' is not an HTTP token"),
        ({"headers": {"": "1"}}, "header name '' is not an HTTP token"),
        ({"request_id": "req_1\r\nset-cookie: owned=1"}, control("request-id", "req_1\r\nset-cookie: owned=1")),
        ({"content_type": "text/html\r\n\r\n<p>"}, control("content-type", "text/html\r\n\r\n<p>")),
    ],
)
async def test_control_characters_in_reply_headers_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Reply(**fields)
    [error] = caught.value.errors()
    assert error["msg"] == "Value error, " + message
    override = json.dumps({"body": "x", **fields})
    async with MockServer() as server:
        response = await exchange(server, request("host: 127.0.0.1", f"{HEADER}: {override}"))
    assert response.status == 400
    assert response.error["message"] == f"invalid {HEADER} header: {error['loc'][0]}: Value error, {message}"
    assert "set-cookie" not in response.headers


def test_well_formed_reply_headers_are_kept() -> None:
    headers = {"retry-after": "1", "x-odd!#$%&'*+.^_`|~": "tab\there, ünïcode"}
    assert Reply(headers=headers, request_id="req_1", content_type="text/plain").headers == headers


# --- caps on what a request may make the server read ------------------------------


@pytest.mark.parametrize(
    ("framing", "size_line"),
    [("content-length: 33554433\r\nexpect: 100-continue", ""), ("transfer-encoding: chunked", "2000001\r\n")],
    ids=["content-length", "chunked"],
)
async def test_a_body_over_the_cap_is_refused_before_any_of_it_is_read(framing: str, size_line: str) -> None:
    """The client sends only the head (and a chunk size): the answer comes without a body byte sent."""
    head = f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n{framing}\r\n\r\n{size_line}".encode()
    async with MockServer(Reply.text("queued")) as server:
        response = await exchange(server, head)
        assert server.requests == []
        assert [(refused.status, refused.headers["host"]) for refused in server.refused] == [(413, "127.0.0.1")]
    assert response.status == 413  # not 100 Continue first
    assert response.headers == {"content-type": "text/html", "content-length": "181", "connection": "close"}
    assert response.body.startswith(b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>")


PAD_START = request("host: 127.0.0.1").partition(b"\r\n\r\n")[0] + b"\r\nx-pad: "


def padded_head(size: int) -> bytes:
    """A head for BODY of exactly ``size`` bytes (without its final blank line)."""
    return PAD_START + b"a" * (size - len(PAD_START))


async def test_a_head_at_the_cap_is_served() -> None:
    async with MockServer(Reply.text("hi")) as server:
        response = await exchange(server, padded_head(8 * MiB) + b"\r\n\r\n" + BODY)
        assert len(server.requests[0].headers["x-pad"]) == 8 * MiB - len(PAD_START)
    assert response.status == 200


async def test_a_head_over_the_cap_is_refused_before_it_ends() -> None:
    """The head never ends (no blank line is sent): the server answers once it holds one byte too many."""
    async with MockServer(Reply.text("hi")) as server:
        with anyio.fail_after(5):
            response = await exchange(server, padded_head(8 * MiB + 1))
        assert (server.requests, server.refused) == ([], [])
    assert response.status == 431
    assert response.headers["connection"] == "close"
    assert response.error == {
        "type": "invalid_request_error",
        "message": "request head over the mock server's limit of 8,388,608 bytes",
    }


@pytest.mark.parametrize(("lines", "status"), [(100, 200), (101, 431)])
async def test_header_lines_are_capped_at_100(lines: int, status: int) -> None:
    """Host, connection and content-length are three of them."""
    pads = [f"x-pad-{n}: {n}" for n in range(lines - 3)]
    async with MockServer(default=Reply.text("hi")) as server:
        response = await exchange(server, request("host: 127.0.0.1", *pads))
    assert response.status == status
    if status == 431:
        assert response.error == {"type": "invalid_request_error", "message": "more than 100 header fields"}


# --- bounded caches ---------------------------------------------------------------


async def test_the_render_and_header_caches_keep_at_most_their_entries() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        for number in range(80):
            override = Reply.text(f"reply {number}").header_value()
            assert (await client.post("/v1/messages", content=BODY, headers={HEADER: override})).status_code == 200
        assert (len(server._header_replies), len(server._rendered)) == (16, 64)
        first = Reply.text("reply 0").header_value()
        assert server._header_replies.get(first) is None  # the oldest went first
        assert server._header_replies.get(Reply.text("reply 79").header_value()) is not None


async def test_the_render_cache_keeps_at_most_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    replies = [Reply.text(f"{number:03d} " + lorem(10_000)).header_value() for number in range(10)]
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        await client.post("/v1/messages", content=BODY, headers={HEADER: replies[0]})
        [(_, one)] = server._rendered._entries.values()
    monkeypatch.setattr(_server, "_RENDER_CACHE_BYTES", 3 * one)  # room for three renderings
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        for override in replies:
            await client.post("/v1/messages", content=BODY, headers={HEADER: override})
        assert (len(server._rendered), server._rendered.bytes) == (3, 3 * one)


async def test_the_fixture_cache_keeps_at_most_its_entries(tmp_path: Path) -> None:
    for number in range(70):
        (tmp_path / f"f{number}.sse").write_bytes(b"event: ping\ndata: {}\n\n")
    async with MockServer(fixture_dirs=[tmp_path]) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        for number in range(70):
            override = Reply.from_fixture(f"f{number}").header_value()
            assert (await client.post("/v1/messages", content=BODY, headers={HEADER: override})).status_code == 200
        assert (len(server._fixtures), server._fixtures.bytes) == (64, 64 * 2 * 22)


def test_lorem_keeps_at_most_32_texts() -> None:
    for n_chars in range(1000, 1040):
        lorem(n_chars, seed=7)
    assert len(_lorem._CACHE) == 32
    assert _lorem._CACHE.bytes <= 32 * 1039


def test_bounded_cache_evicts_the_least_recently_used_and_skips_what_is_too_big() -> None:
    cache: BoundedCache[str, str] = BoundedCache(max_entries=3, max_bytes=10)
    for key in "abc":
        cache.put(key, key * 3, 3)
    assert cache.get("a") == "aaa"  # now the most recently used
    cache.put("d", "d", 1)  # a fourth entry: b, the least recently used, goes
    assert (list(cache._entries), cache.bytes) == (["c", "a", "d"], 7)
    cache.put("e", "eeeee", 5)  # 12 bytes: c goes
    assert (list(cache._entries), cache.bytes) == (["a", "d", "e"], 9)
    assert cache.put("huge", "h" * 11, 11) == "h" * 11  # returned, not stored
    assert (cache.get("huge"), list(cache._entries), cache.bytes) == (None, ["a", "d", "e"], 9)
    cache.put("a", "a", 1)  # replaced, and its size with it
    assert (list(cache._entries), cache.bytes, len(cache)) == (["d", "e", "a"], 7, 3)


# --- waiting for the connection count ---------------------------------------------


@contextmanager
def elapsed() -> Iterator[list[float]]:
    start = anyio.current_time()
    seconds: list[float] = []
    yield seconds
    seconds.append(anyio.current_time() - start)


async def test_wait_connections_returns_when_the_count_is_reached() -> None:
    async with MockServer() as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        await server.wait_connections(0, timeout=0)  # already true: no wait at all
        with elapsed() as seconds:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(server.wait_connections, 2)
                first = await anyio.connect_tcp("127.0.0.1", port)
                second = await anyio.connect_tcp("127.0.0.1", port)
            assert server.open_connections == 2
            await first.aclose()
            await server.wait_connections(1)
            assert server.open_connections == 1
            await second.aclose()
            await server.wait_connections(0)
            assert server.open_connections == 0
        assert seconds[0] < 1


async def test_wait_connections_times_out_with_the_count() -> None:
    async with MockServer() as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        async with await anyio.connect_tcp("127.0.0.1", port):
            await server.wait_connections(1)
            with elapsed() as seconds, pytest.raises(TimeoutError) as caught:
                await server.wait_connections(0, timeout=0.2)
    assert str(caught.value) == "MockServer: waited 0.2 s for the open connections to be 0; they are 1"
    assert 0.2 <= seconds[0] < 1
