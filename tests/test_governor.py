"""The rate governor: its policy on an injected clock, and every client admitted by it over real sockets."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import sys
import threading
import time
from typing import Any

import anyio
import pytest
from conftest import client_for, in_thread, sync_client_for

import streamkit
from streamkit import Governor, GovernorSnapshot, GovernorTimeoutError
from streamkit._governor import (
    BATCHES_LANE,
    COUNT_TOKENS_LANE,
    ENDPOINT_LANES,
    Admission,
    GovernorPolicy,
    Outcome,
    Settings,
    Verdict,
    lane_outcome,
)
from streamkit._ratelimits import RateLimits
from streamkit.testing import Fault, Limits, MockServer, RateLimiter, RedisServer, Reply

MODEL = "claude-mock-1"
USER = [{"role": "user", "content": "Hello"}]


def policy(**settings: Any) -> GovernorPolicy:
    """A burst of 10, paced at 2 a second to begin with, doubling every 20 s, recovering 0.5 a second, 1 s ahead."""
    base = {"initial_window": 10, "ramp_doubling": 20.0, "recovery": 0.5, "horizon": 1.0}
    return GovernorPolicy(Settings(**{**base, **settings}))


def admit(
    p: GovernorPolicy, now: float, output: float = 100, *, retry: bool = False, max_wait: float = 60.0
) -> Admission:
    return p.admit("m", 10, output, now, retry=retry, max_wait=max_wait)


def headers(**values: int) -> RateLimits:
    """``output_tokens_limit=6000`` -> the ``anthropic-ratelimit-output-tokens-limit: 6000`` header, parsed."""
    return RateLimits.from_headers(
        {
            f"anthropic-ratelimit-{name.rpartition('_')[0].replace('_', '-')}-{name.rpartition('_')[2]}": str(value)
            for name, value in values.items()
        }
    )


# -- the policy, sans-I/O -----------------------------------------------------------------


def test_a_burst_of_the_initial_window_goes_at_once_then_requests_are_paced() -> None:
    p = policy()  # 10 at once, then 2 a second
    assert [admit(p, 0.0).wait for _ in range(10)] == [0.0] * 10
    assert admit(p, 0.0) == Admission(Verdict.ADMITTED, 0.5, "11")
    assert admit(p, 0.0) == Admission(Verdict.ADMITTED, 1.0, "12")  # within the horizon: scheduled
    assert admit(p, 0.0) == Admission(Verdict.LATER, 1.5)  # past it: nothing taken, ask again
    grown = 2.0 * 2 ** (0.5 / 20)  # held back for 0.5 s: slow start
    assert admit(p, 0.5) == Admission(Verdict.ADMITTED, pytest.approx(2 / grown), "13")
    assert (p.lanes["m"].in_flight, p.lanes["m"].rate) == (13, pytest.approx(grown))


def test_slow_start_grows_the_rate_only_while_the_pacer_holds_requests_back() -> None:
    p = policy()
    for _ in range(12):
        admit(p, 0.0)
    admit(p, 0.5)
    assert p.lanes["m"].rate == pytest.approx(2.0 * 2 ** (0.5 / 20))
    idle = policy()
    admit(idle, 0.0)
    admit(idle, 5.0)  # the pacer held nothing back
    assert idle.lanes["m"].rate == 2.0
    bound = policy(output_tokens_per_minute=600)
    admit(bound, 0.0, 600)
    assert admit(bound, 1.0, 600) == Admission(Verdict.LATER, 59.0)  # the output limit holds it back, not the pacer
    assert bound.lanes["m"].rate == 2.0


def test_a_529_cuts_the_rate_once_per_round_then_it_recovers_additively() -> None:
    p = policy()
    leases = [admit(p, 0.0).lease for _ in range(12)]
    assert p.settle("m", leases[0], Outcome("overloaded"), 1.0) is True
    lane = p.lanes["m"]
    assert (lane.rate, lane.ssthresh, lane.last_529, lane.last_cut) == (1.0, 1.0, 1.0, 1.0)
    p.settle("m", leases[1], Outcome("overloaded"), 1.1)  # sent before the cut: the same round
    assert lane.rate == 1.0
    lane.pace, lane.t = 1.0, 1.2
    late = admit(p, 1.2).lease
    p.settle("m", late, Outcome("overloaded"), 1.3)  # sent after it: a new round
    assert (lane.rate, lane.ssthresh) == (0.5, 0.5)
    lane.pace, lane.t = 0.0, 3.3
    assert admit(p, 3.3) == Admission(Verdict.ADMITTED, pytest.approx(1 / 1.5), "14")
    assert lane.rate == pytest.approx(0.5 + 0.5 * 2.0)  # held back 2 s since the cut: 0.5 a second per second


def test_the_rate_never_falls_below_min_rate_nor_passes_the_requests_limit() -> None:
    p = policy(min_rate=0.4, requests_per_minute=120)
    lane = p.lane("m")
    for now in range(1, 6):
        p.settle("m", None, Outcome("overloaded"), float(now))
    assert lane.rate == 0.4
    lane.rate, lane.ssthresh, lane.pace, lane.t = 1.99, 0.0, 0.0, 10.0
    admit(p, 10.0)
    assert lane.rate == 2.0  # 120 a minute


def test_a_429_blocks_the_lane_until_its_retry_after() -> None:
    p = policy()
    lease = admit(p, 10.0).lease
    p.settle("m", lease, Outcome("rate_limited", retry_after=2.5), 10.0)
    assert admit(p, 10.0) == Admission(Verdict.LATER, 2.5)
    assert admit(p, 11.75) == Admission(Verdict.ADMITTED, 0.75, "2")
    assert p.lanes["m"].last_429 == 10.0
    p.settle("m", None, Outcome("rate_limited"), 20.0)  # no retry-after: a second
    assert p.lanes["m"].blocked == 21.0


def test_a_429s_retry_after_blocks_the_lane_at_most_a_minute_and_a_non_finite_one_is_ignored() -> None:
    p = policy()
    p.settle("m", admit(p, 10.0).lease, Outcome("rate_limited", retry_after=1e9), 10.0)
    assert p.lanes["m"].blocked == 70.0  # RetryPolicy's cap: a server cannot stop the lane for 30 years
    assert admit(p, 10.0) == Admission(Verdict.LATER, 60.0)
    for hostile in (math.inf, math.nan):
        q = policy()
        q.settle("m", admit(q, 10.0).lease, Outcome("rate_limited", retry_after=hostile), 10.0)
        assert q.lanes["m"].blocked == 11.0  # as with no retry-after


def test_limits_are_learned_from_the_headers_and_output_is_reserved_then_settled() -> None:
    p = policy()
    first = admit(p, 0.0, 1000).lease
    p.settle("m", first, Outcome("ok", limits=headers(output_tokens_limit=6000, output_tokens_remaining=1000)), 0.0)
    lane = p.lanes["m"]
    assert (lane.lim["out"], lane.lvl["out"]) == (6000.0, 1000.0)
    second = admit(p, 0.0, 1000)
    assert second == Admission(Verdict.ADMITTED, 0.0, "2")
    assert admit(p, 0.0, 1000) == Admission(Verdict.LATER, 10.0)  # 100 tokens a second
    p.settle("m", second.lease, Outcome("ok", input_tokens=3, output_tokens=200), 0.0)
    assert lane.lvl["out"] == 800.0
    assert admit(p, 0.0, 1000) == Admission(Verdict.LATER, 2.0)
    assert admit(p, 1.5, 1000) == Admission(Verdict.ADMITTED, 0.5, "3")


def test_a_bucket_never_rises_above_the_remaining_the_headers_report_aged_by_the_refill() -> None:
    p = policy(output_tokens_per_minute=6000)
    lease = admit(p, 0.0, 100).lease
    reported = headers(output_tokens_remaining=0)
    p.settle("m", lease, Outcome("ok", output_tokens=100, limits=reported, header_age=3.0), 0.0)
    assert p.lanes["m"].lvl["out"] == 300.0


def test_a_request_that_would_wait_past_the_callers_limit_takes_nothing() -> None:
    p = policy(output_tokens_per_minute=600)
    admit(p, 0.0, 600)
    assert admit(p, 0.0, 600, max_wait=5.0) == Admission(Verdict.TOO_LONG, 60.0)
    assert (p.lanes["m"].lvl["out"], p.lanes["m"].in_flight, p.lanes["m"].admitted) == (0.0, 1, 1)


def test_failures_before_the_stream_give_back_everything_a_cancel_keeps_its_reservation() -> None:
    p = policy(output_tokens_per_minute=6000, input_tokens_per_minute=6000)
    lane = p.lane("m")
    p.settle("m", admit(p, 0.0, 1000).lease, Outcome("overloaded"), 0.0)
    assert (lane.lvl["in"], lane.lvl["out"]) == (6000.0, 6000.0)
    p.settle("m", admit(p, 0.0, 1000).lease, Outcome("cancelled"), 0.0)
    assert (lane.lvl["in"], lane.lvl["out"]) == (5990.0, 5000.0)
    p.settle("m", admit(p, 0.0, 1000).lease, Outcome("cancelled", input_tokens=4, output_tokens=30), 0.0)
    assert (lane.lvl["in"], lane.lvl["out"]) == (5986.0, 4970.0)


def test_a_lease_never_settled_expires_and_gives_its_reservation_back() -> None:
    p = policy(output_tokens_per_minute=6000, lease_seconds=5.0)
    admit(p, 0.0, 1000)
    assert p.snapshot_fields("m", 4.0)["in_flight"] == 1
    assert p.snapshot_fields("m", 4.0)["output_tokens_remaining"] == 5400.0
    assert p.snapshot_fields("m", 5.0)["in_flight"] == 0
    assert p.snapshot_fields("m", 5.0)["output_tokens_remaining"] == 6000.0
    assert p.settle("m", "1", Outcome("ok", output_tokens=10), 6.0) is True  # late: its usage is charged
    assert p.lanes["m"].lvl["out"] == 5990.0


def test_expiring_leases_costs_their_number_not_every_lease_held() -> None:
    """10,000 streams in flight: each admission and settlement looks only at the leases due, in expiry order."""
    p = policy(initial_window=1 << 20, ramp_seconds=1e-6, output_tokens_per_minute=10**9, lease_seconds=100.0)
    for second in range(10_000):
        assert admit(p, second / 1000, 1).verdict is Verdict.ADMITTED
    for lease in range(1, 10_000, 2):  # every other one settled
        assert p.settle("m", str(lease), Outcome("ok", output_tokens=1), 10.0) is True
    assert p.snapshot_fields("m", 10.0)["in_flight"] == 5_000
    assert len(p._expiry["m"]) == 10_000  # settled entries wait in the heap until due (or a compaction)
    assert p.snapshot_fields("m", 105.0)["in_flight"] == 2_500  # the unsettled ones admitted after 5 s
    assert p.snapshot_fields("m", 110.0)["in_flight"] == 0
    assert p._expiry["m"] == [] and p.leases == {}
    for _ in range(100):  # settled at once: the heap is compacted, never longer than twice those held plus 64
        lease = admit(p, 200.0, 1).lease
        p.settle("m", lease, Outcome("ok", output_tokens=1), 200.0)
    assert len(p._expiry["m"]) <= 64


def test_the_retry_budget_allows_a_fraction_of_the_requests_as_retries_of_429_and_529() -> None:
    p = policy(retry_burst=2.0)
    asked = [p.settle("m", None, Outcome("overloaded", retry=True), 0.0) for _ in range(3)]
    assert asked == [True, True, False]
    assert p.settle("m", None, Outcome("failed", retry=True), 0.0) is True  # not an overload: not budgeted
    assert p.lanes["m"].refused == 1
    for _ in range(10):
        admit(p, 0.0, retry=False)  # each first attempt deposits 0.1
    admit(p, 0.0, retry=True)  # a retry deposits nothing
    assert p.lanes["m"].budget == pytest.approx(1.0)
    assert p.snapshot_fields("m", 5.0)["retry_budget"] == pytest.approx(1.5)  # and every second 0.1
    assert p.settle("m", None, Outcome("rate_limited", retry=True), 5.0) is True


def test_after_idle_the_rate_starts_over() -> None:
    p = policy(idle_after=30.0)
    lane = p.lane("m")
    lane.rate, lane.ssthresh = 7.0, 3.0
    p.settle("m", admit(p, 0.0).lease, Outcome("ok"), 1.0)
    admit(p, 20.0)
    assert lane.rate == 7.0  # one in flight: not idle
    p.settle("m", "2", Outcome("ok"), 20.0)
    admit(p, 51.0)
    assert (lane.rate, lane.ssthresh) == (2.0, math.inf)


def test_lanes_are_per_model() -> None:
    p = policy()
    for _ in range(10):
        p.admit("a", 1, 1, 0.0, retry=False, max_wait=60)
    assert p.admit("a", 1, 1, 0.0, retry=False, max_wait=60).wait == 0.5
    assert p.admit("b", 1, 1, 0.0, retry=False, max_wait=60).wait == 0.0


@pytest.mark.anyio
async def test_a_failed_attempts_settlement_finishes_under_a_cancel() -> None:
    from streamkit._governed import Gate
    from streamkit._retry import RetryPolicy

    governor = Governor()

    async def send() -> None:
        scope.cancel()  # cancelled once admitted: the failure is settled under the cancel
        raise streamkit.OverloadedStatusError("overloaded", status_code=529)

    gate = Gate(governor, MODEL, 100)
    with anyio.CancelScope() as scope:
        with pytest.raises(streamkit.OverloadedStatusError):
            await gate.run(send, RetryPolicy(max_retries=0), 0, [])
    snapshot = governor.snapshot(MODEL)
    assert (snapshot.admitted, snapshot.in_flight, snapshot.rate) == (1, 0, 0.5)  # settled: the 529 cut the rate


@pytest.mark.anyio
async def test_a_cancel_while_scheduled_at_the_head_gives_the_lease_back_and_passes_the_turn() -> None:
    governor = Governor(initial_window=1, ramp_seconds=0.9)  # one at once, then one every 0.9 s: within the horizon
    first, held = await governor.admit(MODEL, 10, 100, retry=False)
    assert (first, held) == ("1", 0.0)
    admitted: list[str] = []

    async def take(scope: anyio.CancelScope) -> None:
        with scope:
            admitted.append((await governor.admit(MODEL, 10, 100, retry=False))[0])

    scheduled, behind = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(take, scheduled)
        await anyio.wait_all_tasks_blocked()  # admitted, sleeping until its send time at the head
        group.start_soon(take, behind)
        await anyio.wait_all_tasks_blocked()  # in line behind it
        assert (governor.snapshot(MODEL).in_flight, governor.snapshot(MODEL).queued) == (2, 2)
        scheduled.cancel()
        await anyio.wait_all_tasks_blocked()  # its lease given back, the next one admitted in its turn
        assert (governor.snapshot(MODEL).in_flight, governor.snapshot(MODEL).queued) == (2, 1)
        behind.cancel()
    assert admitted == []
    assert (governor.snapshot(MODEL).in_flight, governor.snapshot(MODEL).queued) == (1, 0)
    assert await governor.settle(MODEL, first, Outcome("ok", output_tokens=1)) is True
    assert (governor.snapshot(MODEL).admitted, governor.snapshot(MODEL).in_flight) == (3, 0)


# -- endpoint lanes and the settings ---------------------------------------------------------


def test_an_endpoints_lane_counts_requests_only_and_is_not_under_the_models_explicit_limits() -> None:
    p = GovernorPolicy(Settings(requests_per_minute=1, output_tokens_per_minute=60))
    assert p.admit(MODEL, 10, 60, 0.0, retry=False, max_wait=600) == Admission(Verdict.ADMITTED, 0.0, "1")
    assert p.admit(MODEL, 10, 60, 0.0, retry=False, max_wait=600) == Admission(Verdict.LATER, 60.0)
    admitted = [p.admit(lane, 0, 0, 0.0, retry=False, max_wait=600) for lane in sorted(ENDPOINT_LANES)]
    assert admitted == [Admission(Verdict.ADMITTED, 0.0, str(n)) for n in (2, 3, 4)]
    fields = p.snapshot_fields(BATCHES_LANE, 0.0)
    assert (fields["requests_per_minute"], fields["output_tokens_per_minute"], fields["in_flight"]) == (None, None, 1)


def test_what_an_endpoints_answer_teaches_is_its_requests_limit_only() -> None:
    outcome = Outcome(
        "ok",
        input_tokens=5,
        output_tokens=7,
        limits=headers(requests_limit=50, requests_remaining=49, output_tokens_limit=8000, output_tokens_remaining=10),
    )
    assert lane_outcome(MODEL, outcome) is outcome
    assert lane_outcome(COUNT_TOKENS_LANE, outcome) == Outcome(
        "ok", limits=RateLimits(requests=outcome.limits.requests)
    )  # type: ignore[union-attr]
    governor = Governor()
    lease, held = governor.admit_sync(COUNT_TOKENS_LANE, 0, 0, retry=False)
    assert (lease, held) == ("1", 0.0)
    assert governor.settle_sync(COUNT_TOKENS_LANE, lease, outcome) is True
    counting = governor.snapshot(endpoint="count_tokens")
    assert (counting.requests_per_minute, counting.output_tokens_per_minute, counting.in_flight) == (50.0, None, 0)
    assert 49.0 <= counting.requests_remaining < 49.5  # 49 as answered, plus what refilled since


def test_a_script_polling_a_batch_every_few_seconds_is_admitted_at_once() -> None:
    p = GovernorPolicy(Settings())  # the defaults
    answered = Outcome("ok", limits=headers(requests_limit=50, requests_remaining=49))
    for n in range(100):
        admission = p.admit(BATCHES_LANE, 0, 0, 2.0 * n, retry=False, max_wait=300.0)
        assert admission == Admission(Verdict.ADMITTED, 0.0, str(n + 1))
        assert p.settle(BATCHES_LANE, admission.lease, answered, 2.0 * n + 0.1) is True
    assert p.snapshot_fields(BATCHES_LANE, 200.0)["requests_per_minute"] == 50.0


def test_a_429_in_one_lane_leaves_the_others_alone() -> None:
    governor = Governor()
    lease, _ = governor.admit_sync(COUNT_TOKENS_LANE, 0, 0, retry=False)
    assert governor.settle_sync(COUNT_TOKENS_LANE, lease, Outcome("rate_limited", retry_after=30.0)) is True
    counting, model = governor.snapshot(endpoint="count_tokens"), governor.snapshot(MODEL)
    assert (counting.rate, counting.seconds_since_429 is not None) == (0.5, True)
    assert 29.9 < counting.blocked_for <= 30.0
    assert (model.rate, model.blocked_for, model.seconds_since_429) == (1.0, 0.0, None)
    assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("2", 0.0)


def test_the_governors_defaults_are_the_settings_own() -> None:
    parameters = inspect.signature(Governor).parameters
    assert {field.name: parameters[field.name].default for field in dataclasses.fields(Settings)} == {
        field.name: field.default for field in dataclasses.fields(Settings)
    }
    assert Governor().settings == Settings()


def test_settings_check_their_values_whoever_makes_them() -> None:
    for made, message in (
        (lambda: Settings(initial_window=0), "Governor: initial_window must be at least 1, got 0"),
        (lambda: Settings(ramp_seconds=0.0), "Governor: ramp_seconds must be positive and finite, got 0.0"),
        (lambda: Governor(horizon=-1.0), "Governor: horizon must be finite and not negative, got -1.0"),
        (
            lambda: Governor(pool_timeout=-1.0),
            "Governor: pool_timeout must be a number of seconds >= 0 or inf, got -1.0",
        ),
    ):
        with pytest.raises(streamkit.StreamkitError) as caught:
            made()
        assert str(caught.value) == message


_RULES = {
    "initial_window": "must be at least 1",
    "backoff": "must be between 0 and 1",
    **dict.fromkeys(
        (
            "requests_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "ramp_seconds",
            "ramp_doubling",
            "min_rate",
            "lease_seconds",
            "redis_timeout",
            "redis_retry",
        ),
        "must be positive and finite",
    ),
    **dict.fromkeys(
        ("recovery", "idle_after", "horizon", "retry_ratio", "retry_burst"), "must be finite and not negative"
    ),
    "pool_timeout": "must be a number of seconds >= 0 or inf",
}


def test_every_numeric_setting_has_a_rule() -> None:
    numeric = {
        name
        for name, parameter in inspect.signature(Governor).parameters.items()
        if parameter.annotation in ("float", "int", "float | None")
    }
    assert numeric == set(_RULES)


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
@pytest.mark.parametrize("name", sorted(_RULES))
def test_nan_inf_and_negative_settings_are_refused(name: str, value: float) -> None:
    if name == "pool_timeout" and value == math.inf:
        assert Governor(pool_timeout=math.inf).pool_timeout == math.inf  # wait for as long as it takes
        return
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(**{name: value})
    assert str(caught.value) == f"Governor: {name} {_RULES[name]}, got {value}"


def test_an_infinite_pool_timeout_waits_its_turn_in_the_sync_shell() -> None:
    governor = Governor(pool_timeout=math.inf)
    ahead, _ = governor._join(MODEL, lambda: None)  # someone at the head of the line
    admitted: list[tuple[str, float]] = []
    waiter = threading.Thread(target=lambda: admitted.append(governor.admit_sync(MODEL, 10, 100, retry=False)))
    waiter.start()
    while len(governor._lines[MODEL]) < 2:  # until it has joined the line behind
        time.sleep(0.001)
    governor._leave(ahead)
    waiter.join(5.0)
    assert [lease for lease, _ in admitted] == ["1"]
    assert admitted[0][1] > 0.0  # it was held


@pytest.mark.anyio
async def test_an_infinite_pool_timeout_waits_its_turn_in_the_async_shell() -> None:
    governor = Governor(pool_timeout=math.inf)
    ahead, _ = governor._join(MODEL, lambda: None)
    admitted: list[tuple[str, float]] = []

    async def wait_turn() -> None:
        admitted.append(await governor.admit(MODEL, 10, 100, retry=False))

    async with anyio.create_task_group() as group:
        group.start_soon(wait_turn)
        await anyio.wait_all_tasks_blocked()
        assert len(governor._lines[MODEL]) == 2
        governor._leave(ahead)
    assert [lease for lease, _ in admitted] == ["1"]
    assert admitted[0][1] > 0.0


def test_an_endpoints_lane_in_redis_is_not_under_the_models_explicit_limits(redis_server: RedisServer) -> None:
    pytest.importorskip("redis")
    governor = Governor(redis_url=redis_server.url, key="org", requests_per_minute=1, pool_timeout=1.0)
    first = time.monotonic()
    assert governor.admit_sync(MODEL, 10, 100, retry=False) == ("r:1", 0.0)
    with pytest.raises(GovernorTimeoutError) as caught:
        governor.admit_sync(MODEL, 10, 100, retry=False)
    apart = time.monotonic() - first  # at most this long between the two admissions
    assert 60.0 - apart - 0.05 <= caught.value.wait <= 60.0  # one a minute, less the refill since the first
    assert [governor.admit_sync(BATCHES_LANE, 0, 0, retry=False) for _ in range(3)] == [
        ("r:1", 0.0),
        ("r:2", 0.0),
        ("r:3", 0.0),
    ]
    assert governor.settle_sync(
        BATCHES_LANE, "r:1", Outcome("ok", output_tokens=5, limits=headers(requests_limit=50, requests_remaining=40))
    )
    batches = governor.snapshot(endpoint="batches")
    assert (batches.backend, batches.requests_per_minute, batches.output_tokens_per_minute) == ("redis", 50.0, None)
    assert (batches.in_flight, batches.admitted) == (2, 3)


# -- options --------------------------------------------------------------------------------


def test_governor_options_are_checked() -> None:
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(backoff=1.5)
    assert str(caught.value) == "Governor: backoff must be between 0 and 1, got 1.5"
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(output_tokens_per_minute=0)
    assert str(caught.value) == "Governor: output_tokens_per_minute must be positive and finite, got 0"
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(lease_seconds=math.inf)
    assert str(caught.value) == "Governor: lease_seconds must be positive and finite, got inf"
    with pytest.raises(streamkit.StreamkitError) as caught:
        streamkit.AsyncClient(api_key="k", governor="yes")  # type: ignore[arg-type]
    assert str(caught.value) == "governor= takes True, False or a streamkit.Governor, not 'yes'"


def test_a_redis_governor_without_the_redis_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(streamkit.StreamkitError) as caught:
        Governor(redis_url="redis://127.0.0.1:1/0")
    assert str(caught.value) == "Governor(redis_url=...) needs the redis package: pip install 'streamkit[redis]'"


def test_every_client_has_its_own_governor_by_default_and_can_share_or_drop_one() -> None:
    first, second = streamkit.AsyncClient(api_key="k"), streamkit.Client(api_key="k")
    assert isinstance(first.governor, Governor) and isinstance(second.governor, Governor)
    assert first.governor is not second.governor
    assert first.with_options(max_retries=5).governor is first.governor
    assert first.with_options(governor=False).governor is None
    shared = Governor()
    assert streamkit.AsyncClient(api_key="k", governor=shared).governor is shared
    assert streamkit.Client(api_key="k", governor=False).governor is None
    snapshot = shared.snapshot()
    assert snapshot == GovernorSnapshot(
        model=None,
        backend="memory",
        redis_connected=None,
        requests_per_minute=None,
        input_tokens_per_minute=None,
        output_tokens_per_minute=None,
        requests_remaining=None,
        input_tokens_remaining=None,
        output_tokens_remaining=None,
        rate=1.0,
        in_flight=0,
        queued=0,
        retry_budget=10.0,
        retries_refused=0,
        seconds_since_429=None,
        seconds_since_529=None,
        blocked_for=0.0,
        admitted=0,
        waited=0.0,
    )


# -- over real sockets --------------------------------------------------------------------


@pytest.mark.anyio
async def test_light_traffic_is_never_delayed() -> None:
    async with MockServer(default=Reply.text("Hi")) as server:
        async with client_for(server, governor=True) as client:
            texts: list[str] = []

            async def one() -> None:
                async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                    texts.append(await stream.get_final_text())
                    assert stream.retries == []

            async with anyio.create_task_group() as group:
                for _ in range(5):  # the starting burst
                    group.start_soon(one)
            assert texts == ["Hi"] * 5
            assert client.governor is not None
            snapshot = client.governor.snapshot()
            assert (snapshot.model, snapshot.admitted, snapshot.in_flight, snapshot.waited) == (MODEL, 5, 0, 0.0)
            assert (snapshot.queued, snapshot.rate) == (0, 1.0)


@pytest.mark.anyio
async def test_a_server_that_reports_no_limits_is_not_paced_after_its_first_answer() -> None:
    async with MockServer(default=Reply.text("Hi")) as server:
        async with client_for(server, governor=True) as client:
            for _ in range(20):
                await client.messages.create(model=MODEL, max_tokens=9, messages=USER)
            assert client.governor is not None
            snapshot = client.governor.snapshot()
    assert (snapshot.admitted, snapshot.waited, snapshot.rate) == (20, 0.0, 1.0)


@pytest.mark.anyio
async def test_limits_are_learned_from_the_mock_limits_headers_and_usage_is_settled() -> None:
    limits = RateLimiter(Limits(requests_per_minute=600, output_tokens_per_minute=40_000))
    async with MockServer(Reply.text("Hello there", output_tokens=7), limits=limits) as server:
        async with client_for(server, governor=True) as client:
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
                assert await stream.get_final_text() == "Hello there"
            assert client.governor is not None
            snapshot = client.governor.snapshot()
    assert (snapshot.requests_per_minute, snapshot.output_tokens_per_minute) == (600.0, 40_000.0)
    assert snapshot.input_tokens_per_minute is None
    # The 200 said 39,900 output tokens remained (its max_tokens reserved): the limit was not known when it
    # was admitted, so nothing reserved comes back; the 7 it used are charged, and 667 a second refill.
    assert snapshot.output_tokens_remaining == pytest.approx(39_893, abs=25)
    assert snapshot.in_flight == 0


@pytest.mark.anyio
async def test_create_is_admitted_and_settled_with_its_usage() -> None:
    governor = Governor(output_tokens_per_minute=60)  # one token a second: the refill is negligible
    async with MockServer(Reply.text("Hi", output_tokens=7)) as server:
        async with client_for(server, governor=governor) as client:
            message = await client.messages.create(model=MODEL, max_tokens=60, messages=USER)
    assert message.text == "Hi"
    snapshot = governor.snapshot()
    assert (snapshot.admitted, snapshot.in_flight) == (1, 0)
    assert snapshot.output_tokens_remaining == pytest.approx(53, abs=0.5)


@pytest.mark.anyio
async def test_requests_past_the_starting_burst_are_paced_in_the_order_they_came() -> None:
    governor = Governor(initial_window=1, ramp_seconds=0.1)  # one at once, then 10 a second
    limits = RateLimiter(Limits(requests_per_minute=60_000))  # a server that reports limits: paced
    async with MockServer(default=Reply.text("Hi"), limits=limits) as server:
        async with client_for(server, governor=governor) as client:

            async def one(n: int) -> None:
                messages = [{"role": "user", "content": f"request {n}"}]
                async with client.messages.stream(model=MODEL, max_tokens=9, messages=messages) as stream:
                    await stream.get_final_text()

            started = time.monotonic()
            async with anyio.create_task_group() as group:
                for n in range(4):
                    group.start_soon(one, n)
                    # Admitted (scheduled) before the next one starts: no event tells, so poll.
                    while governor.snapshot().admitted < n + 1:  # noqa: ASYNC110
                        await anyio.sleep(0.001)
            elapsed = time.monotonic() - started
    order = [request.json["messages"][0]["content"] for request in server.requests]
    assert order == ["request 0", "request 1", "request 2", "request 3"]
    assert 0.3 <= elapsed < 2.0
    assert 0.0 < governor.snapshot().waited < 1.5  # held until their turns (less the time it took to start them)


@pytest.mark.anyio
async def test_a_request_the_limits_would_hold_past_its_pool_timeout_is_refused_at_once() -> None:
    governor = Governor(output_tokens_per_minute=600, pool_timeout=1.0)
    async with MockServer(default=Reply.text("Hi", output_tokens=600)) as server:
        async with client_for(server, governor=governor) as client:
            first = time.monotonic()
            await client.messages.create(model=MODEL, max_tokens=600, messages=USER)
            started = time.monotonic()
            with pytest.raises(GovernorTimeoutError) as caught:
                async with client.messages.stream(model=MODEL, max_tokens=600, messages=USER):
                    pass
            refilled = time.monotonic() - first  # at most this long between the two admissions
            assert time.monotonic() - started < 1.0  # refused at once, not after its pool timeout
    assert re.fullmatch(
        r"the rate governor would hold this request \d\d\.\d s more, past its pool timeout of 1 s "
        r"\(it waited 0\.\d s\): it was not sent",
        str(caught.value),
    )
    # The 600 tokens it reserves, at 10 a second, less the seconds of refill since the first admission.
    assert 60.0 - refilled - 0.05 <= caught.value.wait <= 60.0
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_a_529_cuts_the_rate_and_the_retry_waits_for_the_pacer_in_its_record() -> None:
    # One at once, then two a second: slack for a slow machine's first attempt.
    governor = Governor(initial_window=1, ramp_seconds=0.5)
    async with MockServer(Reply.error(529), Reply.text("Hi")) as server:
        async with client_for(server, governor=governor) as client:
            async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                assert await stream.get_final_text() == "Hi"
    [retry] = stream.retries
    assert isinstance(retry.error, streamkit.OverloadedStatusError)
    assert 0.0 < retry.governor_wait <= 1.0 + 0.05  # the cut: one a second
    snapshot = governor.snapshot()
    assert (snapshot.admitted, snapshot.retries_refused) == (2, 0)
    assert snapshot.rate == pytest.approx(1.0, abs=0.1)  # cut from two a second, barely recovered since
    assert snapshot.seconds_since_529 is not None and snapshot.seconds_since_429 is None


@pytest.mark.anyio
async def test_a_429_is_retried_after_its_retry_after_not_twice_that() -> None:
    governor = Governor()
    async with MockServer(Reply.error(429, headers={"retry-after": "0.3"}), Reply.text("Hi")) as server:
        async with client_for(server, governor=governor) as client:
            started = time.monotonic()
            async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                assert await stream.get_final_text() == "Hi"
            elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.55
    assert [type(retry.error) for retry in stream.retries] == [streamkit.RateLimitStatusError]
    snapshot = governor.snapshot()
    assert snapshot.seconds_since_429 is not None and snapshot.blocked_for == 0.0


NOTE = (
    "streamkit's rate governor did not retry this {}: its retry budget is empty "
    "(retries after 429/529 may add only a fraction of the requests, see Governor(retry_ratio=...))"
)


@pytest.mark.anyio
async def test_with_the_retry_budget_empty_a_529_before_the_stream_is_raised_not_retried() -> None:
    governor = Governor(retry_burst=0)
    async with MockServer(Reply.error(529), Reply.text("never sent")) as server:
        async with client_for(server, governor=governor) as client:
            with pytest.raises(streamkit.OverloadedStatusError) as caught:
                async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER):
                    pass
    assert caught.value.__notes__ == [NOTE.format(529)]
    assert len(server.requests) == 1
    snapshot = governor.snapshot()
    assert (snapshot.retries_refused, snapshot.rate, snapshot.in_flight) == (1, 0.5, 0)


@pytest.mark.anyio
async def test_with_the_retry_budget_empty_an_overloaded_error_event_is_raised_with_the_partial_reply() -> None:
    governor = Governor(retry_burst=0)
    broken = Reply.text("Hello, world", chunk_size=4, fault=Fault("error", after=4))
    async with MockServer(broken, Reply.text("never sent")) as server:
        async with client_for(server, governor=governor) as client:
            with pytest.raises(streamkit.OverloadedStreamError) as caught:
                async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                    await stream.get_final_message()
    assert caught.value.__notes__ == [NOTE.format("overloaded_error")]
    assert caught.value.partial_message is not None
    assert caught.value.partial_message.text == "Hello, w"
    assert len(server.requests) == 1
    assert (governor.snapshot().retries_refused, governor.snapshot().in_flight) == (1, 0)


@pytest.mark.anyio
async def test_an_overloaded_error_event_is_resumed_when_the_budget_allows() -> None:
    governor = Governor()
    broken = Reply.text("Hello, world", chunk_size=4, fault=Fault("error", after=4))
    async with MockServer(broken, Reply.text("Hello, world")) as server:
        async with client_for(server, governor=governor) as client:
            async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                assert await stream.get_final_text() == "Hello, world"
    assert len(stream.resumes) == 1
    snapshot = governor.snapshot()
    assert (snapshot.admitted, snapshot.in_flight, snapshot.retries_refused, snapshot.rate) == (2, 0, 0, 0.5)
    assert snapshot.retry_budget == pytest.approx(9.0, abs=0.05)  # full, less the resume


@pytest.mark.anyio
async def test_one_governor_paces_several_clients() -> None:
    shared = Governor()
    async with MockServer(default=Reply.text("Hi")) as server:
        async with client_for(server, governor=shared) as first, client_for(server, governor=shared) as second:
            for client in (first, second):
                async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                    await stream.get_final_text()
    assert shared.snapshot().admitted == 2


@pytest.mark.anyio
async def test_governor_off_sends_without_admission() -> None:
    async with MockServer(Reply.error(529), Reply.text("Hi")) as server:
        async with client_for(server, governor=False) as client:
            assert client.governor is None
            async with client.messages.stream(model=MODEL, max_tokens=9, messages=USER) as stream:
                assert await stream.get_final_text() == "Hi"
    assert [retry.governor_wait for retry in stream.retries] == [0.0]


@pytest.mark.anyio
async def test_the_sync_client_is_governed_the_same_way() -> None:
    governor = Governor(retry_burst=0, output_tokens_per_minute=60)
    async with MockServer(Reply.text("Hi", output_tokens=7), Reply.error(529), Reply.text("Hi")) as server:

        def consume() -> tuple[str, type[BaseException], list[str]]:
            with sync_client_for(server, governor=governor) as client:
                with client.messages.stream(model=MODEL, max_tokens=20, messages=USER) as stream:
                    text = stream.get_final_text()
                try:
                    client.messages.create(model=MODEL, max_tokens=20, messages=USER)
                except streamkit.OverloadedStatusError as exc:
                    return text, type(exc), exc.__notes__
                raise AssertionError("the 529 was retried")

        assert await in_thread(consume) == ("Hi", streamkit.OverloadedStatusError, [NOTE.format(529)])
    snapshot = governor.snapshot()
    assert (snapshot.admitted, snapshot.in_flight, snapshot.retries_refused, snapshot.rate) == (2, 0, 1, 0.5)
    assert snapshot.output_tokens_remaining == pytest.approx(53, abs=0.5)
