"""A scripted run for watching the dashboard and alerts: traffic and faults, in order.

One consumer on the default configuration, a broker and the emulator; the script is a mix
of normal events, an Iterable outage while old events wait, a 429 storm, a burst that the
client's pace holds back, poison events, a wrong API key, and last a poison flood. The
device topics differ in partition count on purpose. Used by
tests/integration/test_prometheus.py and scripts/dashboard_snapshot, which bring the
Prometheus that watches it; `firing` asks that Prometheus whether an alert fires, so a
fault is lifted as soon as the alert it should raise is up, never after a fixed sleep.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Producer

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import (
    TYPES,
    StreamBuilder,
    Topics,
    all_committed,
    consumer_env,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record

FILES: Final = Path(__file__).resolve().parents[2] / "helm" / "iterable-consumer" / "files"
DASHBOARD: Final = FILES / "dashboards" / "iterable-consumer.json"
RULES: Final = FILES / "rules" / "iterable-consumer.rules.yaml"
# The labels a PodMonitor would add, which the dashboard's variables select on.
NAMESPACE: Final = "observed"
POD: Final = "iterable-consumer-0"
# Grafana's $__rate_interval is max(4 * scrape interval, 15 s + scrape interval) → 16 s at 1 s.
RATE_INTERVAL: Final = "16s"
# Partition counts: the device topics differ, so the co-partitioning alert has cause.
PARTITIONS: Final = {"user.changed": 3, "device.registered": 3, "push.permission.revoked": 2}
OLD_EVENT_AGE_SECONDS: Final = 400  # beyond IterableConsumerLagHigh's 300 s


@dataclass(frozen=True)
class Panel:
    row: str
    title: str
    unit: str
    kind: str  # Grafana panel type: timeseries or stat
    targets: tuple[tuple[str, str], ...]  # (expr, legendFormat)


def dashboard_panels() -> list[Panel]:
    """Every panel of the shipped dashboard with its row, in dashboard order."""
    row = ""
    panels: list[Panel] = []
    for item in json.loads(DASHBOARD.read_text())["panels"]:
        if item["type"] == "row":
            row = item["title"]
            continue
        targets = tuple((t["expr"], t.get("legendFormat", "")) for t in item.get("targets", []))
        unit = item.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        panels.append(Panel(row, item["title"], unit, item["type"], targets))
    return panels


def concrete(expr: str, pod: str = ".*") -> str:
    """A panel query as Grafana sends it for this run's namespace and pod selection."""
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", NAMESPACE)
        .replace("$pod", pod)
    )


@dataclass
class Phase:
    name: str
    start: float  # wall-clock seconds
    end: float = 0.0


