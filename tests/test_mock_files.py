"""The mock server's Files endpoints, token counting and per-endpoint size limits, over real sockets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from streamkit.testing import FILES_BETA, SIZE_LIMITS, MockServer, estimate_tokens
from streamkit.testing._files import MultipartParser

pytestmark = pytest.mark.anyio

BETA = {"anthropic-beta": f"other-beta, {FILES_BETA}"}
FILE_ID = re.compile(r"^file_[0-9A-Za-z]{24}$")
HTML_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
MESSAGES = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hello world"}]}


def error_of(response: httpx.Response, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    return error["type"], error["message"]


async def upload(client: httpx.AsyncClient, content: bytes, **kwargs: Any) -> httpx.Response:
    files = {"file": ("notes.txt", content, "text/plain")}
    return await client.post("/v1/files", files=files, headers=kwargs.pop("headers", BETA), **kwargs)


# --- files ----------------------------------------------------------------------


async def test_an_upload_is_kept_and_listed_but_not_downloadable() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        created = (await upload(client, b"hello world")).json()
        file_id = created["id"]
        fetched = (await client.get(f"/v1/files/{file_id}", headers=BETA)).json()
        download = await client.get(f"/v1/files/{file_id}/content", headers=BETA)
        kept = server.files.content(file_id)
        recorded = server.requests[0]
    assert FILE_ID.match(file_id)
    assert created == {
        "id": file_id,
        "type": "file",
        "filename": "notes.txt",
        "mime_type": "text/plain",
        "size_bytes": 11,
        "created_at": created["created_at"],
        "downloadable": False,
    }
    assert fetched == created
    assert kept == b"hello world"
    assert (recorded.method, recorded.path, recorded.body) == ("POST", "/v1/files", b"")  # the body is not recorded
    assert error_of(download, 400) == (
        "invalid_request_error",
        f"File {file_id} cannot be downloaded: only files created by tools can be",
    )


async def test_an_upload_keeps_only_stored_bytes_but_counts_them_all() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        server.files.stored_bytes = 10
        content = bytes(range(256)) * 1000
        created = (await upload(client, content)).json()
        kept = server.files.content(created["id"])
    assert created["size_bytes"] == 256_000
    assert kept == content[:10]


async def test_a_chunked_upload_is_parsed_as_it_arrives() -> None:
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'

    async def body() -> AsyncIterator[bytes]:
        yield head.encode()
        for _ in range(8):
            yield b"\r\n--b0und" * 1000  # almost a delimiter, again and again
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**BETA, "content-type": f"multipart/form-data; boundary={boundary}"}
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        created = (await client.post("/v1/files", content=body(), headers=headers)).json()
        kept = server.files.content(created["id"])
        chunked = server.requests[0].headers["transfer-encoding"]
    assert chunked == "chunked"
    assert (created["filename"], created["mime_type"], created["size_bytes"]) == (
        "big.bin",
        "application/octet-stream",
        72_000,
    )
    assert kept == b"\r\n--b0und" * 8000


@pytest.mark.parametrize(
    ("headers", "files", "message"),
    [
        (
            {},
            {"file": ("a.txt", b"x")},
            f"mock server: the Files API is in beta; send the header `anthropic-beta: {FILES_BETA}`",
        ),
        (BETA, {"other": ("a.txt", b"x")}, "file: Field required"),
    ],
    ids=["no-beta", "no-file-field"],
)
async def test_an_upload_refused_is_a_400_on_a_connection_still_usable(
    headers: dict[str, str], files: dict[str, Any], message: str
) -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        refused = await client.post("/v1/files", files=files, headers=headers)
        listed = await client.get("/v1/files", headers=BETA)
        connections = server.open_connections
    assert error_of(refused, 400) == ("invalid_request_error", message)
    assert refused.headers["connection"] == "keep-alive"
    assert listed.json()["data"] == []
    assert connections == 1


async def test_a_body_that_is_not_multipart_is_a_400() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/files", json={"file": "x"}, headers=BETA)
    assert error_of(response, 400) == ("invalid_request_error", "the body must be multipart/form-data with a boundary")


async def test_a_tool_made_file_downloads_with_range_and_resumes_after_a_cut() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        generated = server.files.add(size=40, filename="report v1.csv", mime_type="text/csv")
        given = server.files.add(b"exact bytes")
        url = f"/v1/files/{generated}/content"
        whole = await client.get(url, headers=BETA)
        tail = await client.get(url, headers={**BETA, "range": "bytes=30-"})
        server.files.cut_downloads(20)
        cut = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", url, headers=BETA) as response:
                async for piece in response.aiter_raw():
                    cut += piece
        exact = await client.get(f"/v1/files/{given}/content", headers=BETA)
        metadata = (await client.get(f"/v1/files/{generated}", headers=BETA)).json()
        await client.aclose()
        await server.wait_connections(0)  # a body is counted once sent: after the client has it
        sent = server.files.download_bytes_sent
    assert whole.content == b"000000000000000\n000000000000016\n00000000"
    assert whole.headers["content-type"] == "text/csv"
    assert whole.headers["content-disposition"] == "attachment; filename*=utf-8''report%20v1.csv"
    assert (tail.status_code, tail.content, tail.headers["content-range"]) == (206, b"6\n00000000", "bytes 30-39/40")
    assert cut == whole.content[:20]
    assert exact.content == b"exact bytes"
    assert (metadata["size_bytes"], metadata["downloadable"]) == (40, True)
    assert sent == 40 + 10 + 20 + 11


async def test_files_list_pages_and_delete() -> None:
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        ids = [server.files.add(b"x") for _ in range(3)]
        first = (await client.get("/v1/files", params={"limit": 2}, headers=BETA)).json()
        deleted = (await client.delete(f"/v1/files/{ids[0]}", headers=BETA)).json()
        gone = await client.get(f"/v1/files/{ids[0]}", headers=BETA)
        rest = (await client.get("/v1/files", headers=BETA)).json()
    assert [f["id"] for f in first["data"]] == [ids[2], ids[1]]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, ids[2], ids[1])
    assert deleted == {"id": ids[0], "type": "file_deleted"}
    assert error_of(gone, 404) == ("not_found_error", f"File not found: {ids[0]}")
    assert [f["id"] for f in rest["data"]] == [ids[2], ids[1]]


def test_the_multipart_parser_reads_the_same_parts_fed_a_byte_at_a_time() -> None:
    body = (
        b"preamble\r\n--xyz\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nnotes\r\n'
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: image/png\r\n\r\n'
        b"\r\n--xy\r\n-\r\n--xyz--\r\nepilogue"
    )
    whole = MultipartParser(b"xyz", keep=100)
    whole.feed(body)
    single = MultipartParser(b"xyz", keep=100)
    for byte in body:
        single.feed(bytes([byte]))
    assert whole.close() == single.close()
    purpose, file = whole.parts
    assert (purpose.name, purpose.filename, bytes(purpose.prefix), purpose.size) == ("purpose", None, b"notes", 5)
    assert (file.name, file.filename, file.content_type) == ("file", "a.bin", "image/png")
    assert bytes(file.prefix) == b"\r\n--xy\r\n-"  # near-delimiters are content
    truncated = MultipartParser(b"xyz", keep=100)
    truncated.feed(body[:60])
    with pytest.raises(ValueError, match=r"^the multipart body ends before its closing delimiter$"):
        truncated.close()


# --- count_tokens -----------------------------------------------------------------


async def test_count_tokens_is_the_documented_estimate() -> None:
    body = {**MESSAGES, "system": "abcd", "tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/messages/count_tokens", json=body)
    # strings: "abcd" (4) + "user" and "hello world" (15) + "t" and "object" (7) = 26 characters
    assert response.json() == {"input_tokens": 3 + 4 * 1 + 7}
    assert estimate_tokens(body) == 14


@pytest.mark.parametrize(
    ("missing", "message"), [("model", "model: Field required"), ("messages", "messages: Field required")]
)
async def test_count_tokens_without_model_or_messages_is_a_400(missing: str, message: str) -> None:
    body = {key: value for key, value in MESSAGES.items() if key != missing}
    async with MockServer() as server, httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/messages/count_tokens", json=body)
    assert error_of(response, 400) == ("invalid_request_error", message)


# --- size limits ------------------------------------------------------------------


def test_the_default_limits_are_the_apis() -> None:
    assert SIZE_LIMITS == {
        "messages": 32 * 2**20,
        "count_tokens": 32 * 2**20,
        "batches": 256 * 2**20,
        "files": 500 * 2**20,
    }
    with pytest.raises(ValueError, match=r"^size_limits: unknown endpoints \['models'\]; they are"):
        MockServer(size_limits={"models": 1})


@pytest.mark.parametrize(
    ("path", "limit_key"),
    [("/v1/messages", "messages"), ("/v1/messages/count_tokens", "count_tokens"), ("/v1/files", "files")],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_an_endpoints_limit_gets_the_cdn_html_413(path: str, limit_key: str, chunked: bool) -> None:
    """The client sends the whole 2 MB body: the server reads and drops it, so the client reads the 413."""
    payload = b"x" * 2_000_000

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    headers = {**BETA, "content-type": "multipart/form-data; boundary=x"}
    async with MockServer(size_limits={limit_key: 100_000}) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.post(path, content=pieces() if chunked else payload, headers=headers)
            fits = await client.post("/v1/messages/count_tokens", json=MESSAGES)
    assert response.status_code == 413
    assert response.headers == httpx.Headers(
        {"content-type": "text/html", "content-length": str(len(HTML_413)), "connection": "close"}
    )
    assert response.text == HTML_413
    assert fits.status_code == 200
    assert [(r.status, r.path) for r in server.refused] == [(413, path)]
    assert [r.path for r in server.requests] == ["/v1/messages/count_tokens"]
