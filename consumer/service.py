"""`iterable-consumer run`: build the parts from settings, run them, stop them in order.

The event loop (this thread) runs the processor, the Iterable client and the probes; the
Kafka consumer lives in its own thread (`source`). SIGTERM and SIGINT stop polling, drain
in-flight work within the grace period, commit, and leave the group.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from consumer.backpressure import BufferLimits
from consumer.bulk import BulkLimits
from consumer.config import Settings, rate_overrides, refused_property
from consumer.copartition import copartition_problem
from consumer.dead_letters import DeadLetterProducer
from consumer.dlq import DeadLetterBreaker
from consumer.endpoints import DEFAULT_RATES, Endpoint
from consumer.errors import ConfigError
from consumer.iterable import ClientSettings, IterableClient, base_url
from consumer.messages import Delivery
from consumer.messages import TopicPartition as Where
from consumer.metrics import Metrics
from consumer.ordering import DeviceGuard, DuplicateWindow
from consumer.pacing import LagReader, SharedPace, post
from consumer.probes import make_app, serve
from consumer.processor import Processor, ProcessorSettings
from consumer.shares import FED_BY, FED_BY_EXCLUSIVE
from consumer.source import CLIENT_LOG, KafkaSource, Lookback, consumer_config
from consumer.status import Status
from consumer.translate import Translator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wiring:
    settings: Settings
    kafka: dict[str, str]  # KAFKA_CONFIG_* passthrough


def client_settings(settings: Settings) -> ClientSettings:
    rates: dict[Endpoint, float] = dict(DEFAULT_RATES)
    if settings.iterable_rate_limits == "off":
        rates = {}
    elif settings.iterable_rate_limits:
        for name, rate in rate_overrides(settings.iterable_rate_limits).items():
            rates[Endpoint(name)] = rate
    return ClientSettings(
        rates=rates,
        base_url=base_url(settings.iterable_region, settings.iterable_base_url),
        api_key=settings.iterable_api_key.get_secret_value(),
        max_connections=settings.iterable_max_connections,
        max_in_flight=settings.consumer_max_in_flight,
        connect_timeout=settings.iterable_connect_timeout_seconds,
        read_timeout=settings.iterable_read_timeout_seconds,
        max_attempts=settings.iterable_max_attempts,
        verify=settings.iterable_ca_bundle or True,
    )


def bulk_limits(settings: Settings) -> BulkLimits | None:
    if settings.iterable_user_update_mode != "bulk":
        return None
    return BulkLimits(
        max_users=settings.iterable_bulk_max_users, linger=settings.iterable_bulk_linger_seconds
    )


async def run(wiring: Wiring, registry: CollectorRegistry | None = None) -> int:
    settings = wiring.settings
    loop = asyncio.get_running_loop()
    metrics = Metrics(registry or CollectorRegistry())
    metrics.start_at_zero(settings.topics)
    status = Status()
    client = IterableClient(client_settings(settings), observer=metrics)
    dead_letters = _dead_letter_producer(wiring, status)
    stop = threading.Event()
    translator = Translator(
        settings.iterable_project_type,
        settings.iterable_prefer_user_id,
        settings.iterable_device_token_ownership,
    )

    source: KafkaSource
    processor = Processor(
        ProcessorSettings(
            topics=settings.topics,
            dlq_suffix=settings.dlq_topic_suffix,
            max_event_bytes=settings.consumer_max_event_bytes,
            credentials_probe=settings.consumer_credentials_probe_seconds,
            bulk=bulk_limits(settings),
        ),
        translator=translator,
        client=client,
        dead_letters=dead_letters,
        guard=DeviceGuard(settings.consumer_device_guard_size, exclusive=translator.exclusive),
        duplicates=DuplicateWindow(settings.consumer_dedup_window),
        breaker=DeadLetterBreaker(
            settings.dlq_breaker_ratio,
            settings.dlq_breaker_window_seconds,
            settings.dlq_breaker_min_events,
            settings.dlq_breaker_cooldown_seconds,
        ),
        metrics=metrics,
        status=status,
        complete=lambda delivery, outcome: source.complete(delivery, outcome),  # noqa: PLW0108 - source is built below
    )

    bridge = _LoopBridge(loop, processor)
    pace = SharedPace(
        client,
        settings.topics,
        lambda endpoint, ceiling: metrics.pace_limit.labels(endpoint=endpoint.value).set(ceiling),
        FED_BY_EXCLUSIVE if translator.exclusive else FED_BY,
    )
    device_topics = [settings.topic_device_registered, settings.topic_push_revoked]
    source = KafkaSource(
        consumer_config(
            settings.kafka_bootstrap_servers,
            settings.kafka_group_id,
            wiring.kafka,
            metrics,
            settings.kafka_group_protocol,
        ),
        list(settings.topics),
        deliver=bridge.deliver,
        drain=bridge.drain,
        metrics=metrics,
        status=status,
        limits=BufferLimits(
            settings.consumer_max_buffered, settings.consumer_max_buffered_per_partition
        ),
        commit_interval=settings.consumer_commit_interval_seconds,
        drain_timeout=settings.consumer_revoke_drain_seconds,
        shutdown_grace=settings.consumer_shutdown_grace_seconds,
        lookback=Lookback(device_topics, settings.consumer_device_lookback_records, bridge.restore),
        on_assignment=post(loop, pace.assigned),
    )

    # librdkafka's log lines go into the JSON log, as the consumer's and the producer's do.
    admin = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        **wiring.kafka,
        "logger": CLIENT_LOG,
    }
    await asyncio.to_thread(_check_copartitioned, admin, device_topics, metrics)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopper(stop, signum))
    probes = await serve(
        make_app(metrics.registry, status, settings.consumer_liveness_timeout_seconds),
        settings.metrics_port,
    )
    housekeeping = asyncio.create_task(_housekeeping(processor))
    log.info(
        "started",
        extra={
            "topics": list(settings.topics),
            "group": settings.kafka_group_id,
            "project_type": settings.iterable_project_type,
            "device_token_ownership": settings.iterable_device_token_ownership,
            "metrics_port": settings.metrics_port,
        },
    )
    failures: list[BaseException] = []

    def consume() -> None:
        try:
            source.run(stop)
        except ConfigError as exc:  # raised before consuming began: a usage error
            failures.append(exc)
        except BaseException as exc:
            failures.append(exc)
            log.exception("the Kafka consumer failed")

    thread = threading.Thread(target=consume, name="kafka-source")
    thread.start()
    if client.ceilings():  # pacing on: share the limits by the group's lag
        reader = LagReader(
            admin, settings.kafka_group_id, list(settings.topics), post(loop, pace.read)
        )
        threading.Thread(target=reader.run, args=(stop,), name="lag-reader", daemon=True).start()
    try:
        await asyncio.to_thread(thread.join)
    finally:
        stop.set()
        housekeeping.cancel()
        await asyncio.to_thread(dead_letters.close)
        await client.aclose()
        await probes.cleanup()
    return _exit_code(failures, status)


@dataclass(frozen=True, slots=True)
class _LoopBridge:
    """What the Kafka thread asks of the event loop, each handed over thread-safely."""

    loop: asyncio.AbstractEventLoop
    processor: Processor

    def deliver(self, deliveries: list[Delivery]) -> None:
        self.loop.call_soon_threadsafe(self.processor.submit, deliveries)

    def drain(self, partitions: set[tuple[Where, int]], timeout: float) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self.processor.drain(partitions, timeout), self.loop
        )
        try:
            future.result(timeout + 5)
        except TimeoutError:
            # A busy loop must not cost the Kafka thread: the partitions go uncommitted.
            future.cancel()
            log.warning("drain did not finish in time", extra={"timeout_seconds": timeout})

    def restore(self, history: list[Delivery]) -> None:
        self.loop.call_soon_threadsafe(self.processor.restore, history)


def _dead_letter_producer(wiring: Wiring, status: Status) -> DeadLetterProducer:
    config = {"bootstrap.servers": wiring.settings.kafka_bootstrap_servers, **wiring.kafka}
    try:
        # The first librdkafka client built: it checks the KAFKA_CONFIG_* passthrough.
        return DeadLetterProducer(config, status)
    except KafkaException as exc:
        raise refused_property(exc.args[0].str(), wiring.kafka) from None


def _exit_code(failures: list[BaseException], status: Status) -> int:
    """0 after a requested stop; 1 after a failure; a configuration error is raised."""
    for exc in failures:
        if isinstance(exc, ConfigError):
            raise exc
    failure = status.failure()
    log.info("stopped", extra={"failure": failure} if failure else {})
    return 1 if failures or failure else 0


def _check_copartitioned(config: dict[str, Any], topics: list[str], metrics: Metrics) -> None:
    """Say plainly, once at start, when cross-member device order cannot hold."""
    try:
        metadata = AdminClient(config).list_topics(timeout=10)
    except KafkaException as exc:
        log.warning("could not read the device topics' partitions", extra={"error": str(exc)})
        return
    found = {t: metadata.topics.get(t) for t in topics}
    counts = {t: len(m.partitions) if m and m.error is None else None for t, m in found.items()}
    problem = copartition_problem(counts)
    if None not in counts.values():
        metrics.copartitioned.set(0 if problem else 1)
    if problem is not None:
        log.error(problem)


def _stopper(stop: threading.Event, signum: int) -> Callable[[], None]:
    def handler() -> None:
        if not stop.is_set():
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop.set()

    return handler


async def _housekeeping(processor: Processor) -> None:
    """Close the dead-letter circuit once its cooldown has passed, even when idle."""
    while True:
        processor.check_breaker()
        await asyncio.sleep(0.5)
