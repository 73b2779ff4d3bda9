"""The governor shared through a real redis-server: one pace for many processes, leases, fallback, rejoin."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from conftest import client_for, in_thread, sync_client_for

import streamkit
from streamkit import Governor, GovernorSnapshot, GovernorTimeoutError
from streamkit._governed import Gate
from streamkit._governor import Outcome
from streamkit._retry import RetryPolicy
from streamkit.testing import MockServer, RedisServer, Reply
from streamkit.testing._redis import command

redis = pytest.importorskip("redis")
from redis.crc import key_slot  # noqa: E402

MODEL = "claude-mock-1"
USER = [{"role": "user", "content": "Hello"}]


def test_two_governors_on_one_key_share_one_pace(redis_server: RedisServer) -> None:
    slow = {"initial_window": 2, "ramp_seconds": 10.0}  # two at once, then one every 5 s
    first = Governor(redis_url=redis_server.url, key="org", **slow)
    second = Governor(redis_url=redis_server.url, key="org", pool_timeout=1.0, **slow)
    assert [first.admit_sync(MODEL, 10, 100, retry=False) for _ in range(2)] == [("r:1", 0.0), ("r:2", 0.0)]
    with pytest.raises(GovernorTimeoutError) as caught:
        second.admit_sync(MODEL, 10, 100, retry=False)
    assert caught.value.wait == pytest.approx(5.0, abs=0.1)
    other_key = Governor(redis_url=redis_server.url, key="another-org", **slow)
    assert other_key.admit_sync(MODEL, 10, 100, retry=False) == ("r:1", 0.0)
    snapshot = second.snapshot(MODEL)
    assert (snapshot.backend, snapshot.redis_connected, snapshot.admitted, snapshot.in_flight) == ("redis", True, 2, 2)
    assert snapshot.rate == pytest.approx(0.2, abs=0.01)  # slow start since the pacer held the second back
    assert first.settle_sync(MODEL, "r:1", Outcome("ok", output_tokens=5)) is True
    assert second.snapshot(MODEL).in_flight == 1


def test_a_429s_retry_after_blocks_the_shared_lane_at_most_a_minute(redis_server: RedisServer) -> None:
    governor = Governor(redis_url=redis_server.url, key="org")
    lease, _ = governor.admit_sync(MODEL, 10, 100, retry=False)
    governor.settle_sync(MODEL, lease, Outcome("rate_limited", retry_after=1e9))
    assert 59.0 < governor.snapshot(MODEL).blocked_for <= 60.0
    backend: Any = governor._backend  # the script caps it too, whatever a client passes it
    for hostile, blocked in (("1e9", 60.0), ("inf", 1.0), ("nan", 1.0)):
        backend._run("other", "settle", "", "rate_limited", "", "", *[""] * 6, "0", hostile, "0", "")
        assert blocked - 1.0 < governor.snapshot("other").blocked_for <= blocked, hostile
        redis.Redis.from_url(redis_server.url).delete(*backend.keys("other"))


def test_warnings_as_errors_cannot_fail_a_request_when_redis_goes_away(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    governor = Governor(redis_url=redis_server.url, key="org", redis_retry=0.2, redis_timeout=0.5)
    redis_server.kill()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("m:1", 0.0)
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        "streamkit's rate governor cannot reach Redis"
    ]


def test_after_idle_the_shared_lane_slow_starts_again(redis_server: RedisServer) -> None:
    governor = Governor(redis_url=redis_server.url, key="org", idle_after=0.1)
    lease, _ = governor.admit_sync(MODEL, 10, 100, retry=False)
    governor.settle_sync(MODEL, lease, Outcome("overloaded"))  # the cut sets ssthresh
    state = redis.Redis.from_url(redis_server.url)
    key = governor._backend.keys(MODEL)[0]  # type: ignore[union-attr]
    assert state.hexists(key, "ssthresh")
    time.sleep(0.15)
    governor.admit_sync(MODEL, 10, 100, retry=False)
    assert not state.hexists(key, "ssthresh")  # as the in-process policy's math.inf


def test_a_governors_keys_share_one_hash_tag_so_one_cluster_slot(redis_server: RedisServer) -> None:
    governor = Governor(redis_url=redis_server.url, key="org", output_tokens_per_minute=6000)
    governor.admit_sync(MODEL, 10, 100, retry=False)
    with redis.Redis.from_url(redis_server.url) as connection:
        keys = sorted(connection.keys("*"))
    assert keys == [
        b"streamkit:{org}:claude-mock-1",
        b"streamkit:{org}:claude-mock-1:lease-info",
        b"streamkit:{org}:claude-mock-1:leases",
    ]
    assert len({key_slot(key) for key in keys}) == 1
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(redis_url=redis_server.url, key="a}b")
    assert str(caught.value) == "Governor: key must be a non-empty name without braces, got 'a}b'"


WORKER = """
import sys, time
import streamkit
governor = streamkit.Governor(redis_url=sys.argv[1], key="org", output_tokens_per_minute=600, lease_seconds=0.5)
print(governor.admit_sync("claude-mock-1", 10, 600, retry=False)[0], flush=True)
time.sleep(60)
"""


def test_a_worker_killed_with_sigkill_gives_its_reservation_back_when_its_lease_expires(
    redis_server: RedisServer,
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), redis_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "r:1\n"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        worker.kill()
    governor = Governor(redis_url=redis_server.url, key="org", output_tokens_per_minute=600)
    held = governor.snapshot(MODEL)
    assert held.in_flight == 1
    assert held.output_tokens_remaining is not None and held.output_tokens_remaining < 100
    deadline = time.monotonic() + 5.0
    while governor.snapshot(MODEL).in_flight and time.monotonic() < deadline:  # the lease ends on Redis's clock
        time.sleep(0.05)
    freed = governor.snapshot(MODEL)
    assert (freed.in_flight, freed.output_tokens_remaining) == (0, 600.0)


def test_when_redis_goes_away_the_governor_falls_back_with_one_warning_and_rejoins(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    governor = Governor(redis_url=redis_server.url, key="org", redis_retry=0.2, redis_timeout=0.5)
    assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("r:1", 0.0)
    redis_server.kill()
    caplog.set_level(logging.INFO, logger="streamkit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("m:1", 0.0)
        assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("m:2", 0.0)
        assert governor.settle_sync(MODEL, "r:1", Outcome("ok", output_tokens=5)) is True
        snapshot = governor.snapshot(MODEL)
    assert [str(warning.message).split(" (")[0] for warning in caught] == [
        "streamkit's rate governor cannot reach Redis"
    ]
    assert caught[0].category is RuntimeWarning
    assert str(caught[0].message).endswith("it paces this process alone until Redis answers again")
    assert (snapshot.backend, snapshot.redis_connected, snapshot.admitted, snapshot.in_flight) == (
        "redis",
        False,
        2,
        2,
    )
    assert governor.settle_sync(MODEL, "m:1", Outcome("ok", output_tokens=5)) is True
    redis_server.restart()
    time.sleep(0.25)  # the backoff before the next try (redis_retry)
    assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("r:1", 0.0)  # a fresh Redis: its own count
    assert governor.snapshot(MODEL).redis_connected is True
    messages = [(record.levelname, record.getMessage().split(" (")[0]) for record in caplog.records]
    assert messages == [
        ("WARNING", "streamkit's rate governor cannot reach Redis"),
        ("INFO", "streamkit's rate governor: Redis answers again, rejoined the shared governor"),
    ]


@pytest.mark.anyio
async def test_a_client_governed_through_redis_streams_and_settles(redis_server: RedisServer) -> None:
    governor = Governor(redis_url=redis_server.url, key="org", output_tokens_per_minute=6000)
    async with MockServer(Reply.text("Hello there", output_tokens=7)) as server:
        async with client_for(server, governor=governor) as client:
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
                assert await stream.get_final_text() == "Hello there"
    snapshot = governor.snapshot()
    assert (snapshot.model, snapshot.backend, snapshot.admitted, snapshot.in_flight) == (MODEL, "redis", 1, 0)
    assert snapshot.output_tokens_remaining == pytest.approx(5993, abs=10)


@pytest.mark.anyio
async def test_the_retry_budget_is_shared_through_redis(redis_server: RedisServer) -> None:
    spent = Governor(redis_url=redis_server.url, key="org", retry_burst=1)
    assert spent.settle_sync(MODEL, None, Outcome("overloaded", retry=True)) is True  # the one retry, used
    governor = Governor(redis_url=redis_server.url, key="org", retry_burst=1)
    async with MockServer(Reply.error(529), Reply.text("never sent")) as server:
        async with client_for(server, governor=governor) as client:
            with pytest.raises(streamkit.OverloadedStatusError) as caught:
                await client.messages.create(model=MODEL, max_tokens=9, messages=USER)
    assert caught.value.__notes__[0].startswith("streamkit's rate governor did not retry this 529")
    assert len(server.requests) == 1
    assert spent.snapshot(MODEL).retries_refused == 1


@pytest.mark.anyio
async def test_the_sync_client_governed_through_redis(redis_server: RedisServer) -> None:
    governor = Governor(redis_url=redis_server.url, key="org")
    async with MockServer(Reply.text("Hi")) as server:

        def consume() -> str:
            with sync_client_for(server, governor=governor) as client:
                with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                    return stream.get_final_text()

        assert await in_thread(consume) == "Hi"
    assert (governor.snapshot().admitted, governor.snapshot().in_flight) == (1, 0)


@pytest.mark.anyio
async def test_a_settlement_through_redis_finishes_under_a_cancel(redis_server: RedisServer) -> None:
    governor = Governor(redis_url=redis_server.url, key="org")

    async def send() -> None:
        scope.cancel()  # cancelled once admitted: the round trip that settles the failure must still go
        raise streamkit.OverloadedStatusError("overloaded", status_code=529)

    gate = Gate(governor, MODEL, 100)
    with anyio.CancelScope() as scope:
        with pytest.raises(streamkit.OverloadedStatusError):
            await gate.run(send, RetryPolicy(max_retries=0), 0, [])
    snapshot = governor.snapshot(MODEL)
    assert (snapshot.backend, snapshot.admitted, snapshot.in_flight, snapshot.rate) == ("redis", 1, 0, 0.5)

    async def opened() -> None:
        return None

    await gate.run(opened, RetryPolicy(max_retries=0), 0, [])  # a stream's attempt: settled when it ends
    assert governor.snapshot(MODEL).in_flight == 1
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert await gate.ended(None, None, finished=False) is True
    assert (governor.snapshot(MODEL).admitted, governor.snapshot(MODEL).in_flight) == (2, 0)


@pytest.mark.anyio
async def test_an_answer_is_settled_through_redis_when_a_cancel_lands_during_the_round_trip(
    redis_server: RedisServer,
) -> None:
    governor = Governor(redis_url=redis_server.url, key="org")
    backend: Any = governor._backend
    real_settle = backend.settle

    def settle(lane: str, lease: str | None, outcome: Outcome) -> bool:
        anyio.from_thread.run_sync(scope.cancel)  # from the worker thread, while Redis settles the answer
        return bool(real_settle(lane, lease, outcome))

    backend.settle = settle
    async with MockServer() as server, client_for(server, governor=governor) as client:
        with anyio.CancelScope() as scope:
            await client.messages.count_tokens(model=MODEL, messages=USER)
            await anyio.lowlevel.checkpoint()  # where the cancel lands, the call done
    assert scope.cancelled_caught
    snapshot = governor.snapshot(endpoint="count_tokens")
    assert (snapshot.backend, snapshot.admitted, snapshot.in_flight) == ("redis", 1, 0)


@pytest.mark.anyio
async def test_asnapshot_leaves_the_event_loop_free_while_redis_holds_the_round_trip(
    redis_server: RedisServer,
) -> None:
    governor = Governor(redis_url=redis_server.url, key="org", initial_window=5, ramp_seconds=5.0, retry_burst=10)
    assert await in_thread(lambda: governor.admit_sync(MODEL, 10, 100, retry=False)) == ("r:1", 0.0)
    expected = GovernorSnapshot(
        model=MODEL,
        backend="redis",
        redis_connected=True,
        requests_per_minute=None,
        input_tokens_per_minute=None,
        output_tokens_per_minute=None,
        requests_remaining=None,
        input_tokens_remaining=None,
        output_tokens_remaining=None,
        rate=1.0,
        in_flight=1,
        queued=0,
        retry_budget=10.0,
        retries_refused=0,
        seconds_since_429=None,
        seconds_since_529=None,
        blocked_for=0.0,
        admitted=1,
        waited=0.0,
    )
    assert governor.snapshot() == expected
    # Redis holds every script call (they write) until told otherwise: the snapshot's round trip
    # waits there, and only a loop left free can send the UNPAUSE that lets it through.
    assert command(redis_server.port, "CLIENT", "PAUSE", 60_000, "WRITE") == "OK"
    snapshots: list[GovernorSnapshot] = []
    async with anyio.create_task_group() as group:

        async def take() -> None:
            snapshots.append(await governor.asnapshot(MODEL))

        group.start_soon(take)
        assert await in_thread(lambda: command(redis_server.port, "CLIENT", "UNPAUSE")) == "OK"
    assert snapshots == [expected]  # within redis_timeout: Redis answered, no fallback


@pytest.mark.parametrize("cluster", [False, True])
def test_a_redis_url_option_redis_py_does_not_take_is_refused_when_the_governor_is_made(cluster: bool) -> None:
    url = "redis://127.0.0.1:1/0?health_check=5"
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(redis_url=url, redis_cluster=cluster)
    assert type(caught.value) is streamkit.StreamkitError
    assert str(caught.value) == (
        "Governor: a Redis URL option is not one redis-py takes: 'redis://127.0.0.1:1/0?health_check=5' "
        "(AbstractConnection.__init__() got an unexpected keyword argument 'health_check')"
    )
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(redis_url="redis://127.0.0.1:1/0?protocol=9", redis_cluster=cluster)
    assert str(caught.value) == (
        "Governor: a Redis URL option is not one redis-py takes: 'redis://127.0.0.1:1/0?protocol=9' "
        "(protocol must be either 2 or 3)"
    )
    # The options it knows are taken (nothing is connected yet: no server listens there).
    governor = Governor(redis_url="redis://127.0.0.1:1/0?health_check_interval=5", redis_cluster=cluster)
    assert repr(governor) == "Governor(backend='redis')"
