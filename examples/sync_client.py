"""A script without an event loop: the sync client, with a resume it survives.

Runs against the built-in mock server unless ANTHROPIC_API_KEY is set:
    python examples/sync_client.py
"""

from __future__ import annotations

import os

from anyio.from_thread import start_blocking_portal

import streamkit
from streamkit.testing import Fault, MockServer, Reply

TEXT = "Rivers carve valleys over millions of years, and the Colorado carved the Grand Canyon."


def tell(client: streamkit.Client, model: str) -> str:
    """Print the text as it arrives and a line per resume; return the final text."""
    with client.messages.stream(
        model=model,
        max_tokens=512,
        messages=[{"role": "user", "content": "Tell me one fact about rivers."}],
        on_resume=lambda info: print(f"\n[resumed after {type(info.cause).__name__}]"),
    ) as stream:
        for text in stream.text_stream:
            print(text, end="", flush=True)
        message = stream.get_final_message()
    print(f"\n[{len(message.text)} characters, stop_reason {message.stop_reason}]")
    return message.text


def main() -> str:
    if os.environ.get("ANTHROPIC_API_KEY"):
        with streamkit.Client() as client:
            return tell(client, os.environ.get("STREAMKIT_MODEL", streamkit.DEFAULT_MODEL))
    # The mock server is async: a portal runs it in a thread of its own while this script blocks.
    cut, rest = Reply.text(TEXT, fault=Fault("cut", after=6)), Reply.text(TEXT)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(MockServer(cut, rest)) as server,
        streamkit.Client(api_key="demo", base_url=server.base_url) as client,
    ):
        return tell(client, "claude-mock-1")


if __name__ == "__main__":
    main()
