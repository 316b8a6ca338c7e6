"""The commit point is the contiguous finished prefix of a partition."""

from __future__ import annotations

import pytest

from consumer.offsets import PartitionOffsets


def test_the_commit_point_waits_for_every_earlier_message() -> None:
    offsets = PartitionOffsets()
    for n in (10, 11, 12):
        offsets.add(n, timestamp=float(n))
    assert not offsets.done(11)
    assert offsets.committable is None
    assert offsets.done(10)
    assert offsets.committable == 12  # 10 and 11 finished: commit offset + 1
    assert offsets.done(12)
    assert offsets.committable == 13
    assert offsets.pending == 0


def test_the_oldest_pending_timestamp_is_the_lag_anchor() -> None:
    offsets = PartitionOffsets()
    offsets.add(1, timestamp=100.0)
    offsets.add(2, timestamp=105.0)
    offsets.done(1)
    assert offsets.oldest_pending_timestamp() == 105.0


def test_offsets_never_go_backwards() -> None:
    offsets = PartitionOffsets()
    offsets.add(5, timestamp=0.0)
    with pytest.raises(ValueError, match="not after"):
        offsets.add(5, timestamp=0.0)


def test_an_unknown_offset_changes_nothing() -> None:
    offsets = PartitionOffsets()
    offsets.add(1, timestamp=0.0)
    assert not offsets.done(99)
    assert offsets.committable is None


def test_uncommitted_until_the_broker_confirms() -> None:
    offsets = PartitionOffsets()
    offsets.add(1, timestamp=0.0)
    offsets.done(1)
    assert offsets.uncommitted
    offsets.committed = 2
    assert not offsets.uncommitted
