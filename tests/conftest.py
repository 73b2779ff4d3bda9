"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

from pathlib import Path

import pytest

# Recorded API streams (copied from ../shared/fixtures/recorded; see its README for their source).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recorded"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
