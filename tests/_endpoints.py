"""Helpers of the batch, token counting and files tests: one call in either world, and scripted errors.

``call(server, action)`` runs ``action(client)`` on an ``AsyncClient``, or in the sync world
on a ``Client`` in a worker thread, and hands back what it returned, read to the end: a
list's items, a results reader's results (as ``Read``).  ``action`` is written once for
both: ``lambda c: c.messages.batches.retrieve(id)`` returns an awaitable in one world and
the batch in the other.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.abc import SocketStream
from conftest import WORLD, client_for, in_thread, sync_client_for

import streamkit
from streamkit.testing import MockServer
from streamkit.testing._server import _error_body


@dataclass
class Read:
    """What reading a batch's results gave: the results, the resumed reads, the batch."""

    results: list[streamkit.BatchResult]
    resumes: int
    batch: streamkit.MessageBatch | None


async def _settle(value: Any) -> Any:
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, streamkit.AsyncBatchResults):
        async with value:
            items = [result async for result in value]
        return Read(items, value.resumes, value.batch)
    if hasattr(value, "__aiter__"):
        return [item async for item in value]
    return value


def _settle_sync(value: Any) -> Any:
    if isinstance(value, streamkit.SyncBatchResults):
        with value:
            items = list(value)
        return Read(items, value.resumes, value.batch)
    if inspect.isgenerator(value):
        return list(value)
    return value


_CLIENTS: dict[tuple[int, str, tuple[tuple[str, Any], ...]], Any] = {}
"""The clients of the running test, one per server, world and options: making one takes a tenth of a second."""


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Close the clients ``call`` made, after the test (import it into a test module to use it)."""
    yield
    while _CLIENTS:
        _, client = _CLIENTS.popitem()
        if isinstance(client, streamkit.Client):
            client.close()
        else:
            await client.aclose()


async def call(server: MockServer, action: Callable[[Any], Any], **options: Any) -> Any:
    """``action(client)`` in the test's world, read to the end (see the module docstring)."""
    key = (id(server), WORLD.name, tuple(sorted(options.items())))
    if WORLD.sync:

        def run() -> Any:
            if key not in _CLIENTS:
                _CLIENTS[key] = sync_client_for(server, **options)
            return _settle_sync(action(_CLIENTS[key]))

        return await in_thread(run)
    if key not in _CLIENTS:
        _CLIENTS[key] = client_for(server, **options)
    return await _settle(action(_CLIENTS[key]))


class ErringServer(MockServer):
    """A MockServer whose batch, token counting and files endpoints first answer the errors queued in ``errors``.

    Each entry is ``(status, error_type, headers)``; the next request to any of those
    endpoints gets it instead of its answer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: deque[tuple[int, str, dict[str, str]]] = deque()

    async def _answer_endpoint(self, stream: SocketStream, recorded: Any, upload: Any, rid: str, keep: bool) -> bool:
        if self.errors:
            status, error_type, headers = self.errors.popleft()
            body = _error_body(error_type, f"scripted {status}", rid)
            return await self._send_json(stream, status, body, rid, keep, headers)
        return await super()._answer_endpoint(stream, recorded, upload, rid, keep)  # type: ignore[misc]
