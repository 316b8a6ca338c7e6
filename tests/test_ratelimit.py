"""Token buckets and the pace, driven by a clock the test holds."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.ratelimit import AdaptiveRate, Pacer, TokenBucket


def test_a_full_bucket_admits_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.try_take(0.1)  # one token back after 1/rate seconds


def test_a_sustained_rate_never_exceeds_the_bucket() -> None:
    bucket = TokenBucket(rate=500, burst=25)
    admitted = sum(bucket.try_take(i / 5000) for i in range(5000))  # 1 s of 5,000 requests
    assert admitted <= 500 + 25


def test_a_bad_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)


# -- the pace policy --------------------------------------------------------------------------


def test_a_storm_cuts_once_per_round_of_calls_sent_at_the_new_rate() -> None:
    pace = AdaptiveRate(ceiling=400, recovery=0.1)
    assert pace.throttled(now=1.0, sent=0.95)
    # 429s for calls sent before the cut say nothing about the new rate.
    assert not any(pace.throttled(now=1.0 + i / 100, sent=0.99) for i in range(1, 10))
    assert pace.rate == pytest.approx(200 + 0.09 * 40)  # calm climbs meanwhile
    assert pace.throttled(now=1.2, sent=1.1)  # sent at the new rate: the storm goes on
    assert pace.rate == pytest.approx((200 + 0.2 * 40) / 2)
    pace.recover(now=3.2)
    assert pace.rate == pytest.approx(104 + 80)  # 2 s at +0.1 * 400 per second
    pace.recover(now=30.0)
    assert pace.rate == 400


def test_storm_after_storm_never_takes_the_rate_below_a_share_of_the_ceiling() -> None:
    pace = AdaptiveRate(ceiling=490)
    for step in range(30):
        pace.throttled(now=step / 10, sent=step / 10)
    assert pace.rate >= 490 / 10


def test_three_replicas_sharing_a_project_limit_converge_instead_of_collapsing() -> None:
    """Each pod's ceiling is the whole limit; all three get 429s while their sum exceeds it
    (answers 50 ms after sending)."""
    limit, pods = 500.0, [AdaptiveRate(ceiling=490) for _ in range(3)]
    sent = 0.0
    for tick in range(6000):  # 60 s in 10 ms steps
        now = tick / 100
        for pod in pods:
            pod.recover(now)
        total = sum(pod.rate for pod in pods)
        if total > limit:
            for pod in pods:
                pod.throttled(now, sent=now - 0.05)
        if now >= 30:
            sent += min(total, limit) / 100
    assert sent / 30 > 0.7 * limit  # the project's limit stays mostly used
    assert all(pod.rate >= 490 / 10 for pod in pods)


# -- the pacer ------------------------------------------------------------------------------


def _run_out(pacer: Pacer[int], now: float, cancelled: set[int]) -> list[tuple[int, float]]:
    """Release everyone as the loop's timer would: wake at each `next_due`."""
    released: list[tuple[int, float]] = []
    while True:
        released += [(item, now) for item in pacer.due(now, lambda i: i not in cancelled)]
        due = pacer.next_due(now)
        if due is None:
            return released
        assert due >= now
        now = due


def test_waiters_go_one_at_a_time_at_the_rate_after_the_burst() -> None:
    pacer: Pacer[int] = Pacer(AdaptiveRate(ceiling=100), burst=2)
    assert [pacer.join(i, 0.0) for i in range(5)] == [True, True, False, False, False]
    released = _run_out(pacer, 0.0, set())
    assert [item for item, _ in released] == [2, 3, 4]
    assert [at for _, at in released] == pytest.approx([0.01, 0.02, 0.03])


def test_a_cut_re_times_the_queue_and_recovery_speeds_it_back_up() -> None:
    pacer: Pacer[int] = Pacer(AdaptiveRate(ceiling=100, recovery=0.0), burst=1)
    for i in range(101):
        pacer.join(i, 0.0)
    assert pacer.throttled(0.0, sent=0.0)
    released = _run_out(pacer, 0.0, set())
    assert released[-1][1] == pytest.approx(100 / 50)  # the 100th waiter, at the new 50/s


