"""Which partitions to pause: the buffer's bounds, in all and per partition, and fair
shares of it. Pure.

Polling never stops (the group membership depends on it). librdkafka throws away what it
prefetched for a partition when it is paused and fetches it again on resume, so pausing
is kept for what nothing else can do: the total bound is kept by taking no more messages
than there is room for (`KafkaSource`), and pauses only in its last percent, which only a
stall reaches. Once the buffer is half used, no partition holds more than twice its
fair share of it, shared among the partitions with work (not read to their end): a
backlog on one topic must not fill the buffer and leave the other topics' endpoints idle.
A paused partition resumes only well under what paused it, so it does not flap.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Set
from dataclasses import dataclass
from typing import Final, TypeVar

RESUME_AT: Final = 0.8
CROWDED: Final = 0.5  # above this share of the total bound, partitions get fair shares
# A partition pauses at twice its fair share and resumes under it: in an even backlog
# every partition sits near its share, and pausing there would refetch all the time.
FAIR_PAUSE: Final = 2.0

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class BufferLimits:
    total: int = 5_000
    per_partition: int = 2_000

    @property
    def overflow(self) -> int:
        """The top of the bound, kept for a full buffer's intake of one message per poll
        (which only a stall adds up); reaching the bound itself pauses everything."""
        return min(self.total - 1, max(10, self.total // 100))

    @property
    def fill(self) -> int:
        """How many the source takes in batches, before the overflow."""
        return self.total - self.overflow


def to_pause(
    pending: Mapping[P, int],
    *,
    at_end: Set[P],
    paused: Set[P],
    limits: BufferLimits,
    held: bool = False,
) -> set[P]:
    """The partitions that should be paused now; every other one should run.

    `pending` is each assigned partition's count of received, unfinished messages;
    `held` pauses everything (wrong credentials, an open dead-letter circuit)."""
    if held:
        return set(pending)
    total = sum(pending.values())
    everything = set(pending)
    if total >= limits.total or (everything <= paused and total >= limits.fill):
        return everything  # a stall: everything stays paused until there is room again
    crowded = total >= limits.total * CROWDED
    busy = sum(1 for p, n in pending.items() if n or p not in at_end)
    share = limits.total / max(1, busy)
    wanted: set[P] = set()
    for partition, count in pending.items():
        if partition in paused:  # resumes only well under what paused it
            pause = count >= limits.per_partition * RESUME_AT or (crowded and count >= share)
        else:
            pause = count >= limits.per_partition or (crowded and count >= share * FAIR_PAUSE)
        if pause:
            wanted.add(partition)
    return wanted
