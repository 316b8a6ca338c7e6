"""`iterable-consumer check`: configuration, broker, topics and Iterable, one line each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from consumer.config import Settings
from consumer.copartition import copartition_problem
from consumer.endpoints import PROBE_EMAIL, Endpoint
from consumer.errors import IterableError
from consumer.iterable import IterableClient
from consumer.service import client_settings

Report = Callable[[bool, str], None]


def check(settings: Settings, kafka: dict[str, str], report: Report) -> bool:
    """Run every check, reporting each; True when all pass."""
    ok = _kafka(settings, kafka, report)
    return _iterable(settings, report) and ok


def _kafka(settings: Settings, kafka: dict[str, str], report: Report) -> bool:
    seen: list[KafkaError] = []
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        **kafka,
        "log_level": 0,
        "error_cb": seen.append,
    }
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        # librdkafka reports a refused login or handshake through error_cb, served by poll().
        admin.poll(1)
        cause = next((e for e in seen if e.code() in _ACCESS), exc.args[0])
        report(False, f"kafka: {settings.kafka_bootstrap_servers}: {_describe(cause)}")
        return False
    report(True, f"kafka: {len(metadata.brokers)} broker(s) at {settings.kafka_bootstrap_servers}")
    ok = True
    for topic, event_type in settings.topics.items():
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            report(False, f"topic {topic} ({event_type}): not found")
            ok = False
        else:
            report(True, f"topic {topic} ({event_type}): {len(found.partitions)} partition(s)")
    devices = (settings.topic_device_registered, settings.topic_push_revoked)
    problem = copartition_problem(
        {t: len(m.partitions) if (m := metadata.topics.get(t)) else None for t in devices}
    )
    if problem is not None:
        report(False, problem)
    return ok and problem is None


_ACCESS = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
)


def _describe(error: KafkaError) -> str:
    if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return "authentication failed (check the SASL username and password)"
    if error.code() == KafkaError._SSL:
        return "TLS handshake failed (check KAFKA_CONFIG_SSL_CA_LOCATION)"
    return f"cannot reach the brokers ({error.name()})"


def _iterable(settings: Settings, report: Report) -> bool:
    config = replace(client_settings(settings), max_attempts=2, read_timeout=10.0)

    async def probe() -> None:
        client = IterableClient(config)
        try:
            await client.get(Endpoint.GET_BY_EMAIL, {"email": PROBE_EMAIL})
        finally:
            await client.aclose()

    try:
        asyncio.run(probe())
    except IterableError as exc:
        report(False, f"iterable: {config.base_url}: {exc}")
        return False
    report(True, f"iterable: {config.base_url} accepts the API key")
    return True
