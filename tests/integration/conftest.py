"""One real Kafka broker per session; a fresh topic and consumer group per test.

The broker is, in order of preference: the one `KAFKA_BOOTSTRAP_SERVERS` names,
a testcontainers Kafka when a Docker engine answers, or a local KRaft JVM.
A broker that cannot start fails the session: it never turns into skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.kafka import LocalKafka
from consumer.dev.scenario import Topics, consumer_env, create_topics
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools

# Confluent Platform 8.x is Apache Kafka 4.x, KRaft only.
_CONTAINER_IMAGE = "confluentinc/cp-kafka:8.1.0"


# Tests that keep both cores busy (several consumers at full pace, a three-node cluster, a
# Prometheus) or whose figures depend on CPU to spare: pytest-xdist runs them one after
# another on one worker, so at most one of them runs beside the lighter tests.
_HEAVY = {
    "test_bench.py",
    "test_broker.py",
    "test_chaos.py",
    "test_pace.py",
    "test_prometheus.py",
    "test_scale_out.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
            if item.path.name in _HEAVY:
                item.add_marker(pytest.mark.xdist_group("heavy"))


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    explicit = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if explicit:
        yield explicit
    elif _docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415 - only with Docker

        with KafkaContainer(_CONTAINER_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        with LocalKafka() as kafka:
            yield kafka.bootstrap_servers


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str) -> KafkaTools:
    return KafkaTools(kafka_bootstrap)


@pytest.fixture
def group_id(kafka: KafkaTools) -> str:
    return kafka.unique_name("group")


@pytest.fixture(scope="session")
def emulators() -> Iterator[dict[str, EmulatorProcess]]:
    """One emulator per project type for the session; tests reset the one they use."""
    started: dict[str, EmulatorProcess] = {}
    try:
        for kind in ("hybrid", "email", "userId"):
            started[kind] = EmulatorProcess("--quiet", project_type=kind).start()
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest.fixture
def emulator(emulators: dict[str, EmulatorProcess]) -> EmulatorProcess:
    process = emulators["hybrid"]
    process.reset()
    return process


@pytest.fixture
def consumers() -> Iterator[list[ConsumerProcess]]:
    """Consumer processes a test starts; all stopped (or killed) at the end."""
    started: list[ConsumerProcess] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def topics(kafka: KafkaTools) -> Topics:
    return create_topics(kafka)


@pytest.fixture
def start(
    kafka: KafkaTools, group_id: str, topics: Topics, consumers: list[ConsumerProcess]
) -> Callable[..., ConsumerProcess]:
    """Start a consumer process on this test's topics and group (stopped at the end)."""

    def _start(emulator: EmulatorProcess, **extra: str) -> ConsumerProcess:
        env = consumer_env(kafka, emulator, group_id, topics.env(), **extra)
        process = ConsumerProcess(env).start()
        consumers.append(process)
        return process

    return _start
