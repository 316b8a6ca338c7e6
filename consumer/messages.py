"""What passes between the Kafka side and the processing side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

TopicPartition = tuple[str, int]
RawHeaders = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None


def normalise_headers(raw: RawHeaders) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers as (name, bytes) pairs, whatever shape the client returned."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or ())
    return tuple((k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in items)


class Outcome(StrEnum):
    """How a message finished; each one lets its offset be committed."""

    OK = "ok"
    DEAD_LETTERED = "dead_lettered"
    DUPLICATE = "duplicate"
    STALE = "stale"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A Kafka message handed to the processor; `epoch` names the assignment it came in."""

    topic: str
    partition: int
    offset: int
    epoch: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: float  # seconds since the epoch, from the Kafka message

    @property
    def where(self) -> TopicPartition:
        return (self.topic, self.partition)
