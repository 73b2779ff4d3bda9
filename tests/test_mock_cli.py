"""``python -m streamkit.testing`` with rate limits: the command-line server in a subprocess, driven
by streamkit's client over real sockets (no governor, so the server's refusals are what is seen)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from conftest import one_attempt_client

import streamkit
from streamkit.testing import Acceleration, Generation, Limits, Overload, lorem
from streamkit.testing.__main__ import _limiter, _parser, main

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
COMMAND = [sys.executable, "-m", "streamkit.testing", "--port", "0"]
USER = [{"role": "user", "content": "x" * 40}]  # 10 input tokens


@dataclass
class Served:
    """A command-line server: its URL, then, once stopped, its exit status and what it printed last."""

    url: str = ""
    returncode: int | None = None
    output: str = ""


@asynccontextmanager
async def serve(*flags: str) -> AsyncIterator[Served]:
    """The server with ``flags`` on a free port for the block (ready once it printed its URL);
    then SIGTERM, and the process is reaped whatever happened."""
    served = Served()
    process = await anyio.open_process([*COMMAND, *flags], env=ENV, stderr=None)
    assert process.stdout is not None
    stdout = BufferedByteReceiveStream(process.stdout)
    try:
        with anyio.fail_after(30):  # a guard only: the line normally comes in well under a second
            line = (await stdout.receive_until(b"\n", 1000)).decode()
        match = re.fullmatch(r"streamkit mock server listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        served.url = match.group(1)
        yield served
        process.terminate()
        with anyio.fail_after(10):
            served.output = b"".join([chunk async for chunk in stdout]).decode()
            served.returncode = await process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # already reaped
            process.kill()
        await process.aclose()


def left(limit: streamkit.RateLimit | None) -> tuple[int | None, int | None] | None:
    """A dimension's limit and what it has left (None: no headers for it)."""
    return None if limit is None else (limit.limit, limit.remaining)


def resets_in(limit: streamkit.RateLimit | None, seconds: float, before: datetime, after: datetime) -> bool:
    """The bucket's reset is ``seconds`` after the request (made between ``before`` and ``after``),
    rounded up to the second."""
    assert limit is not None and limit.reset is not None
    earliest = (before + timedelta(seconds=seconds)).replace(microsecond=0)
    return earliest <= limit.reset <= after + timedelta(seconds=seconds + 1)


pytestmark = pytest.mark.anyio


async def test_limits_per_model_show_in_the_headers_and_an_empty_bucket_draws_a_429() -> None:
    flags = ["--requests-per-minute", "1", "--input-tokens-per-minute", "6000", "--output-tokens-per-minute", "3000"]
    flags += ["--output-tokens", "20", "--tokens-per-second", "10000"]  # generated replies of 20 tokens
    flags += ["--model", "big", "--requests-per-minute", "100"]
    async with serve(*flags) as served, one_attempt_client(served.url) as client:
        before, started = datetime.now(UTC), time.monotonic()
        first = await client.messages.create(model="m", max_tokens=100, messages=USER)
        after = datetime.now(UTC)
        with pytest.raises(streamkit.RateLimitStatusError) as caught:
            await client.messages.create(model="m", max_tokens=100, messages=USER)
        apart = time.monotonic() - started  # at least the time between the two requests
        big = await client.messages.create(model="big", max_tokens=100, messages=USER)

    assert (first.text, first.usage.output_tokens, big.text) == (lorem(80), 20, lorem(80))
    limits = first.rate_limits
    # 1 request of 1 a minute, 10 input tokens of 6,000, 100 output tokens (max_tokens) of 3,000 reserved;
    # tokens-* is the token bucket with least left.
    assert [left(limits.requests), left(limits.input_tokens), left(limits.output_tokens), left(limits.tokens)] == [
        (1, 0),
        (6_000, 5_990),
        (3_000, 2_900),
        (3_000, 2_900),
    ]
    # Full again: requests in 60 s, input tokens in 0.1 s, output tokens in 2 s (rounded up to the second).
    assert resets_in(limits.requests, 60, before, after)
    assert resets_in(limits.input_tokens, 0.1, before, after)
    assert resets_in(limits.output_tokens, 2, before, after)

    refused = caught.value
    assert (refused.status_code, refused.error_type) == (429, "rate_limit_error")
    # The request comes back 60 s after the first one: retry-after is 60 unless the two were over a second apart.
    assert refused.retry_after is not None
    assert math.ceil(60 - apart) <= refused.retry_after <= 60
    assert refused.message == "mock server: requests per minute (1) exceeded"
    assert refused.rate_limits.requests == limits.requests  # still empty, full at the same instant

    other = big.rate_limits  # the limits after --model big: requests only
    assert [left(other.requests), left(other.input_tokens), left(other.output_tokens), left(other.tokens)] == [
        (100, 99),
        None,
        None,
        None,
    ]

    assert served.returncode == 0
    assert served.output == 'streamkit mock server counts: {"admitted": 2, "output_tokens": 40, "rate_limited": 1}\n'


