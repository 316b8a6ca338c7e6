"""Which partitions to pause: the buffer's bounds, in all and per partition, and fair
shares of it. Pure.

Polling never stops (the group membership depends on it); pausing partitions is how the
buffer stays bounded. Once the buffer is half used, no partition holds more than its fair
share of it, shared among the partitions with work (not read to their end): a backlog on
one topic must not fill the buffer and leave the other topics' endpoints idle. A paused
partition resumes only once it is back under 80% of what paused it, so it does not flap.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Set
from dataclasses import dataclass
from typing import Final, TypeVar

RESUME_AT: Final = 0.8
CROWDED: Final = 0.5  # above this share of the total bound, partitions get fair shares

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class BufferLimits:
    total: int = 5_000
    per_partition: int = 2_000


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
    crowded = total >= limits.total * CROWDED
    busy = sum(1 for p, n in pending.items() if n or p not in at_end)
    share = limits.total / max(1, busy)
    wanted: set[P] = set()
    for partition, count in pending.items():
        scale = RESUME_AT if partition in paused else 1.0
        if (
            total >= limits.total * scale
            or count >= limits.per_partition * scale
            or (crowded and count >= share * scale)
        ):
            wanted.add(partition)
    return wanted
