"""Dead-letter records and the circuit breaker."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.dlq import (
    DeadLetter,
    DeadLetterBreaker,
    dead_letter,
    original_headers,
    smaller,
    source_of,
)
from consumer.errors import InvalidEvent, PermanentError
from consumer.replay import destination


def _record(error: Exception, headers: tuple[tuple[str, bytes], ...] = ()) -> dict[str, bytes]:
    record = dead_letter(
        dlq_topic="user.changed.dlq",
        source_topic="user.changed",
        partition=2,
        offset=41,
        key=b"k",
        value=b"v",
        headers=headers,
        error=error,  # type: ignore[arg-type]
        attempts=3,
        failed_at=1.5,
    )
    assert (record.topic, record.key, record.value) == ("user.changed.dlq", b"k", b"v")
    return dict(record.headers)


def test_an_iterable_rejection_carries_status_code_and_attempts() -> None:
    headers = _record(
        PermanentError("users/update", "Invalid email", status=400, code="InvalidEmailAddressError")
    )
    assert headers["dlq.source.topic"] == b"user.changed"
    assert headers["dlq.source.partition"] == b"2"
    assert headers["dlq.source.offset"] == b"41"
    assert headers["dlq.error.class"] == b"PermanentError"
    assert headers["dlq.http.status"] == b"400"
    assert headers["dlq.iterable.code"] == b"InvalidEmailAddressError"
    assert headers["dlq.attempts"] == b"3"


def test_an_invalid_event_names_the_field_and_keeps_original_headers() -> None:
    headers = _record(
        InvalidEvent("data.email", "is not a valid email address"), (("ce_id", b"1"),)
    )
    assert headers["dlq.error.message"] == b"data.email: is not a valid email address"
    assert headers["ce_id"] == b"1"
    assert "dlq.http.status" not in headers


def test_replay_helpers_find_the_source_and_strip_dlq_headers() -> None:
    headers = (("ce_id", b"1"), ("dlq.source.topic", b"user.changed"), ("dlq.attempts", b"1"))
    assert source_of(headers) == "user.changed"
    assert original_headers(headers) == (("ce_id", b"1"),)


P0, P1 = ("user.changed", 0), ("user.changed", 1)


def _in_order(breaker: DeadLetterBreaker, outcomes: list[tuple[float, bool]]) -> None:
    for offset, (now, dead) in enumerate(outcomes):
        breaker.expect(P0, offset)
        breaker.record(P0, offset, dead, now)


def test_the_breaker_opens_at_the_ratio_and_closes_after_cooldown() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=10, min_events=4, cooldown=30)
    _in_order(breaker, [(0, True), (1, False), (2, True)])
    assert not breaker.is_open(2)  # too few events to judge
    breaker.expect(P0, 3)
    breaker.record(P0, 3, False, 3)  # 2 of 4 dead: half the stream
    assert breaker.is_open(3)
    assert breaker.is_open(32)
    assert not breaker.is_open(33)


def test_old_outcomes_leave_the_window() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=10, min_events=3, cooldown=30)
    _in_order(breaker, [(0, True), (1, True), (20, False), (21, False), (22, False)])
    assert not breaker.is_open(22)


def test_a_dead_letter_keeps_the_source_timestamp_for_replay() -> None:
    record = dead_letter(
        dlq_topic="d",
        source_topic="s",
        partition=2,
        offset=1,
        key=None,
        value=b"v",
        headers=(),
        error=InvalidEvent("data", "broken"),
        attempts=0,
        failed_at=2.0,
        source_timestamp=1_700_000_000.125,
    )
    assert destination(record.headers, 1_800_000_000_000) == (2, 1_700_000_000_125)


def test_replay_falls_back_to_the_letter_timestamp_and_the_key() -> None:
    assert destination((("dlq.source.partition", b"1"),), 5_000) == (1, 5_000)
    assert destination((("dlq.source.partition", b"x"),), None) == (None, 0)
    assert destination((("dlq.source.timestamp", b"nan"),), -1) == (None, 0)


def test_dead_letters_finishing_first_count_in_offset_order() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=60, min_events=20, cooldown=60)
    poison = set(range(0, 6662, 392))  # 17 invalid events among 6,662
    for offset in range(6662):
        breaker.expect(P0, offset)
    for offset in sorted(poison):  # invalid events finish in microseconds
        breaker.record(P0, offset, True, 0.0)
    assert not breaker.is_open(0.0)
    for offset in range(6662):
        if offset not in poison:
            breaker.record(P0, offset, False, 0.5)
        assert not breaker.is_open(0.5)


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(100, 3000),
    every=st.integers(101, 400),
    partitions=st.integers(1, 4),
    order=st.randoms(use_true_random=False),
)
def test_under_one_percent_poison_never_trips_it_whatever_the_completion_order(
    count: int, every: int, partitions: int, order: random.Random
) -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=60, min_events=20, cooldown=60)
    messages = [(("t", n % partitions), n // partitions) for n in range(count)]
    for where, offset in messages:
        breaker.expect(where, offset)
    finishing = list(enumerate(messages))
    order.shuffle(finishing)
    finishing.sort(key=lambda pair: pair[0] % every != 0)  # every dead letter first
    for n, (where, offset) in finishing:
        breaker.record(where, offset, n % every == 0, n / 1000)
        assert not breaker.is_open(n / 1000)


@settings(max_examples=50, deadline=None)
@given(order=st.randoms(use_true_random=False))
def test_a_bad_deploy_failing_half_the_events_trips_it(order: random.Random) -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=60, min_events=20, cooldown=60)
    messages = [(("t", n % 3), n // 3) for n in range(300)]
    for where, offset in messages:
        breaker.expect(where, offset)
    finishing = list(enumerate(messages))
    order.shuffle(finishing)
    for n, (where, offset) in finishing:
        breaker.record(where, offset, n % 2 == 0, 1.0)
    assert breaker.is_open(1.0)


def test_a_forgotten_partition_does_not_hold_back_the_others() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=60, min_events=4, cooldown=60)
    breaker.expect(P1, 0)  # revoked before it finished
    breaker.forget(P1)
    breaker.record(P1, 0, True, 0)
    _in_order(breaker, [(0, True), (0, True), (0, True), (0, True)])
    assert breaker.is_open(0)


def test_duplicates_move_the_order_on_without_counting() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=60, min_events=2, cooldown=60)
    for offset in range(3):
        breaker.expect(P0, offset)
    breaker.record(P0, 1, None, 0)
    breaker.record(P0, 2, True, 0)
    breaker.record(P0, 0, True, 0)
    assert breaker.is_open(0)  # 2 of 2 judged outcomes dead; the duplicate is not one


def test_offsets_going_backwards_start_the_partition_over() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=60, min_events=2, cooldown=60)
    breaker.expect(P0, 10)  # never finishes: the log was truncated
    for offset in (3, 4):
        breaker.expect(P0, offset)
        breaker.record(P0, offset, True, 0)
    assert breaker.is_open(0)


def _big(value: bytes | None, key: bytes | None = b"k") -> DeadLetter:
    return dead_letter(
        dlq_topic="user.changed.dlq",
        source_topic="user.changed",
        partition=2,
        offset=41,
        key=key,
        value=value,
        headers=(("trace", b"t" * 10),),
        error=InvalidEvent("value", "is 2097152 bytes, over the 1048576-byte limit"),
        attempts=0,
        failed_at=1.5,
    )


def test_a_record_too_large_is_cut_to_its_key_and_headers_saying_what_was_omitted() -> None:
    cut = smaller(_big(b"x" * 2_000_000))
    assert cut is not None
    assert (cut.key, cut.value) == (b"k", None)
    headers = dict(cut.headers)
    assert headers["dlq.value.omitted"] == b"true"
    assert headers["dlq.value.bytes"] == b"2000000"
    assert headers["trace"] == b"t" * 10
    assert (headers["dlq.source.topic"], headers["dlq.source.partition"]) == (b"user.changed", b"2")
    assert headers["dlq.source.offset"] == b"41"


def test_a_record_still_too_large_loses_its_key_and_original_headers_then_nothing_more() -> None:
    once = smaller(_big(b"x" * 10, key=b"k" * 2_000_000))
    assert once is not None
    twice = smaller(once)
    assert twice is not None
    headers = dict(twice.headers)
    assert (twice.key, twice.value, "trace" in headers) == (None, None, False)
    assert headers["dlq.key.omitted"] == b"true"
    assert headers["dlq.key.bytes"] == b"2000000"
    assert headers["dlq.value.bytes"] == b"10"
    assert headers["dlq.source.offset"] == b"41"
    assert smaller(twice) is None
