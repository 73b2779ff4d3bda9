"""Many long generations that nobody waits for: one Message Batch, its results read as they come.

``batches.run()`` creates the batch, polls until it has ended (printing its progress), and
reads the results file line by line; the mock server cuts that file once, and streamkit
resumes it with a ``Range`` request without delivering any result twice.  Runs against the
mock server unless ANTHROPIC_API_KEY is set:
    python examples/batch.py
"""

from __future__ import annotations

import asyncio
import os

import streamkit
from streamkit.testing import MockServer, Reply

TOPICS = ["lighthouses", "tides", "fog horns", "shipwrecks", "lighthouse keepers"]


def requests(model: str) -> list[streamkit.BatchRequest]:
    return [
        {
            "custom_id": f"essay-{i}",
            "params": {
                "model": model,
                "max_tokens": 8000,
                "messages": [{"role": "user", "content": f"Write a long essay about {topic}."}],
            },
        }
        for i, topic in enumerate(TOPICS)
    ]


def progress(batch: streamkit.MessageBatch) -> None:
    counts = batch.request_counts
    print(
        f"[{batch.processing_status}: {counts.succeeded} succeeded, {counts.errored} errored, "
        f"{counts.processing} processing]"
    )


async def essays(client: streamkit.AsyncClient, model: str, poll_interval: float) -> dict[str, str]:
    written: dict[str, str] = {}
    async with client.messages.batches.run(
        requests(model), poll_interval=poll_interval, on_progress=progress
    ) as results:
        async for result in results:
            match result.result:
                case streamkit.MessageBatchSucceededResult(message=message):
                    written[result.custom_id] = message.text
                case streamkit.MessageBatchErroredResult(error=error):
                    print(f"[{result.custom_id} failed: {type(error).__name__}: {error.message}]")
                case other:
                    print(f"[{result.custom_id}: {other.type}]")
        print(f"[{len(written)} essays, results resumed {results.resumes} time(s)]")
    return written


async def main() -> dict[str, str]:
    if os.environ.get("ANTHROPIC_API_KEY"):
        async with streamkit.AsyncClient() as client:
            return await essays(client, os.environ.get("STREAMKIT_MODEL", streamkit.DEFAULT_MODEL), 30.0)
    async with MockServer() as server:
        server.batches.advance_per_poll = 2.0  # the mock's clock: each request takes a second
        server.batches.script({"essay-3": Reply.error(529), "*": Reply.text("An essay.")})
        server.batches.cut_results(500)  # the results file breaks once, 500 bytes in
        async with streamkit.AsyncClient(api_key="demo", base_url=server.base_url) as client:
            return await essays(client, "claude-mock-1", 0.01)


if __name__ == "__main__":
    asyncio.run(main())
