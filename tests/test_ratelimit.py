"""Token buckets, driven by a clock the test holds."""

from __future__ import annotations

import pytest

from consumer.ratelimit import AdaptiveRate, TokenBucket


def test_a_full_bucket_admits_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.try_take(0.1)  # one token back after 1/rate seconds


def test_reservations_queue_fairly_at_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=1)
    waits = [bucket.reserve(0.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.01, 0.02, 0.03])


def test_a_sustained_rate_never_exceeds_the_bucket() -> None:
    bucket = TokenBucket(rate=500, burst=25)
    admitted = sum(bucket.try_take(i / 5000) for i in range(5000))  # 1 s of 5,000 requests
    assert admitted <= 500 + 25


def test_a_bad_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)


def test_a_429_halves_the_rate_once_per_storm_and_calm_restores_it() -> None:
    rate = AdaptiveRate(ceiling=400, burst=10, recovery=0.1)
    rate.throttled(now=1.0)
    rate.throttled(now=1.05)  # the same storm
    assert rate.rate == 200
    rate.reserve(now=1.1)  # traffic between two storms must not reset the debounce
    rate.throttled(now=1.2)
    assert rate.rate == pytest.approx(102)  # (200 + 0.1 s * 0.1 * 400) / 2
    rate.reserve(now=3.2)  # 2 s calm: +0.1 * 400 per second
    assert rate.rate == pytest.approx(182)
    rate.reserve(now=30.0)
    assert rate.rate == 400


def test_the_rate_never_falls_below_the_floor() -> None:
    rate = AdaptiveRate(ceiling=4, burst=1, floor=1)
    for step in range(10):
        rate.throttled(now=float(step))
    assert rate.rate == 1
