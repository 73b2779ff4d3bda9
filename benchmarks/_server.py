"""The mock server in its own process (``python -m streamkit.testing --port 0``), always cleaned up."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY = "streamkit mock server listening on "


def prepare_environment(open_files: int = 4096) -> None:
    """The repo importable in pyperf's workers (they inherit PYTHONPATH), and enough open files for sockets."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = open_files if hard == resource.RLIM_INFINITY else min(open_files, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def mock_server(fixtures: str) -> Iterator[tuple[str, int]]:
    """Start the mock server on loopback, replaying the transcripts in ``fixtures``; yield its base URL and pid;
    terminate it on exit (also Ctrl-C)."""
    command = [sys.executable, "-m", "streamkit.testing", "--host", "127.0.0.1", "--port", "0", "--text-length", "100"]
    command += ["--fixtures", fixtures]
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
        try:
            line = process.stdout.readline() if process.stdout else ""  # empty if it exits
            if not line.startswith(READY):
                log.seek(0)
                raise RuntimeError(f"the mock server did not start: {line!r} {log.read()[-2000:]}")
            yield line[len(READY) :].strip(), process.pid
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout:
                process.stdout.close()


def prewarm(base_url: str, header: str) -> None:
    """One request so that the server renders (and caches) a reply before any worker's clock runs."""
    import httpx

    from ._scenarios import BODY, HEADER

    with httpx.Client(timeout=120, trust_env=False) as client:
        client.post(f"{base_url}/v1/messages", json=BODY, headers={HEADER: header}).raise_for_status()