def test_a_new_share_of_the_project_limit_re_times_the_queue() -> None:
    # Three members: this pod's share of users/update drops from all to a third.
    pacer: Pacer[int] = Pacer(AdaptiveRate(ceiling=90, recovery=0.0), burst=1)
    for i in range(91):
        pacer.join(i, 0.0)
    pacer.set_ceiling(30, 0.0)
    released = _run_out(pacer, 0.0, set())
    assert released[-1][1] == pytest.approx(90 / 30)


def test_a_pod_recovering_from_429s_keeps_its_place_under_a_new_ceiling() -> None:
    pace = AdaptiveRate(ceiling=400)
    pace.throttled(0.0, sent=0.0)  # 200 of 400
    pace.set_ceiling(200)
    assert (pace.rate, pace.ceiling) == (100, 200)


def test_a_waiter_that_gave_up_takes_no_place_and_no_token() -> None:
    pacer: Pacer[int] = Pacer(AdaptiveRate(ceiling=10), burst=1)
    for i in range(4):
        pacer.join(i, 0.0)
    released = _run_out(pacer, 0.0, {1, 2})
    assert released == [(3, pytest.approx(0.1))]


def test_a_sustained_queue_is_served_at_exactly_the_rate() -> None:
    pacer: Pacer[int] = Pacer(AdaptiveRate(ceiling=490), burst=24.5)
    at_once = sum(pacer.join(i, 0.0) for i in range(10_000))
    released = _run_out(pacer, 0.0, set())
    assert at_once == 24  # the burst
    assert 490 * 10 - 1 <= sum(at <= 10.0 for _, at in released) <= 490 * 10 + 1


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(1, 30)),
        st.tuples(st.just("wait"), st.floats(0, 1)),
        st.tuples(st.just("throttle"), st.floats(0, 0.2)),
        st.tuples(st.just("cancel"), st.integers(0, 10_000)),
    ),
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(ops=_OPS, ceiling=st.floats(1, 1000), burst=st.floats(1, 30))
def test_no_waiter_is_ever_scheduled_further_ahead_than_its_queue_needs(
    ops: list[tuple[str, float]], ceiling: float, burst: float
) -> None:
    """At any moment the k-th live waiter goes within (k + 1) / rate-now, FIFO, whatever
    reservations, cuts and cancellations came before."""
    pacer: Pacer[int] = Pacer(AdaptiveRate(ceiling=ceiling), burst=burst)
    now, joined, cancelled = 0.0, 0, set[int]()
    released: list[int] = []
    waiting: list[int] = []
    for op, value in ops:
        if op == "join":
            for _ in range(int(value)):
                (released if pacer.join(joined, now) else waiting).append(joined)
                joined += 1
        elif op == "wait":  # time passes, the timer releasing whoever is due
            target = now + value
            while (due := pacer.next_due(now)) is not None and due <= target:
                now = due
                released += pacer.due(now, lambda i: i not in cancelled)
            now = target
        elif op == "throttle":  # a 429 for a call sent `value` ago
            pacer.throttled(now, sent=now - value)
        elif waiting:
            cancelled.add(waiting[int(value) % len(waiting)])
        released += pacer.due(now, lambda i: i not in cancelled)
        waiting = [i for i in waiting if i not in released and i not in cancelled]
        # From here at the current rate (calm only raises it): nobody later than its place.
        rate = pacer.rate
        for position, (item, at) in enumerate(_run_out(copy.deepcopy(pacer), now, set(cancelled))):
            assert item == waiting[position]  # first come, first served
            assert at <= now + (position + 1) / rate + 1e-6
    assert released == sorted(released)
    assert pacer.rate >= ceiling / 10
