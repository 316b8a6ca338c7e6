"""The dead-letter producer on a fake producer that refuses like librdkafka and the broker."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from consumer.dead_letters import DeadLetterProducer
from consumer.dlq import DeadLetter
from consumer.status import Status

_LIMIT = 1_000_000  # librdkafka's message.max.bytes default


class FakeProducer:
    """Refuses at produce() above the producer's limit (as librdkafka does), reports the
    broker's answer in poll(): `refuse_with` for every record bigger than `topic_limit`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.topic_limit = _LIMIT
        self.refuse_with: int | None = None
        self.written: list[DeadLetter] = []
        self.attempts = 0
        self._reports: list[tuple[Any, KafkaError | None]] = []
        self._lock = threading.Lock()

    def produce(self, topic: str, *, value: Any = None, key: Any = None, **kw: Any) -> None:
        self.attempts += 1
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in kw["headers"])
        if size > _LIMIT:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        error = None
        if self.refuse_with is not None:
            error = KafkaError(self.refuse_with)
        elif size > self.topic_limit:
            error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)  # the broker's MESSAGE_TOO_LARGE
        else:
            self.written.append(DeadLetter(topic, key, value, tuple(kw["headers"])))
        with self._lock:
            self._reports.append((kw["on_delivery"], error))

    def poll(self, timeout: float = -1) -> int:
        with self._lock:
            reports, self._reports = self._reports, []
        for callback, error in reports:
            callback(error, Message())
        time.sleep(0.001)
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        return 0


def _producer(status: Status) -> tuple[DeadLetterProducer, FakeProducer]:
    fakes: list[FakeProducer] = []

    def connect(config: dict[str, Any]) -> FakeProducer:
        fakes.append(FakeProducer(config))
        return fakes[0]

    return DeadLetterProducer({}, status, connect=connect), fakes[0]


def _letter(value: bytes, key: bytes = b"user-1") -> DeadLetter:
    return DeadLetter(
        topic="user.changed.dlq",
        key=key,
        value=value,
        headers=(("dlq.source.topic", b"user.changed"), ("dlq.source.offset", b"7")),
    )


@pytest.mark.parametrize(
    ("size", "topic_limit"),
    [
        (1_020_000, _LIMIT),  # over the producer's limit, under CONSUMER_MAX_EVENT_BYTES
        (2 * 1024 * 1024, _LIMIT),  # from a source topic that allows bigger messages
        (900_000, 500_000),  # under the producer's limit, over the dead-letter topic's
    ],
)
def test_a_record_too_large_is_written_without_its_value(size: int, topic_limit: int) -> None:
    status = Status()
    producer, fake = _producer(status)
    fake.topic_limit = topic_limit
    try:
        asyncio.run(asyncio.wait_for(producer.send(_letter(b"x" * size)), 5))
    finally:
        producer.close()
    [written] = fake.written
    headers = dict(written.headers)
    assert (written.key, written.value) == (b"user-1", None)
    assert headers["dlq.value.omitted"] == b"true"
    assert headers["dlq.value.bytes"] == str(size).encode()
    assert headers["dlq.source.offset"] == b"7"
    assert status.failure() is None


@pytest.mark.parametrize(
    "error",
    [
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        # A dead-letter topic missing with auto-creation off: once librdkafka's metadata wait
        # is over. Retried, it stalled the first invalid event's partition, /readyz green.
        KafkaError._UNKNOWN_TOPIC,
    ],
)
def test_a_permanent_refusal_is_a_failure_of_the_service_and_nothing_passes(error: int) -> None:
    status = Status()
    producer, fake = _producer(status)
    fake.refuse_with = error

    async def attempt() -> None:
        sending = asyncio.ensure_future(producer.send(_letter(b"{}")))
        deadline = time.monotonic() + 5
        while status.failure() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not sending.done()  # the offset must not pass an unwritten dead letter
        sending.cancel()

    try:
        asyncio.run(attempt())
    finally:
        producer.close()
    assert status.failure() == f"dead-letter producer: {KafkaError(error).name()}"
    assert not status.live(0.0, 60.0)


def test_a_fatal_producer_error_is_a_failure_of_the_service() -> None:
    status = Status()
    producer, fake = _producer(status)
    try:
        fake.config["error_cb"](KafkaError(KafkaError._FATAL, "fatal idempotence", fatal=True))
    finally:
        producer.close()
    assert status.failure() == "dead-letter producer: _FATAL"


def test_a_transient_refusal_is_retried_until_written() -> None:
    status = Status()
    producer, fake = _producer(status)
    fake.refuse_with = KafkaError.NOT_ENOUGH_REPLICAS

    async def attempt() -> None:
        sending = asyncio.ensure_future(producer.send(_letter(b"{}")))
        while fake.attempts < 2:
            await asyncio.sleep(0.01)
        fake.refuse_with = None
        await asyncio.wait_for(sending, 5)

    try:
        asyncio.run(attempt())
    finally:
        producer.close()
    assert len(fake.written) == 1
    assert status.failure() is None
