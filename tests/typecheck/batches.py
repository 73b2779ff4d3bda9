"""Batch, token counting and files calls for ``mypy --strict``: checked by tests/test_typing.py, never run.

Each line marked ``# error`` is one error the test expects; the other lines must pass.
"""

from __future__ import annotations

import streamkit

USER = [{"role": "user", "content": "Hello"}]
GOOD: streamkit.BatchRequest = {"custom_id": "a", "params": {"model": "m", "max_tokens": 64, "messages": USER}}


def counts(batch: streamkit.MessageBatch) -> int:
    return batch.request_counts.succeeded


async def uses(client: streamkit.AsyncClient, sync: streamkit.Client) -> None:
    batch = await client.messages.batches.create([GOOD], extra_body={"x": 1}, max_retries=1)
    await client.messages.batches.wait(batch.id, poll_interval=0.5, timeout=60, on_progress=counts)
    async with client.messages.batches.results(batch) as results:
        async for result in results:
            if isinstance(result.result, streamkit.MessageBatchSucceededResult):
                print(result.custom_id, result.result.message.text)
    tokens: streamkit.MessageTokensCount = await client.messages.count_tokens(model="m", messages=USER, system="s")
    meta: streamkit.FileMetadata = await client.beta.files.upload("notes.txt", betas=["b"])
    async for listed in client.files.list(limit=10):
        print(listed.filename, tokens.input_tokens, meta.size_bytes)
    with sync.messages.batches.run([GOOD], timeout=3600) as sync_results:
        for sync_result in sync_results:
            print(sync_result.custom_id)
    bad: streamkit.BatchRequest = {"custom_id": "b", "params": {"model": "m", "messages": USER}}  # error
    await client.messages.count_tokens(model="m", messages=USER, temperature=0.5)  # error
    await client.messages.batches.retrieve(batch.id, timeout="5")  # error
    await client.messages.batches.wait(batch.id, on_progress=print, poll_interval="1")  # error
    print(bad)
