"""The real broker the suite stands on: produce, consume, commit, read the commit back."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from consumer.dev.kafka import LocalKafka
from consumer.dev.topics import KafkaTools, Record


def _records(count: int) -> list[Record]:
    return [
        Record(key=f"user-{i % 5}".encode(), value=f'{{"n": {i}}}'.encode()) for i in range(count)
    ]


def test_a_committed_offset_is_read_back_after_consuming(kafka: KafkaTools, group_id: str) -> None:
    topic = kafka.create_topic(kafka.unique_name("broker"), partitions=3)
    kafka.produce(topic, _records(30))
    ends = kafka.end_offsets(topic)
    assert sum(ends.values()) == 30

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    try:
        while seen < 30:
            msg = consumer.poll(10)
            assert msg is not None, f"only {seen} of 30 messages arrived"
            if msg.error():
                raise KafkaException(msg.error())
            seen += 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert kafka.committed(group_id, topic) == ends


def test_an_untouched_group_has_no_committed_offsets(kafka: KafkaTools, group_id: str) -> None:
    topic = kafka.create_topic(kafka.unique_name("broker"), partitions=2)
    assert set(kafka.committed(group_id, topic).values()) == {-1001}


def test_a_three_node_cluster_keeps_accepting_writes_with_one_node_killed() -> None:
    with LocalKafka(nodes=3) as cluster:
        tools = KafkaTools(cluster.bootstrap_servers)
        topic = tools.create_topic(
            "replicated", partitions=3, replication=3, config={"min.insync.replicas": "2"}
        )
        tools.produce(topic, _records(10))
        cluster.kill(2)
        tools.produce(topic, _records(10))
        cluster.start_node(2)
        cluster.wait_ready()
        assert len(tools.read_all(topic)) == 20


def test_the_local_broker_leaves_no_process_behind() -> None:
    cluster = LocalKafka().start()
    processes = [node.process for node in cluster.nodes]
    cluster.stop()
    assert all(p is not None and p.poll() is not None for p in processes)
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0}).list_topics(
            timeout=1
        )
