"""Prometheus metrics on an injected registry. Bounded labels only: never a user id.

Names follow `iterable_consumer_<noun>_<unit|total>` (SPEC §9).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from consumer import __version__
from consumer.endpoints import Endpoint
from consumer.responses import status_class

OUTCOMES: Final = ("ok", "dead_lettered", "duplicate", "stale", "invalid")
# A handoff's previous owner: a profile the device guard remembers holding the token, or none.
PREVIOUS_OWNERS: Final = ("known", "unknown")
_BULK_BUCKETS: Final = (1, 10, 50, 100, 250, 500, 750, 1000)
_COALESCED_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 1000)  # coalesce.MAX_EVENTS*
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric the service exports; also the Iterable client's `CallObserver`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        p = "iterable_consumer_"
        self.consumed = Counter(
            f"{p}events_consumed", "Messages received from Kafka.", ["topic"], registry=registry
        )
        self.processed = Counter(
            f"{p}events_processed",
            "Messages finished, by outcome.",
            ["topic", "outcome"],
            registry=registry,
        )
        self.requests = Counter(
            f"{p}iterable_requests",
            "Iterable HTTP requests by endpoint and status class.",
            ["endpoint", "status_class"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{p}iterable_request_duration_seconds",
            "Iterable request latency.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            f"{p}iterable_retries",
            "Iterable calls retried, by reason.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.pacing_waits = Counter(
            f"{p}rate_limiter_waits",
            "Calls that waited for the client-side rate limiter.",
            ["endpoint"],
            registry=registry,
        )
        self.pacing_seconds = Counter(
            f"{p}rate_limiter_wait_seconds",
            "Time spent waiting for the rate limiter.",
            ["endpoint"],
            registry=registry,
        )
        self.pace_limit = Gauge(
            f"{p}pace_limit_requests_per_second",
            "The pace ceiling of each endpoint: the project's limit times this pod's share.",
            ["endpoint"],
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{p}in_flight_events",
            "Iterable calls under way, pacing waits included (a bulkUpdate request counts once).",
            registry=registry,
        )
        self.bulk_users = Histogram(
            f"{p}bulk_request_users",
            "Users per bulkUpdate request (bulk mode).",
            buckets=_BULK_BUCKETS,
            registry=registry,
        )
        self.user_update_events = Histogram(
            f"{p}user_update_events",
            "user.changed events per users/update call or bulk entry (coalesced).",
            buckets=_COALESCED_BUCKETS,
            registry=registry,
        )
        self.buffered = Gauge(
            f"{p}buffered_events", "Events received and not yet finished.", registry=registry
        )
        self.paused = Gauge(
            f"{p}paused_partitions", "Partitions paused for backpressure.", registry=registry
        )
        self.committed = Gauge(
            f"{p}committed_offset",
            "Last committed offset.",
            ["topic", "partition"],
            registry=registry,
        )
        self.lag_records = Gauge(
            f"{p}lag_records",
            "Records between the committed offset and the end.",
            ["topic", "partition"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            f"{p}lag_seconds",
            "Age of the oldest unfinished event, 0 when caught up.",
            ["topic", "partition"],
            registry=registry,
        )
        self.commits = Counter(
            f"{p}commits", "Offset commits by result.", ["result"], registry=registry
        )
        self.rebalances = Counter(
            f"{p}rebalances", "Partition assignment changes by kind.", ["kind"], registry=registry
        )
        self.offset_resets = Counter(
            f"{p}offset_resets",
            "Times a partition's offsets went backwards (log truncation, offset reset).",
            ["topic"],
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{p}dead_letters",
            "Messages written to a dead-letter topic.",
            ["topic"],
            registry=registry,
        )
        self.handoffs = Counter(
            f"{p}device_handoffs",
            "Registrations applied as a handoff (exclusive token ownership: disableDevice with"
            " the token alone first); previous_owner=known when the token was remembered"
            " enabled on another profile.",
            ["previous_owner"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            f"{p}dead_letter_circuit_open",
            "1 while the dead-letter circuit breaker is open.",
            registry=registry,
        )
        self.credentials_failed = Gauge(
            f"{p}credentials_failed",
            "1 while Iterable rejects the API key (401/403).",
            registry=registry,
        )
        self.copartitioned = Gauge(
            f"{p}device_topics_copartitioned",
            "1 when both device topics have the same partition count (checked at start), else 0.",
            registry=registry,
        )
        self.last_poll = Gauge(
            f"{p}last_poll_timestamp_seconds",
            "When the consumer last polled Kafka.",
            registry=registry,
        )
        self.build_info = Gauge(
            f"{p}build_info", "Build information.", ["version"], registry=registry
        )
        self.build_info.labels(version=__version__).set(1)
        ProcessCollector(registry=registry)  # CPU and memory for the saturation panels

    def start_at_zero(self, topics: Iterable[str]) -> None:
        """Export every known label set at 0 from the start: a series born at its first
        increment never shows that increment to rate(), so the first dead letters, 429s
        or retries would reach no panel and no alert."""
        for topic in topics:
            self.child(self.consumed, topic)
            self.dead_letters.labels(topic=topic)
            for outcome in OUTCOMES:
                self.child(self.processed, topic, outcome)
        for endpoint in Endpoint:
            for status in (200, 400, 500, None):
                self.child(self.requests, endpoint.value, status_class(status))
            for reason in ("429", "408", "5xx", "timeout", "network"):
                self.retries.labels(endpoint=endpoint.value, reason=reason)
            self.pacing_waits.labels(endpoint=endpoint.value)
            self.pacing_seconds.labels(endpoint=endpoint.value)
        for result in ("ok", "failed"):
            self.commits.labels(result=result)
        for kind in ("assign", "revoke", "lost"):
            self.rebalances.labels(kind=kind)
        for previous in PREVIOUS_OWNERS:
            self.handoffs.labels(previous_owner=previous)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, remembered: labels() costs microseconds per event, and
        the label sets here are few (topics, outcomes, endpoints, status classes)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    # -- CallObserver ---------------------------------------------------------------------

    def response(self, endpoint: str, status: int | None, seconds: float) -> None:
        self.child(self.requests, endpoint, status_class(status)).inc()
        self.child(self.latency, endpoint).observe(seconds)

    def retry(self, endpoint: str, reason: str) -> None:
        self.retries.labels(endpoint=endpoint, reason=reason).inc()

    def paced(self, endpoint: str, seconds: float) -> None:
        self.pacing_waits.labels(endpoint=endpoint).inc()
        self.pacing_seconds.labels(endpoint=endpoint).inc(seconds)

    # -- librdkafka statistics ------------------------------------------------------------

    def kafka_statistics(self, stats_json: str) -> None:
        """Per-partition lag in records from librdkafka's statistics callback."""
        stats: dict[str, Any] = json.loads(stats_json)
        for topic, info in stats.get("topics", {}).items():
            for partition, pstats in info.get("partitions", {}).items():
                if partition == "-1" or pstats.get("consumer_lag", -1) < 0:
                    continue
                self.lag_records.labels(topic=topic, partition=partition).set(
                    pstats["consumer_lag"]
                )
