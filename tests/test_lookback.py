"""Reading back finished device events ends when each partition is done, not at the deadline."""

from __future__ import annotations

import time
from collections import deque

from confluent_kafka import KafkaError, Message

from consumer.lookback import _read


class FakeReader:
    """Answers consume() with scripted batches, then nothing (as an idle partition does)."""

    def __init__(self, *batches: list[Message]) -> None:
        self.batches = deque(batches)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if self.batches:
            return self.batches.popleft()
        time.sleep(min(timeout, 0.01))
        return []


def _record(offset: int) -> Message:
    return Message(topic="d", partition=0, offset=offset, value=b"{}", timestamp=(1, 1000))


def test_a_partition_whose_last_record_before_the_commit_point_is_missing_ends_at_its_eof() -> None:
    # Offsets 0..3 were read; offset 4 (the last before the committed 5) is a transaction
    # marker or was compacted away, so it never comes: the end of the partition does.
    eof = Message(topic="d", partition=0, offset=5, error=KafkaError(KafkaError._PARTITION_EOF))
    reader = FakeReader([_record(n) for n in range(4)], [eof])
    started = time.monotonic()
    found = _read(reader, {("d", 0): (0, 5)}, deadline=started + 30)  # type: ignore[arg-type]
    assert [d.offset for d in found] == [0, 1, 2, 3]
    assert time.monotonic() - started < 1


def test_records_at_and_after_the_commit_point_are_not_restored() -> None:
    reader = FakeReader([_record(n) for n in range(3, 8)])
    found = _read(reader, {("d", 0): (3, 5)}, deadline=time.monotonic() + 30)  # type: ignore[arg-type]
    assert [d.offset for d in found] == [3, 4]
