"""Dead-letter records and the dead-letter circuit breaker. Pure.

A dead-letter record keeps the original key, value and headers and adds `dlq.*` headers
naming where the message came from and why it failed (SPEC §5). Header values never carry
secrets; identifiers appear only redacted (error messages are scrubbed where they enter).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from consumer.errors import ConsumerError, IterableError

HEADER_PREFIX: Final = "dlq."
SOURCE_TOPIC: Final = "dlq.source.topic"
SOURCE_PARTITION: Final = "dlq.source.partition"
SOURCE_OFFSET: Final = "dlq.source.offset"
SOURCE_TIMESTAMP: Final = "dlq.source.timestamp"  # seconds; replay gives it back (no `time`)
ERROR_CLASS: Final = "dlq.error.class"
ERROR_MESSAGE: Final = "dlq.error.message"
HTTP_STATUS: Final = "dlq.http.status"
ITERABLE_CODE: Final = "dlq.iterable.code"
ATTEMPTS: Final = "dlq.attempts"
FAILED_AT: Final = "dlq.failed.at"
VALUE_OMITTED: Final = "dlq.value.omitted"
VALUE_BYTES: Final = "dlq.value.bytes"
KEY_OMITTED: Final = "dlq.key.omitted"
KEY_BYTES: Final = "dlq.key.bytes"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message bound for the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def dead_letter(
    *,
    dlq_topic: str,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes], ...],
    error: ConsumerError,
    attempts: int,
    failed_at: float,
    source_timestamp: float | None = None,
) -> DeadLetter:
    """The record for a message that failed for good; earlier `dlq.*` headers are replaced."""
    added: list[tuple[str, str]] = [
        (SOURCE_TOPIC, source_topic),
        (SOURCE_PARTITION, str(partition)),
        (SOURCE_OFFSET, str(offset)),
        (ERROR_CLASS, type(error).__name__),
        (ERROR_MESSAGE, str(error)[:1000]),
        (ATTEMPTS, str(attempts)),
        (FAILED_AT, f"{failed_at:.3f}"),
    ]
    if source_timestamp is not None:
        added.append((SOURCE_TIMESTAMP, f"{source_timestamp:.3f}"))
    if isinstance(error, IterableError):
        if error.status is not None:
            added.append((HTTP_STATUS, str(error.status)))
        if error.code:
            added.append((ITERABLE_CODE, error.code))
    kept = tuple((k, v) for k, v in headers if not k.startswith(HEADER_PREFIX))
    return DeadLetter(
        topic=dlq_topic,
        key=key,
        value=value,
        headers=kept + tuple((k, v.encode()) for k, v in added),
    )


def smaller(record: DeadLetter) -> DeadLetter | None:
    """The record cut down for a dead-letter topic that refused it as too large.

    First without its value, then also without its key and original headers; the `dlq.*`
    headers always stay (the original message is still in its source topic, at the
    offset they name). None when nothing is left to drop.
    """
    if record.value is not None:
        return DeadLetter(
            topic=record.topic,
            key=record.key,
            value=None,
            headers=(
                *record.headers,
                (VALUE_OMITTED, b"true"),
                (VALUE_BYTES, str(len(record.value)).encode()),
            ),
        )
    kept = tuple((k, v) for k, v in record.headers if k.startswith(HEADER_PREFIX))
    if record.key is None and kept == record.headers:
        return None
    key_headers = (
        ()
        if record.key is None
        else (
            (KEY_OMITTED, b"true"),
            (KEY_BYTES, str(len(record.key)).encode()),
        )
    )
    return DeadLetter(topic=record.topic, key=None, value=None, headers=kept + key_headers)


def source_of(headers: tuple[tuple[str, bytes], ...]) -> str | None:
    """The topic a dead-lettered message came from."""
    value = dict(headers).get(SOURCE_TOPIC)
    return value.decode() if value is not None else None


def original_headers(headers: tuple[tuple[str, bytes], ...]) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v) for k, v in headers if not k.startswith(HEADER_PREFIX))


class DeadLetterBreaker:
    """Opens when dead letters reach `ratio` of the stream's outcomes over `window` seconds.

    It judges the stream, not the first completions: invalid events finish at once while
    valid ones wait for Iterable, so outcomes are counted in offset order per partition (a
    message's once every earlier one of its partition is in). A bad deploy must not
    dead-letter the whole stream: while open, consumption pauses. It closes after
    `cooldown` seconds and opens again if the ratio is still reached.
    """

    def __init__(self, ratio: float, window: float, min_events: int, cooldown: float) -> None:
        self.ratio = ratio
        self.window = window
        self.min_events = min_events
        self.cooldown = cooldown
        # Counts per whole second, [second, outcomes, dead]: memory bounded by the window in
        # seconds, not by the event rate (one entry per event was 150,000 at 2,500/s).
        self._seconds: deque[list[int]] = deque()
        self._total = 0
        self._dead = 0
        self._open_until = float("-inf")
        self._partitions: dict[tuple[str, int], _InOrder] = {}

    def expect(self, where: tuple[str, int], offset: int) -> bool:
        """A message was handed out: its outcome counts once every earlier one has.

        True when its offsets went backwards: what was pending will never be counted."""
        order = self._partitions.get(where)
        reset = order is not None and bool(order.expected) and offset <= order.expected[-1]
        if order is None or reset:
            order = self._partitions[where] = _InOrder()
        order.expected.append(offset)
        return reset

    def record(self, where: tuple[str, int], offset: int, dead: bool | None, now: float) -> None:
        """A message finished; `dead` is None when it has no outcome to judge (a duplicate)."""
        order = self._partitions.get(where)
        if order is None or not order.expected or offset < order.expected[0]:
            return  # forgotten (revoked) or never expected
        order.finished[offset] = dead
        expected, finished = order.expected, order.finished
        while expected and expected[0] in finished:
            outcome = finished.pop(expected.popleft())
            if outcome is not None:
                self._count(outcome, now)

    def head(self, where: tuple[str, int]) -> int | None:
        """The partition's first offset whose outcome is not counted yet (None: none)."""
        order = self._partitions.get(where)
        return order.expected[0] if order is not None and order.expected else None

    def forget(self, where: tuple[str, int]) -> None:
        """A partition was released: its unfinished messages will not finish here."""
        self._partitions.pop(where, None)

    def _count(self, dead: bool, now: float) -> None:
        second = int(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += 1
            self._seconds[-1][2] += dead
        else:
            self._seconds.append([second, 1, int(dead)])
        self._total += 1
        self._dead += dead
        while self._seconds and self._seconds[0][0] < now - self.window:
            _, total, was_dead = self._seconds.popleft()
            self._total -= total
            self._dead -= was_dead
        total = self._total
        if total >= self.min_events and self._dead >= self.ratio * total and not self.is_open(now):
            self._open_until = now + self.cooldown
            self._seconds.clear()
            self._total = self._dead = 0

    def is_open(self, now: float) -> bool:
        return now < self._open_until


@dataclass(slots=True)
class _InOrder:
    """One partition's handed-out offsets not yet counted, and which of them finished."""

    expected: deque[int] = field(default_factory=deque)
    finished: dict[int, bool | None] = field(default_factory=dict)
