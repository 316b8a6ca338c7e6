"""Backoff delays and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from consumer.backoff import Backoff, parse_retry_after

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def test_full_jitter_stays_under_the_exponential_ceiling_and_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=2.0)
    rng = random.Random(1)
    for attempt in range(40):
        delay = backoff.delay(attempt, rng)
        assert 0 <= delay <= min(2.0, 0.1 * 2**attempt)


def test_retry_after_is_a_floor() -> None:
    assert Backoff(base=0.1, cap=1.0).delay(0, random.Random(1), retry_after=7.0) == 7.0


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", NOW) == 0.0


def test_absent_or_garbage_retry_after_is_none() -> None:
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("soon", NOW) is None
