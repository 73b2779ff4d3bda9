"""A long generation inside ``async with``: it survives an overload and a cut connection.

The mock server is told to fail twice midway; streamkit resumes each time and the
text on screen reads as one reply.  ``async with`` owns the connection: leaving it,
normally or not, closes the response.  Runs against the mock server unless
ANTHROPIC_API_KEY is set:
    python examples/long_generation.py
"""

from __future__ import annotations

import asyncio
import os

import streamkit
from streamkit.testing import Fault, MockServer, Reply, lorem


async def generate(client: streamkit.AsyncClient, model: str) -> streamkit.MessageStream:
    async with client.messages.stream(
        model=model,
        max_tokens=32_000,
        messages=[{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
        stall_timeout=120.0,  # only pings for two minutes counts as a failure, and is resumed
        max_resumes=3,
        on_resume=lambda info: print(f"\n[resumed after {type(info.cause).__name__}, kept {info.kept_chars} chars]"),
    ) as stream:
        async for text in stream.text_stream:
            print(text, end="", flush=True)
        message = await stream.get_final_message()
    print(f"\n[{len(message.text)} characters, {len(stream.resumes)} resume(s), stop_reason {message.stop_reason}]")
    return stream


async def main() -> streamkit.MessageStream:
    if os.environ.get("ANTHROPIC_API_KEY"):
        async with streamkit.AsyncClient() as client:
            return await generate(client, os.environ.get("STREAMKIT_MODEL", streamkit.DEFAULT_MODEL))
    story = lorem(4000, seed=3)
    replies = [
        Reply.text(story, fault=Fault(kind="error", after=100)),
        Reply.text(story, fault=Fault(kind="cut", after=150)),
        Reply.text(story),
    ]
    async with (
        MockServer(*replies) as server,
        streamkit.AsyncClient(api_key="demo", base_url=server.base_url) as client,
    ):
        return await generate(client, "claude-mock-1")


if __name__ == "__main__":
    asyncio.run(main())
