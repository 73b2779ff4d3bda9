"""Shared fixtures and helpers: every async test runs on asyncio and on trio."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

import streamkit
from streamkit.testing import MockServer

# Recorded API streams (copied from ../shared/fixtures/recorded; see its README for their source).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recorded"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


STALL = 0.15
"""A stall timeout for tests: short, yet many times the mock server's gap between events."""

FAST: dict[str, Any] = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}
"""Backoff for tests: real retries, tiny waits."""


def client_for(target: MockServer | str, **options: Any) -> streamkit.AsyncClient:
    """A client of the mock server (or any base URL) with ``FAST`` backoff; options win."""
    base_url = target if isinstance(target, str) else target.base_url
    return streamkit.AsyncClient(api_key="test-key", base_url=base_url, **{**FAST, **options})


def one_attempt_client(target: MockServer | str, **options: Any) -> streamkit.AsyncClient:
    """A client that neither retries nor resumes: the first failure is the one raised."""
    return client_for(target, **{"max_retries": 0, "resume": False, **options})


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
