"""Secrets and personal data stay out of logs, metrics, dead-letter headers and errors."""

from __future__ import annotations

import json
import re

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import all_committed, consumer_env, create_topics, wait_for
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record
from consumer.dlq import HEADER_PREFIX
from consumer.redact import pii

API_KEY = "api-key-MARKER-7f3a9c"
KAFKA_PASSWORD = "kafka-password-MARKER-51d2"
PEOPLE = [(f"person{i}.private@example.com", f"private-user-{i}") for i in range(5)]


def _event(n: int, data: dict[str, object], event_type: str = "user.changed") -> bytes:
    envelope = {
        "specversion": "1.0",
        "id": f"p{n}",
        "source": "/privacy",
        "type": event_type,
        "data": data,
    }
    return json.dumps(envelope).encode()


def test_no_secret_and_no_clear_identifier_leaves_the_service(kafka: KafkaTools) -> None:
    with EmulatorProcess("--quiet", api_key=API_KEY) as emulator:
        topics = create_topics(kafka)
        group = kafka.unique_name("group")
        records = []
        for n, (email, user_id) in enumerate(PEOPLE):
            records.append(Record(user_id.encode(), _event(n, {"email": email, "userId": user_id})))
            # Two good events a person against two bad: under half dead-lettered, so the
            # default dead-letter circuit (half of the stream) stays shut.
            records.append(Record(user_id.encode(), _event(400 + n, {"userId": user_id})))
            # Iterable rejects a field type change: a permanent error whose message we redact.
            records.append(
                Record(
                    user_id.encode(), _event(100 + n, {"userId": user_id, "dataFields": {"age": n}})
                )
            )
            records.append(
                Record(
                    user_id.encode(),
                    _event(200 + n, {"userId": user_id, "dataFields": {"age": "old"}}),
                )
            )
            # Invalid: the bad email must not be echoed.
            records.append(
                Record(user_id.encode(), _event(300 + n, {"email": email.replace("@", " at ")}))
            )
        kafka.produce(topics.names["user.changed"], records)
        env = consumer_env(
            kafka,
            emulator,
            group,
            topics.env(),
            LOG_LEVEL="debug",
            KAFKA_CONFIG_SASL_PASSWORD=KAFKA_PASSWORD,
        )
        env["ITERABLE_API_KEY"] = API_KEY
        process = ConsumerProcess(env).start()
        try:
            wait_for(lambda: all_committed(kafka, group, topics), 60, "the run to finish")
            emulator.faults(api_keys=["another-key"])  # now every call fails with 401
            kafka.produce(
                topics.names["user.changed"],
                [Record(b"k", _event(999, {"userId": "private-user-0"}))],
            )
            wait_for(lambda: process.probe("/readyz") == 503, 30, "the credentials failure")
            metrics = process.metrics()
        finally:
            process.stop()
        logs = process.logs()
        letters = kafka.read_all(topics.dlq("user.changed"))

    added_headers = "\n".join(
        f"{k}={v.decode()}" for r in letters for k, v in r.headers if k.startswith(HEADER_PREFIX)
    )
    assert len(letters) == 10  # 5 type mismatches, 5 invalid emails
    assert "RequestFieldsTypesMismatched" in added_headers
    for surface, text in {
        "logs": logs,
        "metrics": metrics,
        "dead-letter headers": added_headers,
    }.items():
        for secret in (API_KEY, KAFKA_PASSWORD):
            assert secret not in text, f"a secret in {surface}"
        for email, user_id in PEOPLE:
            local = email.split("@")[0]
            assert local not in text, f"an email in {surface}"
            assert not re.search(rf"\b{re.escape(user_id)}\b", text), f"a userId in {surface}"
    # Identifiers appear only in the documented redacted form (dead-letter log lines name the key).
    assert pii(PEOPLE[0][1]) in logs
