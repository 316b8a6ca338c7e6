"""The Kafka side on the default configuration: dead letters of every size, commits across
rebalances, fatal client errors, look-back over transaction markers, and the log.

Each consumer runs as a real process against the real broker and the emulator.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import (
    StreamBuilder,
    Topics,
    all_committed,
    expected_state,
    normalise,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record
from consumer.lookback import read_back

Start = Callable[..., ConsumerProcess]


def _metric(process: ConsumerProcess, name: str) -> float:
    lines = [line for line in process.metrics().splitlines() if line.startswith(name)]
    return sum(float(line.split()[-1]) for line in lines)


@pytest.mark.parametrize(
    ("size", "topic_limit"),
    [
        # Over librdkafka's message.max.bytes (1,000,000), under CONSUMER_MAX_EVENT_BYTES.
        (1_020_000, None),
        # A source topic that allows bigger messages than the dead-letter topic does.
        (2 * 1024 * 1024, "3145728"),
    ],
)
def test_a_message_too_large_for_the_dead_letter_topic_is_dead_lettered_without_its_value(
    kafka: KafkaTools,
    group_id: str,
    topics: Topics,
    emulator: EmulatorProcess,
    start: Start,
    size: int,
    topic_limit: str | None,
) -> None:
    if topic_limit is not None:
        big = kafka.create_topic(
            kafka.unique_name("big.user.changed"), 3, config={"max.message.bytes": topic_limit}
        )
        kafka.create_topic(f"{big}.dlq", 1)
        topics = Topics({**topics.names, "user.changed": big})
    events = StreamBuilder(users=5).events(40, user_changed_only=True)
    records = [Record(e.record.key, e.record.value, partition=0) for e in events]
    huge = Record(b"huge", b"x" * size, partition=0)  # not JSON: an invalid event
    # The test's producer may send what the service's default producer may not.
    KafkaTools(kafka.bootstrap_servers, {"message.max.bytes": "4000000"}).produce(
        topics.names["user.changed"], [*records[:20], huge, *records[20:]]
    )
    start(emulator, **topics.env())
    wait_for(lambda: all_committed(kafka, group_id, topics), 60, "offsets committed to the end")

    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    [letter] = kafka.read_all(topics.dlq("user.changed"))
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"huge", None)
    assert headers["dlq.value.omitted"] == b"true"
    assert headers["dlq.value.bytes"] == str(size).encode()
    assert headers["dlq.source.topic"] == topics.names["user.changed"].encode()
    assert headers["dlq.source.partition"] == b"0"
    assert headers["dlq.source.offset"] == b"20"
    assert headers["dlq.error.class"] == b"InvalidEvent"


def test_members_joining_and_leaving_commit_to_the_end_within_seconds_of_the_last_event(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    # Slow enough that the stream outlives the rebalances (done some 15 s in): one call at a
    # time per user at 250 ms, so 10 users' 1,600 events take some 25 s, coalesced.
    emulator.faults(latency_ms=250)
    events = StreamBuilder(users=10).events(1600)
    produce(kafka, topics, events)
    first = start(emulator)
    wait_for(lambda: len(emulator.calls()) > 100, 60, "progress")
    second, third = start(emulator), start(emulator)
    wait_for(lambda: assigned(second) and assigned(third), 60, "three members assigned")
    calls = len(emulator.calls())
    wait_for(lambda: len(emulator.calls()) > calls + 200, 60, "progress with three members")
    assert second.terminate() == 0  # one leaves, one joins: two more rebalances
    fourth = start(emulator)
    wait_for(lambda: assigned(fourth), 60, "the new member assigned partitions")
    assert len(emulator.calls()) < len(events)  # the stream outlived the rebalances

    # All work done: every event reached its final state, devices included.
    expected = expected_state(events, "hybrid")
    wait_for(
        lambda: normalise(emulator.state()["users"]) == expected,
        120,
        "the final state",
    )
    wait_for(lambda: all_processed([first, third, fourth]), 60, "all work finished")
    wait_for(lambda: all_committed(kafka, group_id, topics), 5, "commits reaching the end")


def consumed(process: ConsumerProcess) -> float:
    return _metric(process, "iterable_consumer_events_consumed_total")


def assigned(process: ConsumerProcess) -> bool:
    return _metric(process, 'iterable_consumer_rebalances_total{kind="assign"}') > 0


def all_processed(members: list[ConsumerProcess]) -> bool:
    """Nothing received and left unfinished in any member."""
    return all(_metric(m, "iterable_consumer_buffered_events") == 0 for m in members)


def test_a_fenced_static_member_stops_with_a_non_zero_exit_and_its_successor_finishes(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    events = StreamBuilder(users=20).events(300)
    produce(kafka, topics, events[:100])
    # Static membership is how a fatal consumer error happens for real: under the classic
    # protocol a newer process with the same group.instance.id fences the older one
    # (librdkafka: fatal error). The next-generation protocol refuses the newcomer instead.
    static = {
        "KAFKA_CONFIG_GROUP_INSTANCE_ID": "pod-0",
        "KAFKA_GROUP_PROTOCOL": "classic",
        "KAFKA_CONFIG_SESSION_TIMEOUT_MS": "6000",  # the client's own under classic
        "KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS": "500",
    }
    first = start(emulator, **static)
    try:
        wait_for(lambda: consumed(first) > 0, 60, "the first member consuming")
    except TimeoutError:
        pytest.fail(f"the first member never consumed:\n{first.logs()[-3000:]}")
    successor = start(emulator, **static)
    assert first.process is not None
    try:
        code = first.process.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the fenced member kept running:\n{first.logs()[-4000:]}")
    assert code != 0
    assert any(
        json.loads(line).get("event") == "fatal Kafka consumer error; stopping"
        for line in first.logs().splitlines()
    )
    produce(kafka, topics, events[100:])
    wait_for(lambda: all_committed(kafka, group_id, topics), 90, "the successor finishing")
    assert successor.probe("/livez") == 200
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")


def test_look_back_ends_at_once_when_the_last_record_is_a_transaction_marker(
    kafka: KafkaTools, group_id: str
) -> None:
    topic = kafka.create_topic(kafka.unique_name("device.registered"), 1)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": kafka.unique_name("tx")}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(5):
        producer.produce(topic, value=json.dumps({"n": n}).encode(), key=b"k")
    producer.commit_transaction(30)
    # Five records and the commit marker, which the coordinator writes after the commit
    # returns (the read-committed end stays below it until then).
    end = 6
    wait_for(lambda: kafka.end_offsets(topic)[0] == end, 30, "the commit marker")
    config = {"bootstrap.servers": kafka.bootstrap_servers, "group.id": group_id}
    committer = Consumer(config)
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, end)], asynchronous=False)
    finally:
        committer.close()

    started = time.monotonic()
    history = read_back(config, [topic], {0}, records=100)
    assert [d.offset for d in history] == [0, 1, 2, 3, 4]
    assert time.monotonic() - started < 10  # the read waited 30 s for offset 5 before


def test_every_line_the_service_writes_is_json_librdkafka_included(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    events = StreamBuilder(users=5).events(50)
    produce(kafka, topics, events)
    # A consumer-only property reaches every client, so the dead-letter producer's
    # librdkafka warns that it ignores it: a log line from librdkafka itself.
    process = start(emulator, KAFKA_CONFIG_FETCH_WAIT_MAX_MS="500")
    wait_for(lambda: all_committed(kafka, group_id, topics), 60, "offsets committed to the end")
    assert process.terminate() == 0
    lines = [line for line in process.logs().splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line[:200]}")
    assert any(entry["logger"] == "librdkafka" for entry in entries)
