"""Per-partition completion tracking: the committable offset is the contiguous done prefix.

Pure. Messages finish out of order (lanes run concurrently); a partition's commit point only
moves past a message once it and every earlier message of that partition are finished.
Like Quix's checkpoint, it refuses offsets that go backwards and commits `offset + 1`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Entry:
    offset: int
    timestamp: float  # seconds since the epoch (the Kafka timestamp), for lag in seconds
    done: bool = False


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets handed out for one partition, in order, and which of them are finished."""

    _entries: deque[_Entry] = field(default_factory=deque)
    _by_offset: dict[int, _Entry] = field(default_factory=dict)
    committable: int | None = None  # next offset to commit (last contiguous done + 1)
    committed: int | None = None  # what the broker confirmed
    last_added: int = -1

    def add(self, offset: int, timestamp: float) -> None:
        if offset <= self.last_added:
            raise ValueError(f"offset {offset} is not after {self.last_added}")
        entry = _Entry(offset, timestamp)
        self._entries.append(entry)
        self._by_offset[offset] = entry
        self.last_added = offset

    def done(self, offset: int) -> bool:
        """Mark a message finished; True if the commit point moved."""
        entry = self._by_offset.get(offset)
        if entry is None:
            return False
        entry.done = True
        moved = False
        while self._entries and self._entries[0].done:
            finished = self._entries.popleft()
            del self._by_offset[finished.offset]
            self.committable = finished.offset + 1
            moved = True
        return moved

    @property
    def uncommitted(self) -> bool:
        """Whether the commit point moved past what the broker has confirmed."""
        return self.committable is not None and self.committable != self.committed

    @property
    def pending(self) -> int:
        return len(self._entries)

    def oldest_pending_timestamp(self) -> float | None:
        return self._entries[0].timestamp if self._entries else None
