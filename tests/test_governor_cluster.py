"""The governor shared through a real Redis Cluster of three redis-server processes (streamkit.testing.RedisCluster).

The cluster is the module's: a primary takes writes only two seconds after it started, so one
cluster serves every test here, and the test that kills a node restarts it before it ends.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from conftest import client_for, closed_port

import streamkit
from streamkit import Governor, GovernorSnapshot, GovernorTimeoutError
from streamkit._governor_redis import _LUA
from streamkit.testing import Limits, MockServer, RateLimiter, RedisCluster, RedisServer, Reply
from streamkit.testing._redis import command

pytest.importorskip("redis")

MODEL = "claude-mock-1"
USER = [{"role": "user", "content": "Hello"}]
SLOW: dict[str, Any] = {"initial_window": 2, "ramp_seconds": 10.0}  # two at once, then one every 5 s
SHA = hashlib.sha1(_LUA.encode()).hexdigest()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        directories = [node._dir.name for node in started.nodes if node._dir is not None]
        yield started
    assert [node.running for node in started.nodes] == [False, False, False]
    assert [os.path.exists(directory) for directory in directories] == [False, False, False]


def keys_on(node: RedisServer, pattern: str) -> list[bytes]:
    found = command(node.port, "KEYS", pattern)
    assert isinstance(found, list)
    return sorted(found)


def lane_keys(key: str) -> list[bytes]:
    base = f"streamkit:{{{key}}}:{MODEL}"
    return sorted(name.encode() for name in (base, f"{base}:leases", f"{base}:lease-info"))


def test_the_cluster_has_three_primaries_that_share_every_slot(cluster: RedisCluster) -> None:
    assert cluster.slot_ranges == [(0, 5460), (5461, 10921), (10922, 16383)]
    for node in cluster.nodes:
        info = command(node.port, "CLUSTER", "INFO")
        assert isinstance(info, bytes)
        fields = dict(line.split(":", 1) for line in info.decode().split("\r\n") if ":" in line)
        assert (fields["cluster_state"], fields["cluster_slots_assigned"], fields["cluster_known_nodes"]) == (
            "ok",
            "16384",
            "3",
        )
        assert fields["cluster_size"] == "3"


@pytest.mark.anyio
async def test_two_governors_on_two_nodes_pace_one_key_together_and_learn_the_limits_together(
    cluster: RedisCluster, anyio_backend: str
) -> None:
    key = f"pace-{anyio_backend}"  # the cluster is the module's: each test and backend its own key
    first = Governor(redis_url=cluster.nodes[0].url, redis_cluster=True, key=key, **SLOW)
    second = Governor(redis_url=cluster.nodes[2].url, redis_cluster=True, key=key, pool_timeout=1.0, **SLOW)
    limits = RateLimiter(Limits(requests_per_minute=600, output_tokens_per_minute=40_000))
    async with MockServer(default=Reply.text("Hi", output_tokens=3), limits=limits) as server:
        async with client_for(server, governor=first) as one, client_for(server, governor=second) as other:
            for _ in range(2):
                assert (await one.messages.create(model=MODEL, max_tokens=9, messages=USER)).text == "Hi"
            with pytest.raises(GovernorTimeoutError) as caught:
                await other.messages.create(model=MODEL, max_tokens=9, messages=USER)
    wait = caught.value.wait
    assert wait is not None and 4.0 < wait <= 5.0  # the first's two took the shared burst: 5 s less the time since
    assert len(server.requests) == 2
    learned = await second.asnapshot(MODEL)  # it sent nothing, yet knows what the first's answers said
    assert (learned.backend, learned.redis_connected, learned.admitted, learned.in_flight) == ("redis", True, 2, 0)
    assert (learned.requests_per_minute, learned.output_tokens_per_minute) == (600.0, 40_000.0)


def test_a_governors_keys_live_in_its_slot_whose_node_gets_the_script_on_its_first_noscript(
    cluster: RedisCluster,
) -> None:
    keys = ["b", "c", "a"]  # slots 3300, 7365 and 15495: one on each node
    assert [cluster.nodes.index(cluster.owner(key)) for key in keys] == [0, 1, 2]
    for node in cluster.nodes:
        command(node.port, "SCRIPT", "FLUSH")
    for key in keys:
        governor = Governor(redis_url=cluster.url, redis_cluster=True, key=key)
        assert [governor.admit_sync(MODEL, 10, 100, retry=False)[0] for _ in range(2)] == ["r:1", "r:2"]
    assert [command(node.port, "SCRIPT", "EXISTS", SHA) for node in cluster.nodes] == [[1], [1], [1]]
    for key, owner in zip(keys, cluster.nodes, strict=True):
        pattern = f"streamkit:{{{key}}}:*"  # the state, and the two held leases
        assert keys_on(owner, pattern) == lane_keys(key)
        assert [keys_on(node, pattern) for node in cluster.nodes if node is not owner] == [[], []]
        assert {cluster.keyslot(name.decode()) for name in lane_keys(key)} == {cluster.keyslot(key)}


@pytest.mark.anyio
async def test_a_slot_moved_while_in_use_is_followed_without_a_fallback(
    cluster: RedisCluster, anyio_backend: str
) -> None:
    key = f"moved-{anyio_backend}"
    governor = Governor(redis_url=cluster.url, redis_cluster=True, key=key)
    source = cluster.owner(key)
    target = next(node for node in cluster.nodes if node is not source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback would warn
        assert await governor.admit(MODEL, 10, 100, retry=False) == ("r:1", 0.0)
        cluster.move(key, target)  # the client still believes the source owns the slot: MOVED
        assert await governor.admit(MODEL, 10, 100, retry=False) == ("r:2", 0.0)  # the state moved with it
        snapshot = await governor.asnapshot(MODEL)
    assert cluster.owner(key) is target
    assert keys_on(target, f"streamkit:{{{key}}}:*") == lane_keys(key)
    assert (snapshot.redis_connected, snapshot.admitted, snapshot.in_flight) == (True, 2, 2)


@pytest.mark.anyio
async def test_asnapshot_on_the_cluster_gives_the_same_fields_as_snapshot(
    cluster: RedisCluster, anyio_backend: str
) -> None:
    governor = Governor(
        redis_url=cluster.url,
        redis_cluster=True,
        key=f"snap-{anyio_backend}",
        initial_window=5,
        ramp_seconds=5.0,
        retry_burst=10,
    )
    assert await anyio.to_thread.run_sync(lambda: governor.admit_sync(MODEL, 10, 100, retry=False)) == ("r:1", 0.0)
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
    assert await governor.asnapshot() == expected
    assert governor.snapshot() == expected


@pytest.mark.anyio
async def test_the_slots_node_killed_the_governor_falls_back_no_request_fails_and_it_rejoins(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    key = f"kill-{anyio_backend}"
    governor = Governor(redis_url=cluster.url, redis_cluster=True, key=key, redis_retry=0.2, redis_timeout=0.5)
    owner = cluster.owner(f"streamkit:{{{key}}}:{MODEL}")
    caplog.set_level(logging.INFO, logger="streamkit")
    async with MockServer(default=Reply.text("Hi", output_tokens=3)) as server:
        async with client_for(server, governor=governor) as client:

            async def ask() -> str:
                return (await client.messages.create(model=MODEL, max_tokens=9, messages=USER)).text

            assert await ask() == "Hi"
            owner.kill()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    assert [await ask() for _ in range(3)] == ["Hi", "Hi", "Hi"]
                    alone = await governor.asnapshot()
            finally:
                owner.restart()  # the module's cluster must be whole again for the next test
                await anyio.to_thread.run_sync(cluster.wait_ok)
            assert [str(warning.message).split(" (")[0] for warning in caught] == [
                "streamkit's rate governor cannot reach Redis"
            ]
            assert (alone.backend, alone.redis_connected, alone.admitted, alone.in_flight) == ("redis", False, 3, 0)
            assert await ask() == "Hi"  # the restarted node is empty: its count starts again
            rejoined = await governor.asnapshot()
    assert (rejoined.redis_connected, rejoined.admitted, rejoined.in_flight) == (True, 1, 0)
    assert len(server.requests) == 5
    messages = [(record.levelname, record.getMessage().split(" (")[0]) for record in caplog.records]
    assert messages == [
        ("WARNING", "streamkit's rate governor cannot reach Redis"),
        ("INFO", "streamkit's rate governor: Redis answers again, rejoined the shared governor"),
    ]


def test_a_slot_no_node_serves_is_a_fallback_until_its_node_serves_it_again(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    governor = Governor(redis_url=cluster.url, redis_cluster=True, key="down", redis_retry=0.1, redis_timeout=0.5)
    slot, owner = cluster.keyslot("down"), cluster.owner("down")
    assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("r:1", 0.0)
    for node in cluster.nodes:  # unassigned everywhere: the cluster is down (CLUSTERDOWN), its keys stay on the owner
        assert command(node.port, "CLUSTER", "DELSLOTS", slot) == "OK"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("m:1", 0.0)
    finally:
        owner_id = command(owner.port, "CLUSTER", "MYID")
        assert isinstance(owner_id, bytes)
        for node in cluster.nodes:  # told at once, rather than by gossip
            assert command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", owner_id.decode()) == "OK"
        cluster.wait_ok()
    assert [str(warning.message).split(" (")[0] for warning in caught] == [
        "streamkit's rate governor cannot reach Redis"
    ]
    deadline = time.monotonic() + 5.0
    while governor.snapshot(MODEL).redis_connected is False and time.monotonic() < deadline:  # its next try
        time.sleep(0.02)
    assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("r:2", 0.0)  # the shared state was kept
    assert [record.levelname for record in caplog.records] == ["WARNING"]


def test_a_cluster_that_cannot_be_reached_at_start_is_a_fallback_too(caplog: pytest.LogCaptureFixture) -> None:
    governor = Governor(redis_url=f"redis://127.0.0.1:{closed_port()}", redis_cluster=True, key="org")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("m:1", 0.0)
    assert [record.getMessage().split(" (")[1].split(":")[0] for record in caplog.records] == ["RedisClusterException"]
    assert governor.snapshot(MODEL).redis_connected is False


class _CountedLock:
    """A lock that counts the threads that came to take it (taken or still waiting)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = 0

    def __enter__(self) -> None:
        self.arrived += 1
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_threads_queued_behind_a_failed_cluster_connection_fall_back_without_trying_again() -> None:
    governor = Governor(redis_url=f"redis://127.0.0.1:{closed_port()}", redis_cluster=True, key="org")
    backend: Any = governor._backend
    attempts: list[int] = []
    connect = backend._connect

    def counted() -> Any:
        attempts.append(1)
        return connect()

    backend._connect, backend._connect_lock = counted, _CountedLock()
    admitted: dict[str, tuple[str, float]] = {}

    def admit(model: str) -> None:
        admitted[model] = governor.admit_sync(model, 10, 100, retry=False)

    threads = [threading.Thread(target=admit, args=(model,)) for model in ("model-a", "model-b")]  # two lanes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with backend._connect_lock.lock:  # both threads queue for the connection
            for thread in threads:
                thread.start()
            while backend._connect_lock.arrived < 2:
                time.sleep(0.001)
        for thread in threads:
            thread.join(10.0)
    assert len(attempts) == 1  # the one that took the lock first tried; the other fell back at once
    assert sorted(admitted.values()) == [("m:1", 0.0), ("m:2", 0.0)]  # both from the fallback, at once


def test_cluster_options_are_checked_when_the_governor_is_made() -> None:
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(redis_cluster=True)
    assert str(caught.value) == "Governor: redis_cluster=True needs the redis_url of one of its nodes"
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(redis_url="redis://127.0.0.1:7000/2", redis_cluster=True)
    assert str(caught.value) == (
        "Governor: a Redis Cluster URL names a TCP node and database 0, not 'redis://127.0.0.1:7000/2'"
    )
