"""``mypy --strict`` on code that uses streamkit: a misspelled parameter, option or hook is an error.

The two files under ``tests/typecheck`` are checked, never run (pytest does not collect them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["tests/typecheck/misspelled.py", "tests/typecheck/correct.py"]
M = "tests/typecheck/misspelled.py"


def test_mypy_rejects_each_mistake_and_accepts_correct_code() -> None:
    # One run for both files (the cache in .mypy_cache makes it about a second; cold, about 5).
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--no-color-output", *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert errors == [
        f'{M}:18: error: Unexpected keyword argument "temprature" for "stream" of "Messages"; '
        'did you mean "temperature"?  [call-arg]',
        f'{M}:19: error: Unexpected keyword argument "stop_sequence" for "create" of "Messages"; '
        'did you mean "stop_sequences"?  [call-arg]',
        f'{M}:20: error: Argument "service_tier" to "stream" of "Messages" has incompatible type '
        "\"Literal['fast']\"; expected \"Literal['auto', 'standard_only']\"  [arg-type]",
        f'{M}:21: error: Argument "top_k" to "stream" of "Messages" has incompatible type "float"; '
        'expected "int"  [arg-type]',
        f'{M}:22: error: Argument "on_text" to "stream" of "Messages" has incompatible type '
        '"Callable[[Message], None]"; expected "Callable[[str], object] | None"  [arg-type]',
        f'{M}:23: error: Argument "timeout" to "create" of "Messages" has incompatible type "str"; '
        'expected "float | Timeout | None"  [arg-type]',
        f'{M}:24: error: Unexpected keyword argument "max_retry" for "with_options" of "AsyncClient"; '
        'did you mean "max_retries"?  [call-arg]',
    ]
    assert result.returncode == 1
    assert result.stderr == ""
    # Every line marked "# error" in the file is one of them, and no line of correct.py is.
    marked = [n for n, line in enumerate((ROOT / M).read_text().splitlines(), 1) if line.endswith("# error")]
    assert marked == [18, 19, 20, 21, 22, 23, 24]


def test_mypy_types_the_batch_token_counting_and_files_calls() -> None:
    checked = "tests/typecheck/batches.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--no-color-output", checked],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert errors == [
        f'{checked}:32: error: Missing key "max_tokens" for TypedDict "MessageCreateParams"  [typeddict-item]',
        f'{checked}:33: error: Unexpected keyword argument "temperature" for "count_tokens" of "Messages"  [call-arg]',
        f'{checked}:34: error: Argument "timeout" to "retrieve" of "Batches" has incompatible type "str"; '
        'expected "float | Timeout | None"  [arg-type]',
        f'{checked}:35: error: Argument "poll_interval" to "wait" of "Batches" has incompatible type "str"; '
        'expected "float"  [arg-type]',
    ]
    marked = [n for n, line in enumerate((ROOT / checked).read_text().splitlines(), 1) if line.endswith("# error")]
    assert marked == [32, 33, 34, 35]
