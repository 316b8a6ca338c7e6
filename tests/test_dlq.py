"""Dead-letter records and the circuit breaker."""

from __future__ import annotations

from consumer.dlq import DeadLetterBreaker, dead_letter, original_headers, source_of
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
