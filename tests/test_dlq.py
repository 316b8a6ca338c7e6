"""Dead-letter records and the circuit breaker."""

from __future__ import annotations

from consumer.dlq import (
    DeadLetter,
    DeadLetterBreaker,
    dead_letter,
    original_headers,
    smaller,
    source_of,
)
from consumer.errors import InvalidEvent, PermanentError


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


def test_the_breaker_opens_over_the_ratio_and_closes_after_cooldown() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=10, min_events=4, cooldown=30)
    for now, dead in [(0, True), (1, False), (2, True)]:
        breaker.record(dead, now)
    assert not breaker.is_open(2)  # too few events to judge
    breaker.record(True, 3)  # 3 of 4 dead
    assert breaker.is_open(3)
    assert breaker.is_open(32)
    assert not breaker.is_open(33)


def test_old_outcomes_leave_the_window() -> None:
    breaker = DeadLetterBreaker(ratio=0.5, window=10, min_events=3, cooldown=30)
    breaker.record(True, 0)
    breaker.record(True, 1)
    for now in (20, 21, 22):
        breaker.record(False, now)
    assert not breaker.is_open(22)


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
