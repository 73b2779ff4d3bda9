"""Code ``mypy --strict`` must accept: every parameter, option and hook kind.  Checked, never run."""

from __future__ import annotations

import httpx

import streamkit

USER = [{"role": "user", "content": "Hello"}]


async def append_text(text: str) -> None:
    print(text)


def log_event(event: streamkit.StreamEvent) -> int:  # a hook's return value is ignored
    return len(event.type)


async def uses(client: streamkit.AsyncClient) -> streamkit.Message:
    texts: list[str] = []
    errors: list[streamkit.StreamkitError] = []
    async with client.messages.stream(
        model="m",
        max_tokens=1024,
        messages=USER,
        system=[{"type": "text", "text": "Be brief."}],
        metadata={"user_id": "u-1"},
        stop_sequences=["END"],
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        service_tier="standard_only",
        container=None,
        cache_control={"type": "ephemeral"},
        inference_geo="us",
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        on_text=texts.append,
        on_thinking=append_text,
        on_tool_input=print,
        on_event=log_event,
        on_message=lambda message: print(message.text),
        on_error=errors.append,
        on_retry=print,
        on_resume=print,
        on_rewind=print,
        timeout=httpx.Timeout(30.0, connect=5.0),
        max_retries=1,
        extra_headers={"x-trace": "t-1"},
        extra_query={"beta": "true"},
        extra_body={"speed": "fast"},
        betas=["context-management-2025-06-27"],
    ) as stream:
        await stream.get_final_message()
    fast = client.with_options(timeout=10.0, max_retries=0, default_headers={"x-team": "a"})
    return await fast.messages.create(model="m", max_tokens=64, messages=USER, system="Be brief.", timeout=None)
