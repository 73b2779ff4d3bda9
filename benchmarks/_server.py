"""The mock server in its own process (``python -m streamkit.testing --port 0``), always cleaned up."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY = "streamkit mock server listening on "


def child_env() -> dict[str, str]:
    """The environment of a child process: the repo importable, no proxies for loopback."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PYTHONSTARTUP", None)
    return env


def raise_file_limit(wanted: int) -> None:
    """Allow ``wanted`` open files here and in children (one socket per concurrent stream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Terminate a child we started, then kill it if it does not exit within 5 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere): was the server the bottleneck?"""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextlib.contextmanager
def mock_server(timeout: float = 30.0) -> Iterator[str]:
    """Start the mock server on loopback; yield its base URL; terminate it on exit (also Ctrl-C)."""
    with mock_server_process(timeout) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def mock_server_process(timeout: float = 30.0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The mock server as ``mock_server``, also yielding its process (to read its CPU time)."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in the finally below)
    process = subprocess.Popen(
        [sys.executable, "-m", "streamkit.testing", "--host", "127.0.0.1", "--port", "0", "--text-length", "100"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    try:
        assert process.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or not line[0].startswith(READY):
            log.seek(0)
            raise RuntimeError(f"the mock server did not start: {(line or [''])[0]!r} {log.read()[-2000:]}")
        yield line[0][len(READY) :].strip(), process
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the mock server died (exit {process.returncode}): {log.read()[-2000:]}")
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()
        log.close()
