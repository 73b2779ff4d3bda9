"""``python -m benchmarks profile``: pyinstrument over a contender consuming one stream (after a warm-up)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from ._scenarios import FRAMINGS, reply_file
from ._server import mock_server
from ._spec import load_reply
from ._worker import check, contender


async def _profiled(base_url: str, path: str, name: str, repeat: int, interval: float) -> tuple[Any, str | None]:
    from pyinstrument import Profiler

    value, expected = load_reply(path)
    impl = contender(name)
    client = await impl.setup(base_url)
    try:
        problem = check(await impl.consume(client, value), expected)  # warm-up
        profiler = Profiler(interval=interval, async_mode="disabled")
        profiler.start()
        for _ in range(repeat):
            outcome = await impl.consume(client, value)
        profiler.stop()
        problem = problem or check(outcome, expected)
    finally:
        await impl.aclose(client)
    return profiler, problem


def main(
    kind: str,
    size: int,
    repeat: int,
    out_dir: Path,
    framing: str = "chunk",
    name: str = "streamkit",
    interval: float = 0.0002,
) -> list[Path]:
    """Profile contender ``name`` (a streamkit consumer by default) on each kind of stream in ``framing``."""
    written = []
    with tempfile.TemporaryDirectory(prefix="streamkit-profile-") as directory, mock_server() as base_url:
        for one in kind.split(","):
            path, _ = reply_file(directory, one, size, *FRAMINGS[framing])
            profiler, problem = asyncio.run(_profiled(base_url, path, name, repeat, interval))
            if problem:
                print(f"warning: {one}: {problem}")
            text = profiler.output_text(unicode=True, color=False, show_all=False)
            out_dir.mkdir(parents=True, exist_ok=True)
            stem = f"profile-{name}-{framing}-{one}-{size}"
            target = out_dir / f"{stem}.txt"
            target.write_text(text)
            (out_dir / f"{stem}.html").write_text(profiler.output_html())
            print(text)
            written.append(target)
    return written
