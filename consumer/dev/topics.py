"""Topic helpers for tests, benchmarks and demos: create, produce, read back, committed offsets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.messages import normalise_headers

HeaderList = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """A message as produced or read back."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None  # seconds; None: the producer's clock (as produced)


class KafkaTools:
    """Administration and plain producing/consuming against one cluster."""

    def __init__(self, bootstrap_servers: str, config: Mapping[str, str] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap_servers,
            **(config or {}),
        }
        self._admin = AdminClient(self._config)

    def unique_name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> str:
        futures = self._admin.create_topics(
            [NewTopic(name, partitions, replication, config=dict(config or {}))],
            operation_timeout=30,
        )
        futures[name].result(timeout=30)
        self._wait_for_leaders(name, partitions)
        return name

    def produce(self, topic: str, records: Iterable[Record]) -> int:
        """Produce with acks=all and wait for every delivery; return how many."""
        producer = Producer({**self._config, "acks": "all", "enable.idempotence": True})
        failures: list[str] = []

        def _report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        count = 0
        for record in records:
            while True:
                try:
                    producer.produce(
                        topic,
                        value=record.value,
                        key=record.key,
                        partition=-1 if record.partition is None else record.partition,
                        headers=list(record.headers),
                        timestamp=0 if record.timestamp is None else int(record.timestamp * 1000),
                        on_delivery=_report,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.1)
            producer.poll(0)
            count += 1
        remaining = producer.flush(60)
        if remaining or failures:
            raise KafkaException(f"{remaining} undelivered, failures: {failures[:3]}")
        return count

    def read_all(self, topic: str, timeout: float = 10.0) -> list[Record]:
        """Every record currently in `topic`, read without a group."""
        ends = self.end_offsets(topic)
        consumer = Consumer(
            {**self._config, "group.id": self.unique_name("reader"), "enable.auto.commit": False}
        )
        try:
            wanted = {p: end for p, end in ends.items() if end > 0}
            consumer.assign([TopicPartition(topic, p, 0) for p in wanted])
            records: list[Record] = []
            positions = dict.fromkeys(wanted, 0)
            while any(positions[p] < wanted[p] for p in wanted):
                msg = consumer.poll(timeout)
                if msg is None:
                    raise TimeoutError(f"read {len(records)} records of {topic}, expected more")
                if msg.error():
                    raise KafkaException(msg.error())
                record = _record(msg)
                positions[record.partition or 0] = (record.offset or 0) + 1
                records.append(record)
            return records
        finally:
            consumer.close()

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The high watermark of every partition of `topic`."""
        consumer = Consumer({**self._config, "group.id": self.unique_name("watermarks")})
        try:
            partitions = self._partitions(topic)
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset per partition (-1001 when nothing is committed)."""
        consumer = Consumer({**self._config, "group.id": group, "enable.auto.commit": False})
        try:
            partitions = [TopicPartition(topic, p) for p in self._partitions(topic)]
            for attempt in range(50):
                try:
                    committed = consumer.committed(partitions, timeout=10)
                except KafkaException as exc:
                    # The group coordinator moves or loads right after a broker starts.
                    if attempt == 49 or not _coordinator_busy(exc.args[0]):
                        raise
                    time.sleep(0.1)
                else:
                    return {tp.partition: tp.offset for tp in committed}
            raise AssertionError("unreachable")
        finally:
            consumer.close()

    def _partitions(self, topic: str) -> list[int]:
        metadata = self._admin.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def _wait_for_leaders(self, topic: str, partitions: int) -> None:
        for _ in range(100):
            metadata = self._admin.list_topics(topic, timeout=10).topics.get(topic)
            if (
                metadata is not None
                and metadata.error is None
                and len(metadata.partitions) == partitions
                and all(p.leader >= 0 for p in metadata.partitions.values())
            ):
                return
            time.sleep(0.1)
        raise KafkaException(f"topic {topic} has no leaders")


def _record(msg: Message) -> Record:
    headers = normalise_headers(msg.headers())
    key, value = msg.key(), msg.value()
    return Record(
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=headers,
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp=msg.timestamp()[1] / 1000,
    )


_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def _coordinator_busy(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _COORDINATOR_BUSY
