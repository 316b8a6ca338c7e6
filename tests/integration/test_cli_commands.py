"""`iterable-consumer check` and `dlq replay` as real processes against real services."""

from __future__ import annotations

import os
import subprocess
import sys

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import create_topics
from consumer.dev.topics import KafkaTools, Record
from consumer.dlq import dead_letter
from consumer.errors import InvalidEvent


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
