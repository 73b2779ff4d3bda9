"""The rate governor shared through Redis: the same policy as ``_governor``, kept in Redis.

Each model's lane is a hash (the ``Lane`` fields, by name), a sorted set of leases scored by
their expiry and a hash of what each lease reserved.  One Lua script does each step, so an
admission is one atomic round trip and a settlement another (EVALSHA; a server that has not
cached the script, as a restarted one or another cluster node, answers NOSCRIPT, and gets it
once with EVAL, which caches it there); the time is the Redis server's (``TIME``, allowed
before writes because the script's effects are replicated, not the script: the default since
Redis 5, asked for by ``redis.replicate_commands()`` before), so the machines' clocks never
matter; expired leases are pruned, and their reservations given back, inside the scripts.
The script touches only the keys it is passed, which all carry the hash tag
``{key}``: on a Redis Cluster (``cluster=True``, redis-py's ``RedisCluster``) they live in one
slot, so each call goes to the one node that owns it, and redis-py follows MOVED and ASK
redirections while slots migrate.

The client is redis-py's blocking one: its asyncio client does not run on trio, and one
round trip per admission and per settlement, run in a worker thread by the async shell
(``anyio.to_thread``), costs nothing next to a generation and works on every backend.

When Redis does not answer (down, unreachable, failing; on a cluster also the slot's node
down, the cluster down, or none of its nodes reachable), the backend falls back to the
in-process policy with one warning, tries again after ``retry`` seconds (doubling, to 30 s),
and rejoins as soon as Redis answers.  Leases taken in the fallback settle there.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Literal

from ._errors import StreamkitError
from ._governor import (
    DEFAULT_RETRY_AFTER,
    DIMENSIONS,
    NO_LIMITS,
    Admission,
    MemoryBackend,
    Outcome,
    Settings,
    Verdict,
    lane_fields,
    requests_only,
)
from ._retry import MAX_RETRY_AFTER, capped_retry_after

logger = logging.getLogger("streamkit")
MAX_RETRY = 30.0
KEY_TTL = 86_400  # an idle lane's keys go after a day

_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local S, L, I = KEYS[1], KEYS[2], KEYS[3]
local mode = ARGV[1]
local cfg = cjson.decode(ARGV[2])
local dims = {'req', 'in', 'out'}
local st = {}
local raw = redis.call('HGETALL', S)
for i = 1, #raw, 2 do st[raw[i]] = tonumber(raw[i + 1]) end
if st.rate == nil then
  st.rate = cfg.initial_window / cfg.ramp_seconds
  st.pace = cfg.initial_window
  st.budget = cfg.retry_burst
end
local function fmt(x) return string.format('%.17g', x) end
local function limit(d)
  local e = cfg['x_' .. d]
  if e > 0 then return e end
  return st['lim_' .. d]
end
local function refund(d, amount)
  local lim, lvl = limit(d), st['lvl_' .. d]
  if lim and lvl then st['lvl_' .. d] = math.min(lim, lvl + amount) end
end
local function save()
  local flat = {}
  for k, v in pairs(st) do flat[#flat + 1] = k; flat[#flat + 1] = fmt(v) end
  redis.call('HSET', S, unpack(flat))
  redis.call('EXPIRE', S, cfg.ttl)
end
local expired = redis.call('ZRANGEBYSCORE', L, '-inf', now)
for _, id in ipairs(expired) do
  local info = redis.call('HGET', I, id)
  if info then
    local _, rin, rout = string.match(info, '(%S+) (%S+) (%S+)')
    refund('out', tonumber(rout))
    refund('in', tonumber(rin))
    redis.call('HDEL', I, id)
  end
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', L, '-inf', now) end
if st.t then
  local elapsed = math.max(0, now - st.t)
  for _, d in ipairs(dims) do
    local lim, lvl = limit(d), st['lvl_' .. d]
    if lim and lvl then st['lvl_' .. d] = math.min(lim, lvl + lim / 60 * elapsed) end
  end
  st.pace = math.min(cfg.initial_window, st.pace + st.rate * elapsed)
end
st.t = now
if st.budget_t then
  st.budget = math.min(cfg.retry_burst, st.budget + cfg.retry_ratio * math.max(0, now - st.budget_t))
end
st.budget_t = now
local inflight = redis.call('ZCARD', L)

if mode == 'admit' then
  if inflight == 0 and st.last_active and now - st.last_active > cfg.idle_after then
    st.rate = cfg.initial_window / cfg.ramp_seconds
    st.ssthresh = nil  -- save() writes only the fields present: the hash's must go too
    redis.call('HDEL', S, 'ssthresh')
    st.grow_t = now
    st.pace = math.max(st.pace, cfg.initial_window)
  end
  local costs = {req = 1, ['in'] = tonumber(ARGV[3]), out = tonumber(ARGV[4])}
  local wait = math.max(0, (st.blocked or 0) - now)
  for _, d in ipairs(dims) do
    local lim = limit(d)
    if lim then
      if st['lvl_' .. d] == nil then st['lvl_' .. d] = lim end
      costs[d] = math.min(costs[d], lim)
      if st['lvl_' .. d] < costs[d] then wait = math.max(wait, (costs[d] - st['lvl_' .. d]) / (lim / 60)) end
    end
  end
  local paced = st.unlimited ~= 1
  if paced and st.pace < 1 and (1 - st.pace) / st.rate >= wait and st.grow_t then
    local elapsed = math.max(0, now - st.grow_t)
    if st.ssthresh == nil or st.rate < st.ssthresh then st.rate = st.rate * 2 ^ (elapsed / cfg.ramp_doubling)
    else st.rate = st.rate + cfg.recovery * elapsed end
    local lim = limit('req')
    if lim then st.rate = math.min(st.rate, lim / 60) end
  end
  st.grow_t = now
  if paced and st.pace < 1 then wait = math.max(wait, (1 - st.pace) / st.rate) end
  if wait > tonumber(ARGV[6]) then save(); return {'too long', fmt(wait), ''} end
  if wait > cfg.horizon then save(); return {'later', fmt(wait), ''} end
  local taken = {req = 0, ['in'] = 0, out = 0}
  for _, d in ipairs(dims) do
    if limit(d) and st['lvl_' .. d] then
      st['lvl_' .. d] = st['lvl_' .. d] - costs[d]
      taken[d] = costs[d]
    end
  end
  st.pace = st.pace - 1
  st.seq = (st.seq or 0) + 1
  local id = tostring(st.seq)
  redis.call('ZADD', L, now + wait + cfg.lease_seconds, id)
  redis.call('HSET', I, id, fmt(now) .. ' ' .. fmt(taken['in']) .. ' ' .. fmt(taken.out))
  redis.call('EXPIRE', L, cfg.ttl)
  redis.call('EXPIRE', I, cfg.ttl)
  st.admitted = (st.admitted or 0) + 1
  st.last_active = now
  if ARGV[5] == '0' then st.budget = math.min(cfg.retry_burst, st.budget + cfg.retry_ratio) end
  save()
  return {'admitted', fmt(wait), id}
end

if mode == 'settle' then
  local lease, status, allowed = ARGV[3], ARGV[4], 1
  local info = false
  if lease ~= '' then info = redis.call('HGET', I, lease) end
  local admitted_at, rin, rout = nil, 0, 0
  if info then
    local a, i, o = string.match(info, '(%S+) (%S+) (%S+)')
    admitted_at, rin, rout = tonumber(a), tonumber(i), tonumber(o)
    redis.call('HDEL', I, lease)
    redis.call('ZREM', L, lease)
    inflight = inflight - 1
  end
  if status == 'rate_limited' or status == 'overloaded' or ARGV[16] == 'limits' then st.unlimited = 0
  elseif ARGV[16] == 'none' and not (st.lim_req or st.lim_in or st.lim_out) then st.unlimited = 1 end
  local age = tonumber(ARGV[13])
  for n, d in ipairs(dims) do
    local hl, hr = ARGV[5 + 2 * n], ARGV[6 + 2 * n]
    if hl ~= '' and tonumber(hl) > 0 then st['lim_' .. d] = tonumber(hl) end
    local lim = limit(d)
    if lim and hr ~= '' then
      local rem = math.min(lim, tonumber(hr) + lim / 60 * age)
      local lvl = st['lvl_' .. d]
      if lvl == nil then st['lvl_' .. d] = rem else st['lvl_' .. d] = math.min(lvl, rem) end
    end
  end
  for _, part in ipairs({{'in', ARGV[5], rin}, {'out', ARGV[6], rout}}) do
    local charged
    if part[2] == '' then
      if status == 'cancelled' then charged = part[3] else charged = 0 end
    else
      charged = tonumber(part[2])
    end
    refund(part[1], part[3] - charged)
  end
  st.last_active = now
  if status == 'rate_limited' or status == 'overloaded' then
    if status == 'rate_limited' then
      st.last_429 = now
      local ra = tonumber(ARGV[14])
      if ra == nil or ra ~= ra or ra == math.huge then ra = cfg.default_retry_after  -- absent, NaN or inf
      else ra = math.min(math.max(ra, 0), cfg.max_retry_after) end
      st.blocked = math.max(st.blocked or 0, now + ra)
    else
      st.last_529 = now
    end
    if (not info) or st.last_cut == nil or admitted_at >= st.last_cut then
      st.rate = math.max(cfg.min_rate, st.rate * cfg.backoff)
      st.ssthresh = st.rate
      st.last_cut = now
      st.grow_t = now
    end
    if ARGV[15] == '1' then
      if st.budget >= 1 then st.budget = st.budget - 1
      else st.refused = (st.refused or 0) + 1; allowed = 0 end
    end
  end
  save()
  return allowed
end

save()
local out = {fmt(st.rate), tostring(inflight), fmt(st.budget), fmt(math.max(0, (st.blocked or 0) - now)),
  tostring(st.admitted or 0), tostring(st.refused or 0)}
for _, name in ipairs({'last_429', 'last_529'}) do
  if st[name] then out[#out + 1] = fmt(now - st[name]) else out[#out + 1] = '' end
end
for _, d in ipairs(dims) do
  local lim = limit(d)
  if lim then out[#out + 1] = fmt(lim) else out[#out + 1] = '' end
  if lim and st['lvl_' .. d] then out[#out + 1] = fmt(st['lvl_' .. d]) else out[#out + 1] = '' end
end
return out
"""
_SHA = hashlib.sha1(_LUA.encode()).hexdigest()


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _number(value: Any) -> float | None:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return float(text) if text else None


