"""client.files (and client.beta.files) across real sockets to the mock server, on both clients.

The tests look at files on local disk directly (blocking calls in async tests): instant, and
what they check is the disk's state after the call.
"""
# ruff: noqa: ASYNC230, ASYNC240

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from _endpoints import ErringServer, call, close_clients  # noqa: F401 - the fixture

import streamkit
from streamkit import (
    DeletedFile,
    FileMetadata,
    InvalidRequestError,
    RateLimitStatusError,
    RequestBodyError,
    RequestTooLargeError,
    RequestTooLargeStatusError,
)
from streamkit.testing import MockServer

pytestmark = pytest.mark.anyio

BOTH_WORLDS = ("call",)
BETA = "files-api-2025-04-14"
MiB = 1024 * 1024


async def test_upload_a_path_streamed_with_the_beta_header_and_a_guessed_type(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes(b"a,b\n1,2\n")
    async with MockServer() as server:
        meta = await call(server, lambda c: c.files.upload(path))
        assert type(meta) is FileMetadata
        assert (meta.filename, meta.mime_type, meta.size_bytes, meta.downloadable) == (
            "notes.csv",
            "text/csv",
            8,
            False,
        )
        assert meta.id.startswith("file_") and meta.request_id is not None
        assert server.files.content(meta.id) == b"a,b\n1,2\n"
        sent = server.requests[-1]
        assert (sent.method, sent.path, sent.headers["anthropic-beta"]) == ("POST", "/v1/files", BETA)
        assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert sent.headers["content-length"] == str(int(sent.headers["content-length"]))  # sized, not chunked


async def test_upload_a_file_object_from_its_start_with_the_users_betas_merged() -> None:
    data = io.BytesIO(b"\x00\x01binary")
    data.seek(3)  # httpx sends a file from its start; the size checked is the whole file's
    async with MockServer() as server:
        meta = await call(
            server,
            lambda c: c.beta.files.upload(data, filename="blob.bin", betas=["other-beta"], extra_headers={"x-a": "1"}),
        )
        assert (meta.filename, meta.mime_type, meta.size_bytes) == ("blob.bin", "application/octet-stream", 8)
        assert server.files.content(meta.id) == b"\x00\x01binary"
        sent = server.requests[-1]
        assert (sent.headers["anthropic-beta"], sent.headers["x-a"]) == (f"{BETA},other-beta", "1")


async def test_a_file_over_500_mb_is_refused_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with open(path, "wb") as sparse:
        sparse.truncate(501 * MiB)  # sparse: instant, and nothing is read
    async with MockServer() as server:
        with pytest.raises(RequestTooLargeError) as caught:
            await call(server, lambda c: c.files.upload(path))
        assert type(caught.value) is RequestTooLargeError
        assert caught.value.message == (
            "the file 'big.bin' is 525,336,576 bytes, over the API's limit of 524,288,000 bytes: it was not sent "
            "(the Files API takes at most 500 MB per file)"
        )
        assert server.requests == [] and server.refused == []


async def test_an_upload_over_the_cdn_limit_is_the_html_413() -> None:
    async with MockServer(size_limits={"files": 1000}) as server:
        with pytest.raises(RequestTooLargeStatusError) as caught:
            await call(server, lambda c: c.files.upload(io.BytesIO(b"x" * 5000), filename="a.txt"))
        assert (caught.value.status_code, caught.value.request_id) == (413, None)
        assert caught.value.message.startswith("HTTP 413: 413 Request Entity Too Large")
        assert [r.status for r in server.refused] == [413]


async def test_a_file_that_cannot_be_sent_again_is_refused() -> None:
    read, write = os.pipe()
    os.close(write)
    async with MockServer() as server:
        with open(read, "rb") as pipe, pytest.raises(RequestBodyError) as caught:
            await call(server, lambda c: c.files.upload(pipe))
        assert caught.value.message == (
            "upload() needs a seekable binary file: it is sent again from its start on a retry"
        )
        with pytest.raises(RequestBodyError) as text:
            await call(server, lambda c: c.files.upload(io.StringIO("text")))  # type: ignore[arg-type]
        assert text.value.message == "upload() needs a file opened in binary mode ('rb'), not text mode"
        assert server.requests == []


class FailingFile(io.BytesIO):
    """A seekable file whose reads fail (a disk error while it is sent)."""

    def read(self, size: int | None = -1) -> bytes:
        raise OSError(5, "Input/output error")


async def test_a_file_that_cannot_be_read_is_a_request_body_error_not_retried(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    async with MockServer() as server:
        with pytest.raises(RequestBodyError) as caught:
            await call(server, lambda c: c.files.upload(missing))
        assert caught.value.message == (
            f"cannot read the file to upload {str(missing)!r}: No such file or directory; nothing was sent"
        )
        assert type(caught.value.__cause__) is FileNotFoundError
        assert server.requests == []
        retries: list[streamkit.RetryInfo] = []
        with pytest.raises(RequestBodyError) as failing:
            await call(
                server, lambda c: c.files.upload(FailingFile(b"abc"), filename="a.txt", on_retry=retries.append)
            )
        assert failing.value.message == (
            "the file being uploaded could not be read while it was sent: Input/output error; the request was abandoned"
        )
        assert type(failing.value.__cause__) is OSError and retries == []


async def test_an_upload_is_retried_whole_after_a_529() -> None:
    async with ErringServer() as server:
        server.errors.append((529, "overloaded_error", {"retry-after": "0"}))
        meta = await call(server, lambda c: c.files.upload(io.BytesIO(b"abc"), filename="a.txt"))
        assert server.files.content(meta.id) == b"abc"
        assert [r.path for r in server.requests] == ["/v1/files", "/v1/files"]


async def test_list_retrieve_and_delete() -> None:
    async with MockServer() as server:
        ids = [server.files.add(b"x", filename=f"f{i}.txt") for i in range(3)]
        listed = await call(server, lambda c: c.files.list(limit=2))
        assert [f.id for f in listed] == ids[::-1]
        assert [r.query for r in server.requests] == ["limit=2", f"limit=2&after_id={ids[1]}"]
        assert all(r.headers["anthropic-beta"] == BETA for r in server.requests)
        meta = await call(server, lambda c: c.files.retrieve(ids[0]))
        assert (meta.filename, meta.size_bytes, meta.downloadable) == ("f0.txt", 1, True)
        assert await call(server, lambda c: c.files.retrieve_metadata(ids[0])) == meta
        assert await call(server, lambda c: c.files.delete(ids[0])) == DeletedFile(id=ids[0], type="file_deleted")
        with pytest.raises(streamkit.NotFoundStatusError) as caught:
            await call(server, lambda c: c.files.retrieve(ids[0]))
        assert caught.value.message == f"File not found: {ids[0]}"


async def test_download_streams_to_the_path(tmp_path: Path) -> None:
    async with MockServer() as server:
        file_id = server.files.add(size=300_000, filename="out.txt")
        target = tmp_path / "out.txt"
        assert await call(server, lambda c: c.files.download(file_id, target)) == target
        content = target.read_bytes()
        assert len(content) == 300_000 and content[:32] == b"000000000000000\n000000000000016\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
        assert server.requests[-1].path == f"/v1/files/{file_id}/content"


async def test_a_cut_download_resumes_with_range(tmp_path: Path) -> None:
    async with MockServer() as server:
        file_id = server.files.add(size=200_000)
        server.files.cut_downloads(50_000, times=2)
        target = tmp_path / "out.txt"
        await call(server, lambda c: c.files.download(file_id, target))
        content = target.read_bytes()
        assert len(content) == 200_000
        assert content[-16:] == b"%015d\n" % (200_000 - 16)
        assert content == b"".join(b"%015d\n" % offset for offset in range(0, 200_000, 16))
        ranges = [r.headers.get("range") for r in server.requests]
        assert ranges == [None, "bytes=50000-", "bytes=100000-"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


async def test_a_download_that_keeps_breaking_leaves_nothing_behind(tmp_path: Path) -> None:
    async with MockServer() as server:
        file_id = server.files.add(size=200_000)
        server.files.cut_downloads(0, times=None)
        target = tmp_path / "out.txt"
        with pytest.raises(streamkit.APIConnectionError):
            await call(server, lambda c: c.files.download(file_id, target), max_resumes=1)
        assert len(server.requests) == 2
        assert list(tmp_path.iterdir()) == []


async def test_a_download_into_a_missing_directory_is_a_local_file_error(tmp_path: Path) -> None:
    async with MockServer() as server:
        file_id = server.files.add(size=1000)
        target = tmp_path / "no-such-dir" / "out.txt"
        with pytest.raises(streamkit.LocalFileError) as caught:
            await call(server, lambda c: c.files.download(file_id, target))
        assert caught.value.message == f"cannot write the download to {str(target)!r}: No such file or directory"
        assert caught.value.path == str(target)
        assert type(caught.value.__cause__) is FileNotFoundError
        assert list(tmp_path.iterdir()) == []


async def test_a_download_over_max_bytes_is_refused_and_removed(tmp_path: Path) -> None:
    async with MockServer() as server:
        file_id = server.files.add(size=100_000)
        with pytest.raises(streamkit.ProtocolError) as caught:
            await call(server, lambda c: c.files.download(file_id, tmp_path / "x", max_bytes=1000))
        assert caught.value.message == (
            "the file's content is over 1,000 bytes: refused (download(max_bytes=...) raises it)"
        )
        assert list(tmp_path.iterdir()) == []


async def test_a_file_that_is_not_downloadable_is_an_invalid_request(tmp_path: Path) -> None:
    async with ErringServer() as server:
        meta = await call(server, lambda c: c.files.upload(io.BytesIO(b"abc"), filename="a.txt"))
        with pytest.raises(InvalidRequestError) as caught:
            await call(server, lambda c: c.files.download(meta.id, tmp_path / "a.txt"))
        assert caught.value.message == f"File {meta.id} cannot be downloaded: only files created by tools can be"
        server.errors.append((429, "rate_limit_error", {"retry-after": "0"}))
        with pytest.raises(RateLimitStatusError):
            await call(server, lambda c: c.files.delete(meta.id), max_retries=0)
        assert list(tmp_path.iterdir()) == []
