"""Read back what a partition already finished, to restore the device guard's memory.

The guard remembers revocations and registrations in memory; a restart or rebalance loses
that memory. When device partitions are assigned, the last `records` finished messages of
the same partition numbers of both device topics are read back (SPEC §5: both topics
co-partitioned by token, partition i of each on the same member).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer.messages import Delivery, normalise_headers

log = logging.getLogger(__name__)


def read_back(
    config: dict[str, Any],
    topics: list[str],
    partitions: set[int],
    records: int,
    timeout: float = 30.0,
) -> list[Delivery]:
    """Up to `records` messages before the group's committed offset, per topic partition."""
    if not partitions or records <= 0:
        return []
    reader = Consumer(
        {k: v for k, v in config.items() if not k.endswith("_cb")}
        # End-of-partition events end the read of a partition whose last records before
        # the committed offset are gone (compacted) or were transaction markers.
        | {"enable.auto.commit": False, "enable.partition.eof": True}
    )
    wanted = [TopicPartition(t, p) for t in topics for p in sorted(partitions)]
    try:
        committed = reader.committed(wanted, timeout=10)
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in committed:
            if tp.offset <= 0:
                continue
            low, _ = reader.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=10
            )
            ranges[(tp.topic, tp.partition)] = (max(low, tp.offset - records), tp.offset)
        if not ranges:
            return []
        reader.assign([TopicPartition(t, p, start) for (t, p), (start, _) in ranges.items()])
        return _read(reader, ranges, time.monotonic() + timeout)
    except KafkaException as exc:
        log.warning(
            "device look-back failed; ordering memory starts empty", extra={"error": str(exc)}
        )
        return []
    finally:
        reader.close()


def _read(
    reader: Consumer, ranges: dict[tuple[str, int], tuple[int, int]], deadline: float
) -> list[Delivery]:
    found: list[Delivery] = []
    remaining = {where for where, (start, end) in ranges.items() if start < end}
    while remaining and time.monotonic() < deadline:
        for message in reader.consume(num_messages=1000, timeout=0.5):
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            where = (topic, partition)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(where)  # nothing more to read: the rest is not there
                continue
            if where not in remaining:
                continue
            value = message.value()
            if offset < ranges[where][1]:
                found.append(
                    Delivery(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        epoch=0,
                        key=None,
                        value=value.encode() if isinstance(value, str) else value,
                        headers=normalise_headers(message.headers()),
                        timestamp=message.timestamp()[1] / 1000,
                    )
                )
            if offset + 1 >= ranges[where][1]:
                remaining.discard(where)
    return found
