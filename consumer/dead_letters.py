"""The dead-letter producer: idempotent, acks=all, and `send` returns only once acked."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.dlq import SOURCE_OFFSET, SOURCE_PARTITION, DeadLetter, smaller
from consumer.status import Status

log = logging.getLogger(__name__)

# The producer's limit (message.max.bytes) or the topic's (max.message.bytes, broker side).
_TOO_LARGE: Final = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
# Errors no retry can cure: rights, a bad topic, a fenced or fatally broken producer.
_PERMANENT: Final = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._INVALID_ARG,
        # Not in the cluster's metadata after librdkafka's wait (auto-creation off).
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.PRODUCER_FENCED,
    }
)


class KafkaProducer(Protocol):
    """The part of `confluent_kafka.Producer` used here (tests pass a fake)."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Any = None,  # confluent-kafka takes several shapes
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None: ...
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...


class DeadLetterProducer:
    """Writes dead letters; a message's offset may only pass once `send` has returned.

    Every message the consumer can read can be dead-lettered: a record the topic or the
    producer refuses as too large is written again without its value (`dlq.smaller`).
    An error the producer reports as permanent is a failure of the service (`status`).
    """

    def __init__(
        self,
        config: dict[str, Any],
        status: Status,
        connect: Callable[[dict[str, Any]], KafkaProducer] = Producer,
    ) -> None:
        self._status = status
        self._producer = connect(
            {
                **config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "error_cb": self._client_error,
                "logger": logging.getLogger("librdkafka"),  # into the JSON log, as the consumer
            }
        )
        self._stop = threading.Event()
        # Delivery callbacks fire inside poll(); a thread keeps polling so they always do.
        self._poller = threading.Thread(target=self._poll, name="dlq-poller", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def send(self, record: DeadLetter) -> None:
        """Produce and wait for the broker's ack, retrying until it comes."""
        delay = 0.1
        while True:
            error = await self._write(record)
            if error is None:
                return
            if error.code() in _TOO_LARGE and (cut := smaller(record)) is not None:
                source = dict(record.headers)
                log.warning(
                    "dead letter too large for its topic; writing it without its value",
                    extra={
                        "topic": record.topic,
                        "error": error.name(),
                        "partition": source.get(SOURCE_PARTITION, b"").decode(),
                        "offset": source.get(SOURCE_OFFSET, b"").decode(),
                    },
                )
                record = cut
                continue
            if error.fatal() or error.code() in _PERMANENT:
                self._failed(f"dead-letter producer: {error.name()}", error)
            log.warning(
                "dead-letter write failed; retrying",
                extra={"topic": record.topic, "error": error.name()},
            )
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def _write(self, record: DeadLetter) -> KafkaError | None:
        """One attempt: None once the broker acked, else why not."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[KafkaError | None] = loop.create_future()

        def report(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, acked, err)

        try:
            self._producer.produce(
                record.topic,
                value=record.value,
                key=record.key,
                headers=list(record.headers),
                on_delivery=report,
            )
        except BufferError:  # the local queue is full: a retriable condition
            return KafkaError(KafkaError._QUEUE_FULL)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            return error
        return await acked

    def _client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._failed(f"dead-letter producer: {error.name()}", error)
        else:
            log.warning("dead-letter producer error", extra={"code": error.name()})

    def _failed(self, reason: str, error: KafkaError) -> None:
        if self._status.fail(reason):
            log.error(
                "the dead-letter producer failed for good; stopping",
                extra={"code": error.name(), "reason": error.str()},
            )

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(timeout)


def _settle(future: asyncio.Future[KafkaError | None], error: KafkaError | None) -> None:
    if not future.done():
        future.set_result(error)