@dataclass
class ObservedRun:
    """The script, on its own topics and group; `run(firing)` plays it."""

    kafka: KafkaTools
    emulator: EmulatorProcess
    say: Callable[[str], None] = print
    phases: list[Phase] = field(default_factory=list)
    stream: StreamBuilder = field(default_factory=lambda: StreamBuilder(users=200))
    topics: Topics = field(init=False)
    consumer: ConsumerProcess = field(init=False)
    group: str = field(init=False)
    _answers: Callable[[str], bool] = field(init=False, default=lambda _: False)

    def __post_init__(self) -> None:
        prefix = self.kafka.unique_name("observed")
        names = {}
        for event_type in TYPES:
            names[event_type] = self.kafka.create_topic(
                f"{prefix}.{event_type}", PARTITIONS[event_type]
            )
            self.kafka.create_topic(f"{names[event_type]}.dlq", 1)
        self.topics = Topics(names)
        self.group = self.kafka.unique_name("observed")
        env = consumer_env(self.kafka, self.emulator, self.group, self.topics.env())
        self.consumer = ConsumerProcess(env)  # its metrics port is known before it starts

    def warm_up(self) -> None:
        """Start the consumer and let it apply and commit some normal traffic.

        Before Prometheus watches: IterableConsumerStalled asks whether a partition's
        committed offset changed in 15 min, a window the run cannot shorten, so it looks at
        a steady state whose last commit is older than everything Prometheus holds.
        """
        self.consumer.start()
        self.consumer.wait_ready()
        self._produce_and_settle(self.stream.events(300))

    def run(self, answers: Callable[[str], bool]) -> list[Phase]:
        """Play the script; `answers(promql)` says whether Prometheus returns a series."""
        self._answers = answers
        # A few samples of the calm state first, so lag's rise and rates have a baseline.
        self._await("min(count_over_time(iterable_consumer_committed_offset[1m])) >= 3")
        with self._phase("Iterable outage, old events waiting"):
            self.emulator.faults(outage_seconds=300)  # lifted below, once the alerts are up
            self._produce_aged(self.stream.events(150, user_changed_only=True))
            for alert in (
                "IterableConsumerLagHigh",
                "IterableApiErrorBudgetBurnFast",
                "IterableApiErrorBudgetBurnSlow",
                "IterableConsumerStalled",
            ):
                self._await_firing(alert)
            self.emulator.faults(outage_seconds=0)
            self._settle()
        with self._phase("429 storm"):
            # Short and narrow: pacing waits are reserved at the cut rate and not shortened
            # as it recovers: a 5 s storm over 64 calls in flight held them over a minute.
            seen = len(self.emulator.calls())
            self.emulator.faults(throttle_seconds=60)  # lifted after the first 429s
            produce(self.kafka, self.topics, self.stream.events(30))
            wait_for(
                lambda: sum(c["status"] == 429 for c in self.emulator.calls(seen)) >= 20,
                30,
                "Iterable's 429s",
            )
            self.emulator.faults(throttle_seconds=0)
            self._settle()
        with self._phase("normal traffic"):
            self._produce_and_settle(self.stream.events(300))
        with self._phase("burst (client pace binds)"):
            self._produce_and_settle(self.stream.events(4000, user_changed_only=True))
        with self._phase("poison events"):
            events = self.stream.events(100)
            poison = [Record(f"bad-{i}".encode(), b"{not json") for i in range(10)]
            produce(self.kafka, self.topics, events)
            self.kafka.produce(self.topics.names["user.changed"], poison)
            self._settle()
            self._await_firing("IterableConsumerDeadLetters")
        with self._phase("wrong API key"):
            self.emulator.faults(api_keys=["rotated-elsewhere"])
            produce(self.kafka, self.topics, self.stream.events(50))
            self._await_firing("IterableCredentialsRejected")
            self.emulator.faults(api_keys=[self.emulator.api_key])
            self._settle()
        with self._phase("poison flood"):
            # More than the burst: the breaker judges dead letters against the last minute.
            flood = [Record(b"flood", b"{not json", partition=0) for _ in range(5000)]
            self.kafka.produce(self.topics.names["user.changed"], flood)
            self._await_firing("IterableConsumerDeadLetterCircuitOpen")
        return self.phases

    def stop(self) -> None:
        self.consumer.stop()

    # -- steps ----------------------------------------------------------------------------

    @contextmanager
    def _phase(self, name: str) -> Iterator[Phase]:
        phase = Phase(name, time.time())
        self.phases.append(phase)
        self.say(f"phase: {name}")
        try:
            yield phase
        finally:
            phase.end = time.time()
            self.say(f"phase: {name} took {phase.end - phase.start:.1f} s")

    def _produce_and_settle(self, events: list[Any]) -> None:
        produce(self.kafka, self.topics, events)
        self._settle()

    def _settle(self, timeout: float = 60.0) -> None:
        wait_for(
            lambda: all_committed(self.kafka, self.group, self.topics),
            timeout,
            "the consumer to commit everything produced",
            interval=0.5,
        )

    def _await(self, expr: str, what: str = "", timeout: float = 60.0) -> None:
        wait_for(lambda: self._answers(expr), timeout, what or expr, interval=0.5)

    def _await_firing(self, alert: str) -> None:
        self._await(f'ALERTS{{alertname="{alert}", alertstate="firing"}}', f"{alert} to fire")

    def _produce_aged(self, events: list[Any]) -> None:
        """Produce with Kafka timestamps from before the run, as a backlog would have."""
        producer = Producer({"bootstrap.servers": self.kafka.bootstrap_servers, "acks": "all"})
        stamp = int((time.time() - OLD_EVENT_AGE_SECONDS) * 1000)
        for event in events:
            record = event.record
            producer.produce(
                self.topics.names[event.event_type],
                value=record.value,
                key=record.key,
                timestamp=stamp,
            )
        if producer.flush(30):
            raise RuntimeError("aged events were not all delivered")
