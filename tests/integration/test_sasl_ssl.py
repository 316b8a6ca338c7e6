"""Kafka over SASL_SSL (SCRAM-SHA-512, a CA made by the test), configured by KAFKA_CONFIG_*."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.kafka import LocalKafka, SaslSsl
from consumer.dev.scenario import (
    StreamBuilder,
    all_committed,
    create_topics,
    expected_state,
    normalise,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools
from tests.integration.pki import KEYSTORE_PASSWORD, Pki, make_pki

USER, PASSWORD = "iterable-consumer", "scram-password-MARKER"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("kafka-pki"))


@pytest.fixture(scope="module")
def secure_kafka(pki: Pki) -> Iterator[LocalKafka]:
    tls = SaslSsl(
        keystore=pki.keystore, keystore_password=KEYSTORE_PASSWORD, users={USER: PASSWORD}
    )
    with LocalKafka(sasl_ssl=tls) as cluster:
        yield cluster


def _client_env(pki: Pki, password: str) -> dict[str, str]:
    return {
        "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_CONFIG_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_CONFIG_SASL_USERNAME": USER,
        "KAFKA_CONFIG_SASL_PASSWORD": password,
        "KAFKA_CONFIG_SSL_CA_LOCATION": str(pki.ca),
    }


def _tools(cluster: LocalKafka, pki: Pki) -> KafkaTools:
    config = {
        k.removeprefix("KAFKA_CONFIG_").lower().replace("_", "."): v
        for k, v in _client_env(pki, PASSWORD).items()
    }
    return KafkaTools(cluster.sasl_ssl_bootstrap_servers, config)


def _env(
    cluster: LocalKafka, emulator: EmulatorProcess, topics: dict[str, str], pki: Pki, password: str
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": cluster.sasl_ssl_bootstrap_servers,
        "ITERABLE_API_KEY": emulator.api_key,
        "ITERABLE_BASE_URL": emulator.url,
        "ITERABLE_ALLOW_INSECURE_HTTP": "true",  # the emulator speaks plain http
        "TOPIC_USER_CHANGED": topics["user.changed"],
        "TOPIC_DEVICE_REGISTERED": topics["device.registered"],
        "TOPIC_PUSH_REVOKED": topics["push.permission.revoked"],
        **_client_env(pki, password),
    }


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "check"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_check_passes_over_sasl_ssl(
    secure_kafka: LocalKafka, pki: Pki, emulator: EmulatorProcess
) -> None:
    topics = create_topics(_tools(secure_kafka, pki)).names
    result = _check(_env(secure_kafka, emulator, topics, pki, PASSWORD))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_password_fails_check_with_one_clear_line(
    secure_kafka: LocalKafka, pki: Pki, emulator: EmulatorProcess
) -> None:
    topics = create_topics(_tools(secure_kafka, pki)).names
    result = _check(_env(secure_kafka, emulator, topics, pki, "wrong-password"))
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1
    assert "authentication" in failures[0].lower()
    assert "wrong-password" not in result.stdout + result.stderr


def test_events_flow_end_to_end_over_sasl_ssl(
    secure_kafka: LocalKafka, pki: Pki, emulator: EmulatorProcess, consumers: list[ConsumerProcess]
) -> None:
    tools = _tools(secure_kafka, pki)
    topics = create_topics(tools)
    events = StreamBuilder(users=10).events(200)
    produce(tools, topics, events)
    group = tools.unique_name("group")
    env = {**_env(secure_kafka, emulator, topics.names, pki, PASSWORD), "KAFKA_GROUP_ID": group}
    process = ConsumerProcess(env).start()
    consumers.append(process)
    wait_for(lambda: all_committed(tools, group, topics), 90, "offsets committed over SASL_SSL")
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    assert PASSWORD not in process.logs()
