"""An asyncio app reading typed events with ``async for``.

Runs against the built-in mock server unless ANTHROPIC_API_KEY is set:
    python examples/async_iterator.py
"""

from __future__ import annotations

import asyncio
import os

import streamkit
from streamkit.testing import MockServer, Reply


async def summarise(client: streamkit.AsyncClient, model: str) -> str:
    """Print text as it arrives and a line per block; return the final text."""
    async with client.messages.stream(
        model=model,
        max_tokens=512,
        messages=[{"role": "user", "content": "Name three rivers and one fact about each."}],
    ) as stream:
        async for event in stream:
            if isinstance(event, streamkit.ContentBlockStartEvent):
                print(f"\n[block {event.index}: {event.content_block.type}]")
            elif isinstance(event, streamkit.ContentBlockDeltaEvent) and isinstance(event.delta, streamkit.TextDelta):
                print(event.delta.text, end="", flush=True)
            elif isinstance(event, streamkit.MessageDeltaEvent):
                print(f"\n[stop_reason: {event.delta.stop_reason}]")
        return await stream.get_final_text()


async def main() -> str:
    if os.environ.get("ANTHROPIC_API_KEY"):
        async with streamkit.AsyncClient() as client:
            return await summarise(client, os.environ.get("STREAMKIT_MODEL", streamkit.DEFAULT_MODEL))
    reply = Reply.text("The Nile flows north. The Amazon carries the most water. The Danube crosses ten countries.")
    async with MockServer(reply) as server, streamkit.AsyncClient(api_key="demo", base_url=server.base_url) as client:
        return await summarise(client, "claude-mock-1")


if __name__ == "__main__":
    asyncio.run(main())
