"""Mistakes ``mypy --strict`` must reject: checked by tests/test_typing.py, never run.

Each line marked ``# error`` is one error the test expects, exactly; nothing else may fail.
"""

from __future__ import annotations

import streamkit

USER = [{"role": "user", "content": "Hello"}]


def show_message(message: streamkit.Message) -> None:
    print(message.text)


async def mistakes(client: streamkit.AsyncClient) -> None:
    client.messages.stream(model="m", max_tokens=64, messages=USER, temprature=0.5)  # error
    await client.messages.create(model="m", max_tokens=64, messages=USER, stop_sequence=["END"])  # error
    client.messages.stream(model="m", max_tokens=64, messages=USER, service_tier="fast")  # error
    client.messages.stream(model="m", max_tokens=64, messages=USER, top_k=0.5)  # error
    client.messages.stream(model="m", max_tokens=64, messages=USER, on_text=show_message)  # error
    await client.messages.create(model="m", max_tokens=64, messages=USER, timeout="5")  # error
    client.with_options(max_retry=1)  # error
