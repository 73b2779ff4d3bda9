"""Each example runs against the mock server and produces exactly what it promises."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from streamkit.testing import lorem

pytestmark = pytest.mark.anyio
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


async def test_async_iterator_example(capsys: pytest.CaptureFixture[str]) -> None:
    text = await load("async_iterator").main()
    expected = "The Nile flows north. The Amazon carries the most water. The Danube crosses ten countries."
    assert text == expected
    assert capsys.readouterr().out == f"\n[block 0: text]\n{expected}\n[stop_reason: end_turn]\n"


async def test_ui_callbacks_example() -> None:
    widget = await load("ui_callbacks").main()
    assert "".join(widget.thinking) == "A greeting, keep it short."
    assert "".join(widget.tokens) == "Hello, river!"
    assert widget.status == "done (end_turn)"


async def test_long_generation_example(capsys: pytest.CaptureFixture[str]) -> None:
    stream = await load("long_generation").main()
    message = await stream.get_final_message()
    assert message.text == lorem(4000, seed=3)
    assert [type(info.cause).__name__ for info in stream.resumes] == ["OverloadedStreamError", "ConnectionLostError"]
    out = capsys.readouterr().out
    assert out.endswith("\n[4000 characters, 2 resume(s), stop_reason end_turn]\n")
    assert out.count("[resumed after ") == 2


async def test_sync_client_example(capsys: pytest.CaptureFixture[str]) -> None:
    module = load("sync_client")
    text = await anyio.to_thread.run_sync(module.main)
    assert text == module.TEXT
    out = capsys.readouterr().out
    assert out.count("\n[resumed after ConnectionLostError]\n") == 1
    assert out.endswith(f"\n[{len(module.TEXT)} characters, stop_reason end_turn]\n")
    assert out.replace("\n[resumed after ConnectionLostError]\n", "").startswith(module.TEXT)


async def test_batch_example(capsys: pytest.CaptureFixture[str]) -> None:
    written = await load("batch").main()
    assert written == {f"essay-{i}": "An essay." for i in (0, 1, 2, 4)}
    out = capsys.readouterr().out
    assert out.startswith("[in_progress: 0 succeeded, 0 errored, 5 processing]\n")
    assert out.endswith(
        "[ended: 4 succeeded, 1 errored, 0 processing]\n"
        "[essay-3 failed: OverloadedError: Overloaded]\n"
        "[4 essays, results resumed 1 time(s)]\n"
    )
