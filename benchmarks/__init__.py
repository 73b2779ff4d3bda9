"""streamkit's benchmark suite: ``python -m benchmarks`` (see ``python -m benchmarks --help``).

Every contender consumes the same mock replies from a ``streamkit.testing`` server that
runs in its own process on loopback; each contender runs in its own clean process
(``python -m benchmarks._worker``), which imports, creates its client and consumes one
warm-up stream before the clock starts.  Figures are medians of several runs.

Not part of the installed package: the benchmark extras (``pip install -e ".[bench]"``)
add the official SDK, matplotlib and pyinstrument.
"""
