"""A new user's first run, on the default configuration: a backlog to start on with a few
bad messages in it, Iterable's limits and latency, one and three replicas, a member
replaced mid-drain. Nothing stalls, the circuit stays shut, Iterable ends exact.
"""

from __future__ import annotations

import random

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.examples import load
from consumer.dev.scenario import (
    StreamBuilder,
    Topics,
    all_committed,
    behind,
    consumer_env,
    create_topics,
    events_committed,
    expected_state,
    normalise,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record

PARTITIONS = 6
EVENTS = 6000
POISON = 15  # 0.25% of the stream: bad messages happen, a bad deploy is something else


def _poison(topics: Topics, rng: random.Random) -> dict[str, list[Record]]:
    """Invalid examples spread over every topic and partition, plus one value too large
    for librdkafka's default producer limit (1,000,000 bytes) yet under 1 MiB."""
    invalid = load("invalid")
    batches: dict[str, list[Record]] = {name: [] for name in topics.names.values()}
    for i in range(POISON - 1):
        example = invalid[i % len(invalid)]
        record = Record(b"poison", example.value, example.headers, rng.randrange(PARTITIONS))
        batches[topics.names[example.event_type]].append(record)
    big = Record(b"big", b"{" + b" " * 1_000_100 + b"}", partition=rng.randrange(PARTITIONS))
    batches[topics.names["user.changed"]].append(big)
    return batches


@pytest.mark.parametrize("members", [1, 3])
def test_a_backlog_with_poison_drains_on_the_defaults_without_stalling_or_pausing(
    kafka: KafkaTools,
    group_id: str,
    emulator: EmulatorProcess,
    consumers: list[ConsumerProcess],
    members: int,
) -> None:
    topics = create_topics(kafka, PARTITIONS)
    rng = random.Random(11)
    events = StreamBuilder(users=400).events(EVENTS)
    # The backlog is there before the first consumer starts, poison interleaved with it.
    produce(kafka, topics, events[: EVENTS // 2])
    big_enough = KafkaTools(kafka.bootstrap_servers, {"message.max.bytes": "1048576"})
    for topic, records in _poison(topics, rng).items():
        big_enough.produce(topic, records)
    produce(kafka, topics, events[EVENTS // 2 :])
    emulator.faults(latency_ms=20)  # Iterable's own limits stay on, as in production

    env = consumer_env(kafka, emulator, group_id, topics.env(), LOG_LEVEL="info")
    running = [ConsumerProcess(env).start() for _ in range(members)]
    consumers.extend(running)
    wait_for(
        lambda: events_committed(kafka, group_id, topics) > EVENTS // 3,
        120,
        "a third of the backlog done",
    )
    if members > 1:
        # A member replaced mid-drain: partitions move while their calls are in flight.
        assert running[0].terminate() == 0
        consumers.append(ConsumerProcess(env).start())

    try:
        wait_for(lambda: all_committed(kafka, group_id, topics), 180, "offsets committed")
    except TimeoutError:
        pytest.fail(f"behind (committed, end): {behind(kafka, group_id, topics)}")
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    letters = [r for t in topics.names for r in kafka.read_all(topics.dlq(t))]
    assert sorted(r.key for r in letters if r.key == b"big") == [b"big"]
    assert len([r for r in letters if r.key == b"poison"]) == POISON - 1
    for process in consumers:
        assert "dead-letter circuit open" not in process.logs()
    for process in consumers[1:] if members > 1 else consumers:
        assert process.probe("/readyz") == 200
