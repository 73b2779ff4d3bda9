"""``python -m streamkit demo`` against the mock server: the reply survives two faults."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from streamkit.testing import lorem


def test_demo_resumes_twice_and_prints_the_whole_reply() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "streamkit", "demo", "--length", "1200", "--delay", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = re.findall(r"\n\[streamkit\] ([^\n]*)\n", done.stdout)
    assert lines[0].startswith("mock server at http://127.0.0.1:")
    assert lines[1].startswith("resume 1: OverloadedStreamError: Overloaded -> prefill, kept ")
    assert lines[2].startswith("resume 2: ConnectionLostError: ")
    assert re.fullmatch(r"done: stop_reason=end_turn, 1200 characters, \d+ output tokens over 3 request\(s\)", lines[3])
    printed = re.sub(r"\n\[streamkit\] [^\n]*\n", "", done.stdout)
    assert printed == lorem(1200, seed=7)
