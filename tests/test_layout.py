"""The package's shape: no import cycle, and the stream shell never holds the client."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import pytest

import streamkit
from streamkit.testing import MockServer, Reply

PACKAGE = Path(streamkit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every streamkit module ``path`` imports, also under TYPE_CHECKING and inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("streamkit"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import _x`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("streamkit"))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & modules.keys() - {name} for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert "streamkit._stream" in graph and "streamkit._reply" in graph
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    # The package __init__ re-exports everything; a cycle through it would be every module.
    for module in sorted(graph):
        if module not in state and module != "streamkit":
            visit(module, [module])
    assert cycles == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_reply_machine_imports_no_io() -> None:
    """The sans-I/O pieces never import httpx or anyio, not even through another module."""
    graph = import_graph()
    sans_io = ["_reply", "_replay", "_splice", "_resume", "_retry", "_accumulate", "_sse", "_events", "_message"]
    sans_io += ["_jsonl", "_batching", "_batch_types"]
    for name in sans_io:
        for module in reachable(graph, f"streamkit.{name}"):
            source = (PACKAGE.parent / (module.replace(".", "/") + ".py")).read_text()
            assert "import httpx" not in source and "import anyio" not in source, f"{name} imports {module}"


@pytest.mark.anyio
async def test_a_stream_does_not_hold_the_client() -> None:
    async with MockServer(Reply.text("Hello")) as server:
        async with streamkit.AsyncClient(api_key="k", base_url=server.base_url) as client:
            async with client.messages.stream(model="m", max_tokens=9, messages=[]) as stream:
                assert await stream.get_final_text() == "Hello"
                referrers = {id(r) for r in gc.get_referrers(client)}
                held = [vars(stream), *(vars(v) for v in vars(stream).values() if hasattr(v, "__dict__"))]
                assert not {id(d) for d in held} & referrers