async def test_overload_episodes_refuse_before_the_stream_or_break_it_after_the_200() -> None:
    # Two episodes for the whole run: every second request gets a 529, the others an error event
    # after 4 events (message_start, content_block_start, two deltas of 4 characters).
    flags = ["--text-length", "40", "--chunk-size", "4"]
    flags += ["--overload", "0:inf:before:0.5", "--overload", "0:inf:after=4"]
    async with serve(*flags) as served, one_attempt_client(served.url) as client:
        with pytest.raises(streamkit.OverloadedStreamError) as broken:
            async with client.messages.stream(model="m", max_tokens=100, messages=USER) as stream:
                await stream.get_final_message()
        with pytest.raises(streamkit.OverloadedStatusError) as refused:
            async with client.messages.stream(model="m", max_tokens=100, messages=USER) as stream:
                await stream.get_final_message()

    assert (broken.value.status_code, broken.value.error_type, broken.value.message) == (
        200,
        "overloaded_error",
        "Overloaded",
    )
    assert broken.value.partial_message is not None
    assert broken.value.partial_message.text == lorem(40)[:8]
    assert (refused.value.status_code, refused.value.error_type, refused.value.message) == (
        529,
        "overloaded_error",
        "Overloaded",
    )
    assert refused.value.partial_message is None
    assert served.returncode == 0
    # The first request was seen by both episodes, the second by the first one only; the same
    # body both times, so one request to the limiter.
    counts = '{"admitted": 1, "during_overload": 3, "output_tokens": 0, "overload_requests": 1, "overloaded": 2}'
    assert served.output == f"streamkit mock server counts: {counts}\n"


def test_the_options_build_the_limiter_objects() -> None:
    options = "--input-tokens-per-minute 5000 --model a --output-tokens-per-minute 10 --requests-per-minute 3"
    options += " --model b --acceleration-floor 3 --acceleration-window 2.5 --overload 30:15"
    options += " --overload 60:inf:after=2:0.25 --generate --tokens-per-event 2"
    limiter = _limiter(_parser().parse_args(options.split()))
    assert limiter is not None
    assert limiter.limits == Limits(input_tokens_per_minute=5_000)
    assert limiter.models == {"a": Limits(requests_per_minute=3, output_tokens_per_minute=10), "b": Limits()}
    assert limiter.acceleration == Acceleration(window=2.5, floor=3)
    assert limiter.overloads == (
        Overload(start=30, end=45),
        Overload(start=60, end=float("inf"), fraction=0.25, in_stream=True, after=2),
    )
    assert limiter.generation == Generation(tokens_per_event=2)


def test_without_limit_options_there_is_no_limiter_and_a_switch_alone_takes_the_defaults() -> None:
    assert _limiter(_parser().parse_args(["--text-length", "5"])) is None
    only = _limiter(_parser().parse_args(["--acceleration", "--generate"]))
    assert only is not None
    assert (only.limits, only.models, only.acceleration, only.overloads) == (Limits(), {}, Acceleration(), ())
    assert only.generation == Generation()


BAD = [
    (
        ["--requests-per-minute", "0"],
        "argument --requests-per-minute: "
        "requests_per_minute must be a positive whole number (or None: unlimited), not 0",
    ),
    (["--output-tokens-per-minute", "many"], "argument --output-tokens-per-minute: invalid int value: 'many'"),
    (["--acceleration-window", "nan"], "argument --acceleration-window: window must be positive seconds, not nan"),
    (["--acceleration-floor", "0"], "argument --acceleration-floor: floor must be a whole number >= 1, not 0"),
    (["--overload", "5"], "argument --overload: '5': expected START:DURATION[:PHASE[:FRACTION]]"),
    (["--overload", "5:x"], "argument --overload: '5:x': could not convert string to float: 'x'"),
    (["--overload", "inf:1"], "argument --overload: 'inf:1': START must be a finite number of seconds, not inf"),
    (["--overload", "nan:1"], "argument --overload: 'nan:1': START must be a finite number of seconds, not nan"),
    (
        ["--overload", "5:1:during"],
        "argument --overload: '5:1:during': the phase is before, after or after=EVENTS, not 'during'",
    ),
    (
        ["--overload", "5:1:after=-1"],
        "argument --overload: '5:1:after=-1': after must be a whole number of events >= 0, not -1",
    ),
    (
        ["--overload", "5:-1"],
        "argument --overload: '5:-1': an overload episode needs start <= end and 0 <= fraction <= 1:"
        " Overload(start=5.0, end=4.0, fraction=1.0, in_stream=False, after=1)",
    ),
    (
        ["--tokens-per-second", "0"],
        "argument --tokens-per-second: tokens_per_second must be a positive number, not 0.0",
    ),
    (
        ["--generate", "--text-length", "9"],
        "generated replies take the place of the default reply that --text-length and --chunk-size shape",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_a_bad_option_is_a_usage_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m streamkit.testing: error: {message}"


def test_the_command_exits_2_with_the_message_and_no_traceback() -> None:
    done = subprocess.run([*COMMAND, "--overload", "30"], env=ENV, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: python -m streamkit.testing")
    assert done.stderr.endswith(
        "python -m streamkit.testing: error: argument --overload: '30': expected START:DURATION[:PHASE[:FRACTION]]\n"
    )


def test_the_help_lists_the_limit_options_with_their_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for option in (
        "--requests-per-minute REQUESTS",
        "--input-tokens-per-minute TOKENS",
        "--output-tokens-per-minute TOKENS",
        "--model NAME",
        "--acceleration-window SECONDS",
        "--acceleration-trailing SECONDS",
        "--acceleration-factor FACTOR",
        "--acceleration-floor REQUESTS",
        "--overload START:DURATION[:PHASE[:FRACTION]]",
        "--output-tokens TOKENS",
        "--tokens-per-second TOKENS tokens generated per second (default 50)",
        "--tokens-per-event TOKENS tokens per text delta (default 5)",
    ):
        assert option in shown
