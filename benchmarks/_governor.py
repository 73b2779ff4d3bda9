"""``python -m benchmarks governor``: the rate governor against the mock's limits (issue 18).

    python -m benchmarks governor                        # off, local, redis: 2 minutes each
    python -m benchmarks governor --duration 20          # a shorter run
    python -m benchmarks governor --fault kill-worker    # worker 0 SIGKILLed halfway
    python -m benchmarks governor --fault restart-redis  # Redis restarted (empty) halfway
    python -m benchmarks governor --redis-admissions     # admissions per second one Redis serves

One mock server (in this process) limits one model to 600 requests and 40,000 output tokens
a minute, with an acceleration limit and one overload episode (every request a 529 for 15 s).
Worker processes (4, each 50 concurrent streamed generations of ``max_tokens`` tokens, paced
like the real service) run under each mode in turn:

- ``off``: ``governor=False``, the client's retries alone;
- ``local``: ``Governor()`` in each worker, learning the limits from the headers;
- ``redis``: ``Governor(redis_url=..., key=...)`` shared by the workers through a
  ``redis-server`` this scenario starts (``streamkit.testing.RedisServer``).

Reported per mode: goodput (completed output tokens as a share of what the output limit
lets through in the run: the full bucket it starts with plus a minute's worth a minute),
429s and 529s per 100 requests (calls made by the workers), attempts that reached the
server during the overload, the wait until a stream opened (p50/p99: the governor's
queue plus any retries), each worker's share of the output, and for ``redis`` the Redis
round trips per request (top-level commands from INFO commandstats).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

MODES = ("off", "local", "redis")
MODEL = "claude-bench-governor"
KEY = "bench"
STARTUP = 3.0  # seconds the workers get to start before the clock runs
# Commands a governor's script runs inside Redis (TIME, HGETALL...) are counted in commandstats too:
# only these are sent by clients, so only these are round trips.
TOP_LEVEL = ("evalsha", "eval", "script", "ping", "client", "hello")


@dataclass(frozen=True)
class Scenario:
    duration: float = 120.0
    workers: int = 4
    concurrency: int = 50
    max_tokens: int = 200
    tokens_per_second: float = 50.0
    requests_per_minute: int = 600
    output_tokens_per_minute: int = 40_000
    overload_at: float = 0.4  # share of the duration
    overload_for: float = 15.0
    fault: str | None = None  # "kill-worker" or "restart-redis", halfway
    lease_seconds: float | None = None  # the governors' lease (None: the default)

    @property
    def overload(self) -> tuple[float, float]:
        """The episode's start and end, in seconds after the workers' start."""
        start = self.overload_at * self.duration
        return start, start + min(self.overload_for, self.duration / 4)


def limiter(scenario: Scenario, begin: float) -> Any:
    from streamkit.testing import Acceleration, Generation, Limits, Overload, RateLimiter

    start, end = scenario.overload
    waited = begin - time.monotonic()  # the limiter's clock starts now, the workers' at ``begin``
    return RateLimiter(
        Limits(
            requests_per_minute=scenario.requests_per_minute,
            output_tokens_per_minute=scenario.output_tokens_per_minute,
        ),
        acceleration=Acceleration(window=5, trailing=60, factor=2, floor=10),
        overloads=[Overload(start=waited + start, end=waited + end)],
        generation=Generation(tokens_per_second=scenario.tokens_per_second),
    )


# ---- a worker process: ``python -m benchmarks._governor worker CONFIG`` ----


def governor_for(mode: str, redis_url: str | None, lease_seconds: float | None = None) -> Any:
    import streamkit

    if mode == "off":
        return False
    options = {} if lease_seconds is None else {"lease_seconds": lease_seconds}
    if mode == "local":
        return streamkit.Governor(**options)
    return streamkit.Governor(redis_url=redis_url, key=KEY, **options)


async def run_worker(config: dict[str, Any]) -> dict[str, Any]:
    import anyio

    import streamkit

    scenario = Scenario(**config["scenario"])
    begin, index = float(config["begin"]), int(config["index"])
    deadline = begin + scenario.duration
    overload_start, overload_end = scenario.overload
    result: dict[str, Any] = {"index": index, "calls": 0, "completed": 0, "output_tokens": 0, "calls_in_overload": 0}
    waits: list[float] = []
    failures: Counter[str] = Counter()
    client = streamkit.AsyncClient(
        api_key="sk-benchmark",
        base_url=config["base_url"],
        governor=governor_for(config["mode"], config["redis_url"], scenario.lease_seconds),
    )

    async def generate() -> None:
        while (started := time.monotonic()) < deadline:
            result["calls"] += 1
            result["calls_in_overload"] += overload_start <= started - begin < overload_end
            # A body of its own per call, so that the mock tells a call's retries from other calls.
            content = f"Worker {index}, call {result['calls']}: write about rate limits."
            messages = [{"role": "user", "content": content}]
            try:
                async with client.messages.stream(model=MODEL, max_tokens=scenario.max_tokens, messages=messages) as s:
                    waits.append(time.monotonic() - started)
                    message = await s.get_final_message()
            except streamkit.StreamkitError as exc:
                failures[type(exc).__name__] += 1
                continue
            result["completed"] += 1
            result["output_tokens"] += message.usage.output_tokens

    async with client:
        await anyio.sleep(max(0.0, begin - time.monotonic()))
        with anyio.move_on_after(deadline - time.monotonic()):  # what runs at the deadline is not counted
            async with anyio.create_task_group() as group:
                for _ in range(scenario.concurrency):
                    group.start_soon(generate)
    return result | {"waits": waits, "failures": dict(failures)}


# ---- the manager ----


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def round_trips(redis_url: str) -> int:
    import redis

    with redis.Redis.from_url(redis_url) as connection:
        stats = connection.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in TOP_LEVEL)


def reset_redis(redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as connection:
        connection.flushall()
        connection.config_resetstat()


async def run_mode(mode: str, scenario: Scenario, redis_server: Any) -> dict[str, Any]:
    import anyio
    from anyio.abc import Process

    from streamkit.testing import MockServer

    reset_redis(redis_server.url)
    begin = time.monotonic() + STARTUP
    limits = limiter(scenario, begin)
    outputs: dict[int, dict[str, Any]] = {}
    killed: list[int] = []
    leases: dict[str, Any] = {}
    async with MockServer(limits=limits) as server:
        processes: list[Process] = []
        for index in range(scenario.workers):
            config = {
                "scenario": asdict(scenario),
                "begin": begin,
                "index": index,
                "mode": mode,
                "base_url": server.base_url,
                "redis_url": redis_server.url,
            }
            command = [sys.executable, "-m", "benchmarks._governor", "worker", json.dumps(config)]
            processes.append(await anyio.open_process(command, stderr=None))

        async def collect(index: int, process: Process) -> None:
            assert process.stdout is not None
            data = b"".join([chunk async for chunk in process.stdout])
            if await process.wait() == 0:
                outputs[index] = json.loads(data)

        async def fault() -> None:
            await anyio.sleep(begin + scenario.duration / 2 - time.monotonic())
            if scenario.fault == "kill-worker":
                processes[0].send_signal(signal.SIGKILL)
                killed.append(0)
                leases["killed_at_s"] = round(time.monotonic() - begin, 2)
            elif scenario.fault == "restart-redis":
                await anyio.to_thread.run_sync(redis_server.restart)

        async with anyio.create_task_group() as group:
            for index, process in enumerate(processes):
                group.start_soon(collect, index, process)
            if scenario.fault is not None and (scenario.fault == "kill-worker" or mode == "redis"):
                group.start_soon(fault)
            if scenario.fault == "kill-worker" and mode == "redis":
                group.start_soon(watch_leases, scenario, begin, redis_server.url, leases)
    row = summarize(mode, scenario, limits, outputs, killed, round_trips(redis_server.url))
    return row | ({"leases": leases} if leases else {})


async def watch_leases(scenario: Scenario, begin: float, redis_url: str, found: dict[str, Any]) -> None:
    """The shared lane's leases in flight, every half second, until the killed worker's are given back.

    Once the survivors have ended (each settles what it holds), what is still in flight is the
    killed worker's: the watch goes on until that reaches zero, which the lease's expiry bounds.
    """
    import anyio
    import anyio.to_thread

    import streamkit

    options = {} if scenario.lease_seconds is None else {"lease_seconds": scenario.lease_seconds}
    governor = streamkit.Governor(redis_url=redis_url, key=KEY, **options)
    end = begin + scenario.duration
    lease = scenario.lease_seconds if scenario.lease_seconds is not None else governor.settings.lease_seconds
    series: list[tuple[float, int]] = []
    while True:
        await anyio.sleep(0.5)
        snapshot = await anyio.to_thread.run_sync(governor.snapshot, MODEL)
        now = time.monotonic()
        series.append((round(now - begin, 2), snapshot.in_flight))
        killed_at = found.get("killed_at_s")
        if killed_at is None or now < end + 2:
            continue
        found.setdefault("in_flight_after_survivors_ended", snapshot.in_flight)
        if snapshot.in_flight == 0 or now - begin > killed_at + lease + 10 or now > end + 120:
            break
    killed_at = found["killed_at_s"]
    before = [count for at, count in series if killed_at - 5 <= at < killed_at]
    found["in_flight_before_kill"] = max(before, default=None)
    zero = [at for at, count in series if at > scenario.duration + 2 and count == 0]
    found["all_returned_s_after_kill"] = round(zero[0] - killed_at, 1) if zero else None
    found["lease_seconds"] = lease


def summarize(
    mode: str, scenario: Scenario, limits: Any, outputs: dict[int, dict[str, Any]], killed: list[int], trips: int
) -> dict[str, Any]:
    minutes = scenario.duration / 60
    calls = sum(out["calls"] for out in outputs.values()) or 1
    tokens = sum(out["output_tokens"] for out in outputs.values())
    waits = [wait for out in outputs.values() for wait in out["waits"]]
    failures: Counter[str] = Counter()
    for out in outputs.values():
        failures.update(out["failures"])
    counts = limits.counts
    start, end = scenario.overload
    # The most the output limit lets through in the run: the full bucket it starts with, and its refill.
    ceiling = scenario.output_tokens_per_minute * (1 + minutes)
    return {
        "mode": mode,
        "fault": scenario.fault,
        "calls": calls,
        "completed": sum(out["completed"] for out in outputs.values()),
        "goodput_tokens_per_min": round(tokens / minutes),
        "goodput_share": round(tokens / ceiling, 3),
        "goodput_of_limit": round(tokens / minutes / scenario.output_tokens_per_minute, 3),
        "server_output_share": round(limits.output_tokens / ceiling, 3),
        "rate_limited_per_100": round(100 * counts["rate_limited"] / calls, 1),
        "acceleration_limited_per_100": round(100 * counts["acceleration_limited"] / calls, 1),
        "overloaded_per_100": round(100 * counts["overloaded"] / calls, 1),
        "overload_attempts": counts["during_overload"],
        # The calls that sent at least one attempt during the overload, and what their retries added.
        "overload_requests": (requests := counts["overload_requests"]),
        "overload_extra_attempts": round(counts["during_overload"] / requests - 1, 3) if requests else None,
        "overload_calls": sum(out["calls_in_overload"] for out in outputs.values()),
        "overload_attempts_per_s": round(counts["during_overload"] / (end - start), 2),
        "admitted_per_s": round(counts["admitted"] / scenario.duration, 2),
        "wait_p50_s": _round(percentile(waits, 0.5)),
        "wait_p99_s": _round(percentile(waits, 0.99)),
        "worker_shares": {
            index: round(outputs[index]["output_tokens"] / (tokens or 1), 3) for index in sorted(outputs)
        },
        "killed_workers": killed,
        "redis_round_trips_per_request": round(trips / calls, 2) if mode == "redis" else None,
        "failures": dict(failures),
        "server_counts": dict(counts),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


COLUMNS = [
    ("goodput", lambda r: f"{r['goodput_share']:.0%}"),
    ("429/100", lambda r: f"{r['rate_limited_per_100']:.1f}"),
    ("accel/100", lambda r: f"{r['acceleration_limited_per_100']:.1f}"),
    ("529/100", lambda r: f"{r['overloaded_per_100']:.1f}"),
    ("overload attempts/s", lambda r: f"{r['overload_attempts_per_s']:.1f}"),
    (
        "overload attempts (requests)",
        lambda r: f"{r['overload_attempts']} ({r['overload_requests']}, +{r['overload_extra_attempts'] or 0:.0%})",
    ),
    ("admitted/s", lambda r: f"{r['admitted_per_s']:.2f}"),
    ("wait p50", lambda r: f"{r['wait_p50_s']}s"),
    ("wait p99", lambda r: f"{r['wait_p99_s']}s"),
    ("worker shares", lambda r: " ".join(f"{share:.2f}" for share in r["worker_shares"].values())),
    (
        "redis trips/req",
        lambda r: "" if r["redis_round_trips_per_request"] is None else str(r["redis_round_trips_per_request"]),
    ),
    ("failures", lambda r: ",".join(f"{k}={v}" for k, v in r["failures"].items()) or "0"),
]


def table(rows: list[dict[str, Any]]) -> str:
    header = ["mode", *(name for name, _ in COLUMNS)]
    body = [
        [row["mode"] + (f" ({row['fault']})" if row["fault"] else ""), *(cell(row) for _, cell in COLUMNS)]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in [header, *body]
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        import anyio

        print(json.dumps(anyio.run(run_worker, json.loads(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks governor", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--duration", type=float, default=Scenario.duration, help="seconds per mode (default 120)")
    parser.add_argument("--workers", type=int, default=Scenario.workers)
    parser.add_argument("--concurrency", type=int, default=Scenario.concurrency, help="generations per worker")
    parser.add_argument("--modes", default=",".join(MODES), help=f"a subset of {','.join(MODES)}")
    parser.add_argument("--fault", choices=("kill-worker", "restart-redis"), help="one fault halfway through")
    parser.add_argument(
        "--lease-seconds", type=float, help="the governors' lease_seconds (default: the Governor's own)"
    )
    parser.add_argument("--redis-admissions", action="store_true", help="measure one Redis's admissions per second")
    out = Path(__file__).parent / "results" / "governor.json"
    parser.add_argument("--out", type=Path, default=out, help="JSON results (default %(default)s)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown modes {sorted(unknown)}: choose from {','.join(MODES)}")

    import anyio

    from streamkit.testing import RedisServer

    from ._server import prepare_environment

    prepare_environment(4096 + 4 * args.workers * args.concurrency)
    scenario = replace(Scenario(), duration=args.duration, workers=args.workers, concurrency=args.concurrency)
    scenario = replace(scenario, fault=args.fault, lease_seconds=args.lease_seconds)
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"scenario": asdict(scenario), "cpus": os.cpu_count(), "rows": rows}
    with RedisServer() as redis_server:
        if args.redis_admissions:
            from ._governor_redis import admissions_per_second

            report["redis_admissions"] = admissions_per_second(redis_server.url)
            print(json.dumps(report["redis_admissions"]), flush=True)
        for mode in modes:
            rows.append(anyio.run(run_mode, mode, scenario, redis_server))
            print(f"{mode}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
