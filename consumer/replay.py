"""`iterable-consumer dlq replay`: re-publish dead letters to the topic they came from.

Reads the dead-letter topic with its own consumer group (so a second replay continues
where the first stopped), produces each original key, value and headers back to its
source topic, and commits only after the broker acknowledged the copies.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from consumer.dlq import original_headers, source_of
from consumer.messages import normalise_headers


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
    try:
        metadata = consumer.list_topics(dlq_topic, timeout=10).topics[dlq_topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(dlq_topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
        consumer.assign([TopicPartition(dlq_topic, p) for p in ends])
        committed = {
            tp.partition: tp.offset
            for tp in consumer.committed([TopicPartition(dlq_topic, p) for p in ends], timeout=10)
        }
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
            if source is None:
                report(f"skipped {dlq_topic}[{partition}]@{offset}: no dlq.source.topic header")
            else:
                producer.produce(
                    source,
                    value=message.value(),
                    key=message.key(),
                    headers=list(original_headers(headers)),
                )
                count += 1
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
        if producer.flush(30) != 0:
            raise KafkaException("re-published messages were not all acknowledged")
        if consumed:
            consumer.commit(asynchronous=False)
        return count
    finally:
        consumer.close()
