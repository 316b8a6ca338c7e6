"""`iterable-consumer dlq replay`: re-publish dead letters to the topic they came from.

Reads the dead-letter topic with its own consumer group (so a second replay continues
where the first stopped), produces each original key, value and headers back to its
source topic, on its source partition and with its original timestamp, and commits only
after the broker acknowledged every copy. The partition is the one the letter names, not
the key's hash: librdkafka's default partitioner differs from the Java client's, so a
re-hashed event could land beside another entity's events instead of its own. The
timestamp matters to an event without `time`, whose event time is the Kafka timestamp: a
replayed old registration stamped "now" would look newer than a revocation since.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumer.dlq import (
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TIMESTAMP,
    VALUE_OMITTED,
    original_headers,
    source_of,
)
from consumer.messages import normalise_headers


def destination(
    headers: tuple[tuple[str, bytes], ...], letter_timestamp_ms: int | None
) -> tuple[int | None, int]:
    """The source partition (None: not named) and timestamp in ms (0: none known) of a dead
    letter. Without `dlq.source.timestamp` the letter's own (when it failed) stands in: no
    later than anything produced after the failure."""
    named = dict(headers)
    number = _non_negative(named.get(SOURCE_PARTITION))
    partition = int(number) if number is not None and number.is_integer() else None
    seconds = _non_negative(named.get(SOURCE_TIMESTAMP))
    if seconds:
        return partition, int(seconds * 1000)
    return partition, max(letter_timestamp_ms or 0, 0)


def _non_negative(raw: bytes | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < math.inf else None


def replay(
    bootstrap: str,
    kafka: dict[str, str],
    *,
    dlq_topic: str,
    group: str,
    limit: int | None,
    report: Callable[[str], None],
) -> int:
    """Replay up to `limit` dead letters present now; return how many were re-published."""
    base = {"bootstrap.servers": bootstrap, **kafka}
    consumer = Consumer(
        {**base, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    producer = Producer({**base, "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error.name())

    try:
        metadata = consumer.list_topics(dlq_topic, timeout=10).topics[dlq_topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(dlq_topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
        committed = _committed(consumer, [TopicPartition(dlq_topic, p) for p in ends])
        # From the offsets just read: left to look them up itself, the consumer reports a
        # coordinator still loading (a new group's) as an error message, ending the replay.
        consumer.assign(
            [TopicPartition(dlq_topic, p, max(committed.get(p, 0), OFFSET_BEGINNING)) for p in ends]
        )
        remaining = {p for p, end in ends.items() if max(committed.get(p, 0), 0) < end}
        count = 0
        consumed = False
        while remaining and (limit is None or count < limit):
            message = consumer.poll(10)
            if message is None:
                break
            if message.error() is not None:
                raise KafkaException(message.error())
            consumed = True
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            headers = normalise_headers(message.headers())
            source = source_of(headers)
            named = dict(headers)
            if source is None:
                report(f"skipped {dlq_topic}[{partition}]@{offset}: no dlq.source.topic header")
            elif VALUE_OMITTED in named:
                # Re-published it would be an empty message (a tombstone when compacted).
                where = f"{source}[{named.get(SOURCE_PARTITION, b'?').decode()}]"
                report(
                    f"skipped {dlq_topic}[{partition}]@{offset}: written without its value;"
                    f" the original is at {where}@{named.get(SOURCE_OFFSET, b'?').decode()}"
                )
            else:
                _republish(producer, message, source, headers, delivered=delivered, report=report)
                count += 1
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
        if producer.flush(30) != 0 or failures:
            # Nothing is committed: the next replay starts from the same letters again.
            raise KafkaException(
                f"re-published messages were not all acknowledged ({', '.join(failures[:3])})"
            )
        if consumed:
            consumer.commit(asynchronous=False)
        return count
    finally:
        consumer.close()


def _republish(
    producer: Producer,
    message: Message,
    source: str,
    headers: tuple[tuple[str, bytes], ...],
    *,
    delivered: Callable[[KafkaError | None, Message], None],
    report: Callable[[str], None],
) -> None:
    """Produce one dead letter's original back to its source partition and timestamp."""
    kind, stamp = message.timestamp()
    partition, timestamp = destination(headers, None if kind == TIMESTAMP_NOT_AVAILABLE else stamp)
    if partition is None:
        report(f"{message.topic()}[{message.partition()}]@{message.offset()}: no source partition")
    while True:
        try:
            producer.produce(
                source,
                value=message.value(),
                key=message.key(),
                headers=list(original_headers(headers)),
                partition=-1 if partition is None else partition,
                timestamp=timestamp,
                on_delivery=delivered,
            )
            break
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.1)
    producer.poll(0)


def _committed(consumer: Consumer, partitions: list[TopicPartition]) -> dict[int, int]:
    """The group's committed offsets; a new group's coordinator may still be loading."""
    for attempt in range(50):
        try:
            return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() == KafkaError.NOT_COORDINATOR
            )
            if not retriable or attempt == 49:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")
