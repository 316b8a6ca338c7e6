"""`iterable-consumer check`: configuration, broker, topics and Iterable, one line each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from consumer.config import Settings
from consumer.endpoints import Endpoint
from consumer.errors import IterableError
from consumer.iterable import IterableClient
from consumer.service import client_settings

# A lookup that cannot match a real profile: harmless, and allowed by server-side keys.
PROBE_EMAIL = "iterable-consumer-check@example.invalid"

Report = Callable[[bool, str], None]


def check(settings: Settings, kafka: dict[str, str], report: Report) -> bool:
    """Run every check, reporting each; True when all pass."""
    ok = _kafka(settings, kafka, report)
    return _iterable(settings, report) and ok


def _kafka(settings: Settings, kafka: dict[str, str], report: Report) -> bool:
    admin = AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 0, **kafka}
    )
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        report(
            False, f"kafka: cannot reach {settings.kafka_bootstrap_servers} ({exc.args[0].name()})"
        )
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
    return ok


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
