"""The ``redis_server`` fixture: a real server that answers, dies on SIGKILL and comes back empty on the same port."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytest
import redis

from streamkit.testing import RedisServer
from streamkit.testing._redis import command


def test_the_server_answers_dies_and_comes_back_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    assert redis_server.url == f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(redis_server.url, retry_on_error=[])
    try:
        assert client.ping() is True
        assert client.set("key", "value") is True
        assert client.get("key") == b"value"

        redis_server.kill()
        assert redis_server.running is False
        client.connection_pool.disconnect()
        with pytest.raises(redis.ConnectionError) as caught:
            client.ping()
        assert str(caught.value) == f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."

        redis_server.restart()
        assert redis_server.port == port
        assert client.ping() is True
        assert client.get("key") is None  # no persistence: the restarted server is empty
    finally:
        client.close()


def test_stop_removes_the_directory_and_may_be_called_twice() -> None:
    server = RedisServer().start()
    directory = server._dir.name if server._dir is not None else ""
    assert os.path.isdir(directory) is True
    server.stop()
    server.stop()
    assert os.path.exists(directory) is False
    assert server.running is False


def test_a_start_that_fails_leaves_no_process_and_no_directory() -> None:
    made: list[str] = []
    real = tempfile.TemporaryDirectory

    def recorded(*args: Any, **kwargs: Any) -> tempfile.TemporaryDirectory[str]:
        directory = real(*args, **kwargs)
        made.append(directory.name)
        return directory

    server = RedisServer(binary=shutil.which("false"))  # exits at once, with 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "TemporaryDirectory", recorded)
        with pytest.raises(RuntimeError) as caught:
            server.start()
    assert str(caught.value) == "redis-server exited with 1: "
    assert (server.running, server._process, server._dir) == (False, None, None)
    [directory] = made
    assert os.path.exists(directory) is False


def test_command_speaks_resp_to_the_server(redis_server: RedisServer) -> None:
    port = redis_server.port
    assert command(port, "SET", "key", "value") == "OK"
    assert command(port, "GET", "key") == b"value"
    assert command(port, "GET", "missing") is None
    assert command(port, "RPUSH", "list", "a", "b") == 2
    assert command(port, "LRANGE", "list", 0, -1) == [b"a", b"b"]
    with pytest.raises(RuntimeError) as caught:
        command(port, "INCR", "key")
    assert str(caught.value) == "ERR value is not an integer or out of range"


def test_a_cluster_nodes_port_leaves_room_for_its_bus_port_10000_above() -> None:
    assert all(RedisServer(cluster=True).port + 10000 <= 65535 for _ in range(50))
