"""`iterable-consumer check` and `dlq replay` as real processes against real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import Topics, all_committed, consumer_env, create_topics, wait_for
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record
from consumer.dlq import DeadLetter, dead_letter, smaller
from consumer.errors import InvalidEvent

Start = Callable[..., ConsumerProcess]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _env(
    kafka: KafkaTools, emulator: EmulatorProcess, topics: dict[str, str], key: str
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ITERABLE_API_KEY": key,
        "ITERABLE_BASE_URL": emulator.url,
        "ITERABLE_ALLOW_INSECURE_HTTP": "true",  # the emulator speaks plain http
        "TOPIC_USER_CHANGED": topics["user.changed"],
        "TOPIC_DEVICE_REGISTERED": topics["device.registered"],
        "TOPIC_PUSH_REVOKED": topics["push.permission.revoked"],
    }


def test_check_passes_line_by_line_when_everything_answers(
    kafka: KafkaTools, emulator: EmulatorProcess
) -> None:
    topics = create_topics(kafka).names
    result = _cli("check", env=_env(kafka, emulator, topics, emulator.api_key))
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == 6  # configuration, kafka, three topics, iterable
    assert all(line.startswith("ok") for line in lines)


def test_check_fails_with_one_clear_line_for_a_wrong_key_and_a_missing_topic(
    kafka: KafkaTools, emulator: EmulatorProcess
) -> None:
    topics = {**create_topics(kafka).names, "user.changed": "no-such-topic"}
    result = _cli("check", env=_env(kafka, emulator, topics, "wrong-key"))
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 2
    assert "no-such-topic" in failures[0]
    assert "401" in failures[1]
    assert "wrong-key" not in result.stdout + result.stderr


def test_check_reports_bad_configuration_on_one_line(kafka: KafkaTools) -> None:
    result = _cli(
        "check",
        env={
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "ITERABLE_API_KEY": "",
            "ITERABLE_REGION": "mars",
        },
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAIL configuration: ITERABLE_REGION: Input should be 'us' or 'eu'"
    ]


def test_dlq_replay_republishes_the_original_message_once(
    kafka: KafkaTools, emulator: EmulatorProcess
) -> None:
    topics = create_topics(kafka).names
    source = topics["user.changed"]
    letter = dead_letter(
        dlq_topic=f"{source}.dlq",
        source_topic=source,
        partition=0,
        offset=7,
        key=b"u-1",
        value=b'{"fixed": true}',
        headers=(("ce_id", b"e-1"),),
        error=InvalidEvent("data", "broken"),
        attempts=0,
        failed_at=0.0,
    )
    kafka.produce(letter.topic, [Record(letter.key, letter.value, letter.headers)])
    env = {
        **_env(kafka, emulator, topics, emulator.api_key),
        "KAFKA_GROUP_ID": kafka.unique_name("g"),
    }

    first = _cli("dlq", "replay", "--topic", letter.topic, env=env)
    assert first.returncode == 0, first.stderr
    assert "re-published 1 message(s)" in first.stdout
    replayed = kafka.read_all(source)
    assert [(r.key, r.value, r.headers) for r in replayed] == [
        (b"u-1", b'{"fixed": true}', (("ce_id", b"e-1"),))
    ]

    again = _cli("dlq", "replay", "--topic", letter.topic, env=env)
    assert "re-published 0 message(s)" in again.stdout
    assert len(kafka.read_all(source)) == 1


def test_check_and_start_say_plainly_when_the_device_topics_are_not_co_partitioned(
    kafka: KafkaTools, emulator: EmulatorProcess, consumers: list[ConsumerProcess]
) -> None:
    topics = create_topics(kafka)
    revoked = kafka.create_topic(kafka.unique_name("revoked"), 2)
    topics = Topics({**topics.names, "push.permission.revoked": revoked})
    result = _cli("check", env=_env(kafka, emulator, topics.names, emulator.api_key))
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1
    assert "not co-partitioned" in failures[0]
    assert f"{revoked} has 2" in failures[0]

    process = ConsumerProcess(
        consumer_env(kafka, emulator, kafka.unique_name("group"), topics.env())
    ).start()
    consumers.append(process)
    process.wait_ready()
    assert "iterable_consumer_device_topics_copartitioned 0.0" in process.metrics()
    lines = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
    assert any(line["level"] == "error" and "not co-partitioned" in line["event"] for line in lines)


def test_a_consumer_on_co_partitioned_device_topics_reports_it(
    kafka: KafkaTools, emulator: EmulatorProcess, consumers: list[ConsumerProcess]
) -> None:
    topics = create_topics(kafka)
    process = ConsumerProcess(
        consumer_env(kafka, emulator, kafka.unique_name("group"), topics.env())
    ).start()
    consumers.append(process)
    process.wait_ready()
    assert "iterable_consumer_device_topics_copartitioned 1.0" in process.metrics()


def _letter(source: str, partition: int, key: bytes, source_timestamp: float | None) -> Record:
    letter = dead_letter(
        dlq_topic=f"{source}.dlq",
        source_topic=source,
        partition=partition,
        offset=3,
        key=key,
        value=b'{"n": %d}' % partition,
        headers=(),
        error=InvalidEvent("data", "broken"),
        attempts=0,
        failed_at=0.0,
        source_timestamp=source_timestamp,
    )
    return Record(letter.key, letter.value, letter.headers)


def test_dlq_replay_puts_each_record_back_on_its_partition_with_its_timestamp(
    kafka: KafkaTools, emulator: EmulatorProcess
) -> None:
    topics = create_topics(kafka).names
    source = topics["device.registered"]
    old = 1_700_000_000.25  # the source message's timestamp, long before the replay
    letters = []
    for n in range(6):
        key = f"tok-{n}".encode()
        # Never where librdkafka's partitioner (CRC32 of the key) would put it.
        partition = (zlib.crc32(key) % 3 + 1) % 3
        if n % 2:  # a letter with `dlq.source.timestamp`
            letters.append(_letter(source, partition, key, old + n))
        else:  # an older letter without it: its own timestamp (when it failed) stands in
            letters.append(replace(_letter(source, partition, key, None), timestamp=old + n))
    kafka.produce(f"{source}.dlq", letters)
    env = {
        **_env(kafka, emulator, topics, emulator.api_key),
        "KAFKA_GROUP_ID": kafka.unique_name("g"),
    }

    done = _cli("dlq", "replay", "--topic", f"{source}.dlq", env=env)
    assert done.returncode == 0, done.stderr
    replayed = {r.key: r for r in kafka.read_all(source)}
    assert len(replayed) == 6
    for n, letter in enumerate(letters):
        copy = replayed[letter.key]
        assert copy.value == letter.value
        assert copy.partition == (zlib.crc32(letter.key or b"") % 3 + 1) % 3
        assert copy.timestamp == old + n
        assert copy.headers == ()


def test_a_replayed_registration_without_time_does_not_undo_a_later_revocation(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    """Events without `time` are ordered by their Kafka timestamp: a registration that
    failed, replayed after the device was revoked, must not look newest and re-enable it."""
    token, ids = "tok-r", {"userId": "u1", "email": "user1@example.com"}

    def event(event_type: str, n: int, data: Mapping[str, object]) -> Record:
        envelope = {"specversion": "1.0", "id": f"e{n}", "source": "/t", "type": event_type}
        return Record(token.encode(), json.dumps({**envelope, "data": data}).encode())

    def device_enabled() -> bool | None:
        user = emulator.user_by_id("u1")
        devices = (user or {}).get("dataFields", {}).get("devices", [])
        return next((d["endpointEnabled"] for d in devices if d["token"] == token), None)

    device = {"token": token, "platform": "APNS", "applicationName": "App"}
    registration = {**ids, "device": device}
    start(emulator)
    kafka.produce(topics.names["device.registered"], [event("device.registered", 1, registration)])
    wait_for(lambda: device_enabled() is True, 30, "the device registered")
    # Iterable refuses the re-registration (say a bad deploy): it is dead-lettered.
    emulator.faults(error_rates={"400": 1.0})
    again = {**ids, "device": {**device, "dataFields": {"appVersion": "2"}}}
    kafka.produce(topics.names["device.registered"], [event("device.registered", 2, again)])
    dlq = topics.dlq("device.registered")
    wait_for(lambda: kafka.end_offsets(dlq)[0] == 1, 30, "the registration dead-lettered")
    emulator.faults(error_rates={})
    revocation = {"token": token, "userId": "u1"}
    kafka.produce(
        topics.names["push.permission.revoked"], [event("push.permission.revoked", 3, revocation)]
    )
    wait_for(lambda: device_enabled() is False, 30, "the device revoked")

    env = {**_env(kafka, emulator, topics.names, emulator.api_key), "KAFKA_GROUP_ID": group_id}
    done = _cli("dlq", "replay", "--topic", dlq, env=env)
    assert "re-published 1 message(s)" in done.stdout, done.stderr
    wait_for(lambda: all_committed(kafka, group_id, topics), 30, "the replayed registration read")
    assert device_enabled() is False


def test_dlq_replay_never_republishes_a_letter_written_without_its_value(
    kafka: KafkaTools, emulator: EmulatorProcess
) -> None:
    """A letter cut for size has no value: re-published, it would be an empty message (on
    a compacted topic, a tombstone deleting the key's events); replay names it instead."""
    topics = create_topics(kafka).names
    source = topics["user.changed"]
    record = _letter(source, 0, b"u-1", None)
    cut = smaller(DeadLetter(f"{source}.dlq", record.key, record.value, record.headers))
    assert cut is not None
    kafka.produce(cut.topic, [Record(cut.key, cut.value, cut.headers)])
    env = {
        **_env(kafka, emulator, topics, emulator.api_key),
        "KAFKA_GROUP_ID": kafka.unique_name("g"),
    }

    done = _cli("dlq", "replay", "--topic", cut.topic, env=env)
    assert done.returncode == 0, done.stderr
    assert kafka.read_all(source) == []
    assert "re-published 0 message(s)" in done.stdout
    assert f"{source}[0]@3" in done.stderr  # where the original still is
