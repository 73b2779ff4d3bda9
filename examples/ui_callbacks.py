"""Feeding a UI from callback hooks: tokens go to a widget as they arrive.

The hooks fire in order while ``get_final_message()`` drives the stream, so the app
never writes an event loop of its own.  Runs against the mock server unless
ANTHROPIC_API_KEY is set:
    python examples/ui_callbacks.py
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import streamkit
from streamkit.testing import MockServer, Reply, ThinkingBlock


@dataclass
class ChatWidget:
    """Stands in for a UI component: it only appends what it is given."""

    thinking: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    status: str = "waiting"

    def show_thinking(self, text: str) -> None:
        self.thinking.append(text)

    async def show_token(self, text: str) -> None:  # hooks may be coroutines
        self.tokens.append(text)
        print(text, end="", flush=True)

    def finished(self, message: streamkit.Message) -> None:
        self.status = f"done ({message.stop_reason})"
        print(f"\n[{self.status}]")

    def failed(self, error: Exception) -> None:
        self.status = f"failed: {error}"


async def chat(client: streamkit.AsyncClient, model: str, widget: ChatWidget) -> streamkit.Message:
    async with client.messages.stream(
        model=model,
        max_tokens=1024,
        messages=[{"role": "user", "content": "Say hello to the river."}],
        on_thinking=widget.show_thinking,
        on_text=widget.show_token,
        on_message=widget.finished,
        on_error=widget.failed,
    ) as stream:
        return await stream.get_final_message()


async def main() -> ChatWidget:
    widget = ChatWidget()
    if os.environ.get("ANTHROPIC_API_KEY"):
        async with streamkit.AsyncClient() as client:
            await chat(client, os.environ.get("STREAMKIT_MODEL", streamkit.DEFAULT_MODEL), widget)
        return widget
    reply = Reply(blocks=[ThinkingBlock("A greeting, keep it short."), streamkit.testing.TextBlock("Hello, river!")])
    async with MockServer(reply) as server, streamkit.AsyncClient(api_key="demo", base_url=server.base_url) as client:
        await chat(client, "claude-mock-1", widget)
    return widget


if __name__ == "__main__":
    asyncio.run(main())