def _check_options(redis: Any, url: str, cluster: bool) -> None:
    """Refuse a URL option redis-py would refuse only at the first connection, with a plain TypeError.

    A connection object is made, not opened: its class checks the options the URL gives it (a
    cluster's own options, such as ``read_from_replicas``, are the cluster client's to take).
    """
    try:
        pool = redis.ConnectionPool.from_url(url)
        options = dict(pool.connection_kwargs)
        if cluster:
            for name in inspect.signature(redis.cluster.RedisCluster.__init__).parameters:
                options.pop(name, None)
        pool.connection_class(**options)
    except (TypeError, ValueError, redis.exceptions.RedisError) as exc:
        raise StreamkitError(f"Governor: a Redis URL option is not one redis-py takes: {url!r} ({exc})") from exc


class RedisBackend:
    """The policy kept in Redis, with an in-process fallback; see the module docstring."""

    name: Literal["memory", "redis"] = "redis"
    blocking = True  # every call is a round trip

    def __init__(
        self,
        settings: Settings,
        url: str,
        key: str,
        fallback: MemoryBackend,
        *,
        timeout: float,
        retry: float,
        cluster: bool = False,
    ) -> None:
        try:
            import redis
            import redis.cluster
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise StreamkitError(
                "Governor(redis_url=...) needs the redis package: pip install 'streamkit[redis]'"
            ) from exc
        if not key or "{" in key or "}" in key:
            raise StreamkitError(f"Governor: key must be a non-empty name without braces, got {key!r}")
        self._errors: tuple[type[Exception], ...] = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,  # not a RedisError: no node reachable, a slot not covered
            OSError,
        )
        try:
            options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise StreamkitError(f"Governor: not a Redis URL: {url!r} ({exc})") from exc
        _check_options(redis, url, cluster)
        self._client: Any = None
        self._connect: Callable[[], Any]
        if cluster:
            if "path" in options or options.get("db", 0) != 0:
                raise StreamkitError(f"Governor: a Redis Cluster URL names a TCP node and database 0, not {url!r}")
            # The client learns the slots from a node as it is made: made on the first call, so a
            # cluster down at start-up is a fallback like any other.  One retry on the refreshed
            # topology absorbs a failover already done; the governor's own backoff does the rest.
            self._connect = partial(
                redis.cluster.RedisCluster.from_url,
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
            )
        else:
            self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._no_script = redis.exceptions.NoScriptError
        self.prefix = f"streamkit:{{{key}}}"
        self._settings = json.dumps(
            {
                **{f"x_{dimension}": settings.explicit(dimension) or 0 for dimension in DIMENSIONS},
                "initial_window": settings.initial_window,
                "ramp_seconds": settings.ramp_seconds,
                "ramp_doubling": settings.ramp_doubling,
                "recovery": settings.recovery,
                "backoff": settings.backoff,
                "min_rate": settings.min_rate,
                "idle_after": settings.idle_after,
                "horizon": settings.horizon,
                "lease_seconds": settings.lease_seconds,
                "retry_ratio": settings.retry_ratio,
                "retry_burst": settings.retry_burst,
                "default_retry_after": DEFAULT_RETRY_AFTER,
                "max_retry_after": MAX_RETRY_AFTER,
                "ttl": max(KEY_TTL, int(settings.lease_seconds) * 2),
            }
        )
        # An endpoint's lane is not under the explicit limits, which are the models'.
        self._endpoint_settings = json.dumps({**json.loads(self._settings), **{f"x_{d}": 0 for d in DIMENSIONS}})
        self.fallback = fallback
        self._retry = retry
        self._backoff = retry
        self._down = False
        self._next_try = 0.0
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return not self._down

    def keys(self, lane: str) -> list[str]:
        """The lane's keys: its state, its leases by expiry, what each lease reserved."""
        base = f"{self.prefix}:{lane}"
        return [base, f"{base}:leases", f"{base}:lease-info"]

    def _run(self, lane: str, *args: str) -> Any:
        """One script call; None when Redis is down (then the fallback answers)."""
        if self._backing_off():
            return None
        keys = self.keys(lane)
        argv = [args[0], self._endpoint_settings if requests_only(lane) else self._settings, *args[1:]]
        try:
            client = self._client_or_connect()
            if client is None:
                return None
            try:
                result = client.evalsha(_SHA, len(keys), *keys, *argv)
            except self._no_script:  # this server has not cached it (restarted, another node): once
                result = client.eval(_LUA, len(keys), *keys, *argv)
        except self._errors as exc:
            self._went_down(exc)
            return None
        with self._lock:
            rejoined, self._down, self._backoff = self._down, False, self._retry
        if rejoined:
            logger.info("streamkit's rate governor: Redis answers again, rejoined the shared governor")
        return result

    def _backing_off(self) -> bool:
        with self._lock:
            return self._down and time.monotonic() < self._next_try

    def _client_or_connect(self) -> Any:
        """The client, made on first use; None: a try that failed while this thread waited for the lock.

        Threads queued behind a connection attempt that fails fall back at once rather than each
        try again, each for up to the timeout.
        """
        with self._connect_lock:
            if self._client is None:
                if self._backing_off():
                    return None
                self._client = self._connect()
            return self._client

    def _went_down(self, exc: Exception) -> None:
        with self._lock:
            first, self._down = not self._down, True
            self._next_try = time.monotonic() + self._backoff
            self._backoff = min(MAX_RETRY, self._backoff * 2)
        if first:
            message = (
                f"streamkit's rate governor cannot reach Redis ({type(exc).__name__}: {exc}): "
                "it paces this process alone until Redis answers again"
            )
            logger.warning(message)
            # Under -W error (or a showwarning hook that fails) the request must still go on with
            # the fallback: the log record above stays.
            with contextlib.suppress(Exception):
                warnings.warn(message, RuntimeWarning, stacklevel=4)

    def admit(self, lane: str, input_tokens: float, output_tokens: float, *, retry: bool, max_wait: float) -> Admission:
        # The script's tonumber may not read "inf" (pool_timeout=inf): a bound no wait reaches.
        result = self._run(
            lane,
            "admit",
            _arg(input_tokens),
            _arg(output_tokens),
            "1" if retry else "0",
            _arg(min(max(0.0, max_wait), 1e18)),
        )
        if result is None:
            admission = self.fallback.admit(lane, input_tokens, output_tokens, retry=retry, max_wait=max_wait)
            return admission if admission.lease is None else replace(admission, lease=f"m:{admission.lease}")
        verdict, wait, lease = (part.decode() if isinstance(part, bytes) else str(part) for part in result)
        return Admission(Verdict(verdict), float(wait), f"r:{lease}" if lease else None)

    def settle(self, lane: str, lease: str | None, outcome: Outcome) -> bool:
        if lease is not None and lease.startswith("m:"):
            return self.fallback.settle(lane, lease[2:], outcome)
        limits = outcome.limits
        headers: list[str] = []
        for reported in (
            (limits.requests, limits.input_tokens, limits.output_tokens) if limits is not None else (None,) * 3
        ):
            headers += [_arg(reported.limit if reported else None), _arg(reported.remaining if reported else None)]
        result = self._run(
            lane,
            "settle",
            lease[2:] if lease is not None else "",
            outcome.status,
            _arg(outcome.input_tokens),
            _arg(outcome.output_tokens),
            *headers,
            _arg(outcome.header_age),
            _arg(capped_retry_after(outcome.retry_after)),  # the script caps it too: it is shared state
            "1" if outcome.retry else "0",
            "" if limits is None else "none" if limits == NO_LIMITS else "limits",
        )
        if result is None:
            return self.fallback.settle(lane, None, outcome)  # its lease in Redis expires there
        return bool(int(result))

    def snapshot_fields(self, lane: str) -> dict[str, object]:
        result = self._run(lane, "snapshot")
        if result is None:
            return self.fallback.snapshot_fields(lane)
        rate, in_flight, budget, blocked, admitted, refused, since_429, since_529, *dims = result
        return lane_fields(
            lane,
            limits={dimension: _number(dims[2 * n]) for n, dimension in enumerate(DIMENSIONS)},
            levels={dimension: _number(dims[2 * n + 1]) for n, dimension in enumerate(DIMENSIONS)},
            rate=float(rate),
            in_flight=int(in_flight),
            budget=float(budget),
            since_429=_number(since_429),
            since_529=_number(since_529),
            blocked_for=float(blocked),
            admitted=int(admitted),
            refused=int(refused),
        )
