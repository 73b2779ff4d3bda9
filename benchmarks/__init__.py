"""streamkit's benchmark suite, run by pyperf: ``python -m benchmarks`` (see ``--help`` and README's Benchmarks).

``_content``: what the streams carry (realistic prose and tool JSON, or 4-character ASCII), as SSE transcripts;
``_scenarios``: the replies, what each must produce, the plan and its rounds; ``_worker``: the contenders, the
check of their output, pyperf's time function; ``_report``: rows, ratios, targets, table, chart; ``__main__``:
the CLI and the manager; ``_server``: the mock server's process; ``_accumulator``, ``_profile``.

pyperf does the worker processes, warm-up values, loop calibration (the accumulator's; a stream is one loop
here), statistics and the result file that ``python -m pyperf compare_to`` reads.  It does not interleave:
all the worker processes of one benchmark run before the next one's.  Taking turns still matters here: on a
shared 2-core machine whose speed drifts over tens of seconds, a slow spell would fall on whichever contender
ran during it, and the headline figures are ratios of two contenders (process CPU time is less exposed to
load than wall time, but a busy neighbour still costs it caches and clock speed).  So each contender of a
scenario is one pyperf benchmark per round, of one worker process, the rounds alternating the order, and
the rounds' runs are merged into one benchmark (``Benchmark.add_runs``) for the statistics and the file.
"""
