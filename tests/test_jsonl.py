"""The sans-I/O results reader: line splitting in bounded memory, resume offsets, result parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamkit import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BatchResult,
    InvalidRequestError,
    MessageBatchCanceledResult,
    MessageBatchErroredResult,
    MessageBatchExpiredResult,
    MessageBatchSucceededResult,
    MessageBatchUnknownResult,
    OverloadedError,
    ProtocolError,
    StreamError,
)
from streamkit._jsonl import LineSplitter, ResultsDecoder, ResumePoint, range_header, resume_skip

MESSAGE = {"id": "msg_1", "model": "m", "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn"}


def line(custom_id: str, result: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}).encode() + b"\n"


FILE = b"".join(
    [
        line("a", {"type": "succeeded", "message": MESSAGE}),
        line(
            "b",
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            },
        ),
        line("c", {"type": "canceled"}),
        line("d", {"type": "expired"}),
    ]
)


def test_every_split_of_the_file_gives_the_same_results() -> None:
    expected = ResultsDecoder(1000).feed(FILE)
    assert [r.custom_id for r in expected] == ["a", "b", "c", "d"]
    for cut in range(len(FILE) + 1):
        decoder = ResultsDecoder(1000)
        got = decoder.feed(FILE[:cut]) + decoder.feed(FILE[cut:]) + decoder.end()
        assert [(r.custom_id, r.result.type) for r in got] == [(r.custom_id, r.result.type) for r in expected]
        assert decoder.delivered == 4


def test_results_are_typed_and_the_error_is_of_its_kind_in_neither_phase() -> None:
    a, b, c, d = ResultsDecoder(1000).feed(FILE)
    assert isinstance(a.result, MessageBatchSucceededResult)
    assert a.result.message.text == "Hi" and a.result.message.id == "msg_1"
    assert isinstance(b.result, MessageBatchErroredResult)
    error = b.result.error
    assert type(error) is InvalidRequestError
    assert not isinstance(error, APIStatusError | StreamError)
    assert (error.message, error.error_type, error.status_code) == ("bad", "invalid_request_error", None)
    assert error.body == {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    assert c == BatchResult("c", MessageBatchCanceledResult())
    assert d == BatchResult("d", MessageBatchExpiredResult())


def test_an_unknown_error_type_and_an_unknown_result_type_are_kept() -> None:
    decoder = ResultsDecoder(1000)
    got = decoder.feed(
        line(
            "e", {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "o"}}}
        )
        + line("f", {"type": "errored", "error": {"type": "error", "error": {"type": "brand_new", "message": "n"}}})
        + line("g", {"type": "deferred", "until": 5})
    )
    assert type(got[0].result) is MessageBatchErroredResult and type(got[0].result.error) is OverloadedError
    assert type(got[1].result) is MessageBatchErroredResult and type(got[1].result.error) is APIError
    assert got[1].result.error.error_type == "brand_new"
    assert got[2].result == MessageBatchUnknownResult("deferred", {"type": "deferred", "until": 5})


def test_blank_lines_crlf_and_a_last_line_without_newline() -> None:
    decoder = ResultsDecoder(1000)
    body = b"\n" + line("a", {"type": "canceled"}).replace(b"\n", b"\r\n") + b"\n" + line("b", {"type": "expired"})[:-1]
    got = decoder.feed(body)
    assert [r.custom_id for r in got] == ["a"]
    assert [r.custom_id for r in decoder.end()] == ["b"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"{not json\n",
            "a line of the batch results is not JSON: key must be a string at line 1 column 2",
        ),
        (b'{"custom_id": "a"}\n', "a line of the batch results has no custom_id, or no result with a type"),
        (b"[1, 2]\n", "a line of the batch results has no custom_id, or no result with a type"),
        (
            b'{"custom_id": "a", "result": {"type": "succeeded", "message": {"id": 5}}}\n',
            "the result of 'a' is not a Message: Input should be a valid string",
        ),
    ],
)
def test_a_line_that_is_not_a_result_is_a_protocol_error_after_the_results_before_it(data: bytes, message: str) -> None:
    decoder = ResultsDecoder(1000)
    good = line("ok", {"type": "canceled"})
    assert [r.custom_id for r in decoder.feed(good + data + good)] == ["ok"]
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(good)
    assert caught.value.message == message
    with pytest.raises(ProtocolError):
        decoder.end()


def test_a_line_over_the_cap_is_refused_whatever_the_chunking() -> None:
    for chunks in ([b"x" * 11], [b"x" * 6, b"x" * 5], [b"x"] * 11, [b"x" * 11 + b"\n"]):
        splitter = LineSplitter(10)
        with pytest.raises(ProtocolError) as caught:
            for chunk in [*chunks, b""]:
                splitter.feed(chunk)
        assert caught.value.message == "line 1 of the batch results is over 10 bytes: refused"
        assert caught.value.data.startswith(b"x")
    splitter = LineSplitter(10)
    assert splitter.feed(b"ok\n" + b"y" * 20 + b"\nnever\n") == [b"ok"]  # the line before is handed out
    with pytest.raises(ProtocolError) as caught:
        splitter.end()
    assert caught.value.message == "line 2 of the batch results is over 10 bytes: refused"
    splitter = LineSplitter(10)
    assert splitter.feed(b"x" * 10 + b"\n" + b"y" * 10) == [b"x" * 10]
    assert splitter.end() == [b"y" * 10]


def test_a_resume_point_drops_what_a_resumed_answer_repeats() -> None:
    point = ResumePoint(max_resumes=2)
    assert point.headers() == {"accept-encoding": "identity", "accept": "*/*"}
    assert point.answered(200, {}) is True
    assert point.take(b"one\ntw") == b"one\ntw"
    assert point.position == 6
    assert point.broke(APIConnectionError("cut")) is True
    assert point.headers()["range"] == "bytes=6-"
    assert point.answered(200, {}) is True  # the server ignored the range: the whole body again
    assert point.take(b"one") == b""
    assert point.take(b"\ntwo\n") == b"o\n"
    assert point.broke(APIConnectionError("cut")) is True
    assert point.answered(206, {"content-range": "bytes 4-99/100"}) is True  # from before the point
    assert point.take(b"two\nthree\n") == b"three\n"
    assert (point.position, point.resumes) == (14, 2)
    assert point.broke(APIConnectionError("cut")) is True
    assert point.broke(APIConnectionError("cut")) is True  # two in a row without a new byte
    assert point.broke(APIConnectionError("cut")) is False
    assert ResumePoint(5).broke(ProtocolError("bad")) is False  # only a lost connection resumes
    assert point.answered(416, {"content-range": "bytes */14"}) is False  # every byte had arrived


def test_range_headers() -> None:
    assert range_header(0) == {"accept-encoding": "identity", "accept": "*/*"}
    assert range_header(17) == {"accept-encoding": "identity", "accept": "*/*", "range": "bytes=17-"}


@pytest.mark.parametrize(
    ("status", "headers", "skip"),
    [
        (200, {}, 40),
        (206, {"content-range": "bytes 40-99/100"}, 0),
        (206, {"content-range": "bytes 30-99/100"}, 10),
        (206, {"content-range": "bytes 40-99/*", "content-encoding": "identity"}, 0),
        (416, {"content-range": "bytes */40"}, None),
    ],
)
def test_resume_skip(status: int, headers: dict[str, str], skip: int | None) -> None:
    assert resume_skip(status, headers, 40) == skip


@pytest.mark.parametrize(
    ("status", "headers", "message"),
    [
        (
            206,
            {"content-range": "bytes 50-99/100"},
            "the answer to a read resumed at byte 40 was 206 with content-range "
            "'bytes 50-99/100': it does not continue the body",
        ),
        (
            206,
            {},
            "the answer to a read resumed at byte 40 was 206 with content-range '': it does not continue the body",
        ),
        (
            416,
            {"content-range": "bytes */100"},
            "the answer to a read resumed at byte 40 was 416 with content-range "
            "'bytes */100': it does not continue the body",
        ),
        (
            206,
            {"content-range": "bytes 40-99/100", "content-encoding": "gzip"},
            "the body came with content-encoding 'gzip' although identity was asked for: "
            "its byte offsets cannot be resumed",
        ),
    ],
)
def test_an_answer_that_does_not_continue_the_file_is_a_protocol_error(
    status: int, headers: dict[str, str], message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        resume_skip(status, {**headers, "request-id": "req_1"}, 40)
    assert (caught.value.message, caught.value.request_id) == (message, "req_1")
