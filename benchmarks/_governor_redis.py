"""How many admissions one Redis serves: N client processes, each admitting and settling in a loop.

Each client is a ``Governor(redis_url=...)`` with limits (and a start) far above what it reaches, calling
its blocking admit and settle (one script round trip each) back to back for a few seconds,
as a process at the head of the line would.  Reported per N: admissions per second in all,
the script calls per second Redis counted, and the microseconds Redis spent per script call
(INFO commandstats): one Redis core serves at most a million over that many calls a second.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

CLIENTS = (1, 2, 4, 8)
SECONDS = 5.0
LANE = "claude-bench-governor"


def _client(url: str, key: str, seconds: float) -> int:
    import streamkit
    from streamkit._governor import Outcome

    huge = 1e12
    governor = streamkit.Governor(
        redis_url=url,
        key=key,
        requests_per_minute=huge,
        input_tokens_per_minute=huge,
        output_tokens_per_minute=huge,
        initial_window=1 << 30,  # no slow start: the loop measures Redis, not the pacing
    )
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        lease, _ = governor.admit_sync(LANE, 10, 10, retry=False)
        governor.settle_sync(LANE, lease, Outcome("ok", input_tokens=10, output_tokens=10))
        done += 1
    return done


def admissions_per_second(
    url: str, clients: tuple[int, ...] = CLIENTS, seconds: float = SECONDS
) -> list[dict[str, Any]]:
    import redis

    rows = []
    for n in clients:
        with redis.Redis.from_url(url) as connection:
            connection.flushall()
            connection.config_resetstat()
        with ProcessPoolExecutor(n) as pool:
            done = sum(pool.map(_client, [url] * n, [f"throughput{n}"] * n, [seconds] * n))
        with redis.Redis.from_url(url) as connection:
            evalsha = connection.info("commandstats").get("cmdstat_evalsha", {})
        rows.append(
            {
                "clients": n,
                "admissions_per_s": round(done / seconds),
                "evalsha_per_s": round(int(evalsha.get("calls", 0)) / seconds),
                # Redis's own time per script call bounds what one Redis core serves, whatever the clients.
                "redis_usec_per_call": float(evalsha.get("usec_per_call", 0.0)),
            }
        )
    return rows
