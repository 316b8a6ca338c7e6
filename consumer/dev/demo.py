"""The embedded default: a local broker, the emulator and the consumer, fed the examples.

    python -m consumer.dev.demo        (or ./scripts/demo, which sets up first)

Publishes every event under `schemas/examples/valid/`, a few invalid ones and one sent
twice, waits until the consumer committed them, prints what became of each event
(applied, skipped, dead-lettered with its reason), the resulting Iterable profiles (read
through the emulator's GET endpoints) and the metrics URL, then keeps everything running
until Ctrl-C and stops it in order.
"""

from __future__ import annotations

import json
import signal
import threading
import time

from consumer.dev import demo_report
from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.examples import Example, load
from consumer.dev.kafka import LocalKafka
from consumer.dev.scenario import TYPES, Topics, all_committed
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record

TOPICS = Topics({t: t for t in TYPES})  # the default names of SPEC §1
GROUP = "iterable-consumer-demo"
# Bad messages happen: these show what the consumer does with them.
INVALID = (
    "user.changed/19-bad-json",
    "user.changed/11-invalid-email",
    "device.registered/01-wrong-type",
)


def _examples() -> list[Example]:
    """The valid examples, a few invalid ones, and the first valid one sent twice."""
    valid = load("valid")
    invalid = [e for e in load("invalid") if e.name in INVALID]
    return [*valid, *invalid, valid[0]]


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting a local Kafka broker and the Iterable emulator…", flush=True)
    with LocalKafka() as broker, EmulatorProcess() as emulator:
        kafka = KafkaTools(broker.bootstrap_servers)
        for topic in TOPICS.names:
            kafka.create_topic(topic, partitions=3)
            kafka.create_topic(f"{topic}.dlq")
        consumer = ConsumerProcess(
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "KAFKA_GROUP_ID": GROUP,
                "ITERABLE_API_KEY": emulator.api_key,
                "ITERABLE_BASE_URL": emulator.url,
                "ITERABLE_ALLOW_INSECURE_HTTP": "true",  # the local emulator speaks plain http
                # JSON at debug: one "message finished" line per event feeds the table.
                "LOG_LEVEL": "debug",
            }
        ).start()
        try:
            consumer.wait_ready()
            examples = _examples()
            for topic in TOPICS.names:
                records = [
                    Record(e.key, e.value, e.headers) for e in examples if e.event_type == topic
                ]
                kafka.produce(topic, records)
            print(
                f"published {len(examples)} example events; waiting for the consumer…", flush=True
            )
            deadline = time.monotonic() + 60
            while (
                not all_committed(kafka, GROUP, TOPICS)
                and time.monotonic() < deadline
                and not stop.is_set()
            ):
                time.sleep(0.2)
            _report(kafka, examples, consumer)
            print("\nIterable profiles now (GET /api/users/getByEmail and /byUserId):")
            for user in emulator.state()["users"]:
                found = (
                    emulator.user_by_email(user["email"])
                    if "email" in user
                    else emulator.user_by_id(user["userId"])
                )
                print(json.dumps(found, ensure_ascii=False))
            print(f"\nmetrics:   {consumer.url}/metrics")
            print(f"readiness: {consumer.url}/readyz")
            print(f"consumer log: {consumer.log_path}")
            print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}  emulator: {emulator.url}")
            print("running; Ctrl-C stops everything", flush=True)
            stop.wait()
        finally:
            print("stopping…", flush=True)
            consumer.stop()
            del kafka  # its admin client would report the broker going away on the terminal
    return 0


def _report(kafka: KafkaTools, examples: list[Example], consumer: ConsumerProcess) -> None:
    published = {topic: kafka.read_all(topic) for topic in TOPICS.names}
    letters = [r for topic in TOPICS.names for r in kafka.read_all(TOPICS.dlq(topic))]
    table = demo_report.rows(
        published,
        examples,
        demo_report.finished(consumer.log_path),
        demo_report.reasons(letters),
    )
    print("\nWhat became of each event:")
    print(demo_report.render(table))


if __name__ == "__main__":
    raise SystemExit(main())
