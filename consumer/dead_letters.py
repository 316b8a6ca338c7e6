"""The dead-letter producer: idempotent, acks=all, and `send` returns only once acked."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.dlq import DeadLetter

log = logging.getLogger(__name__)


class DeadLetterProducer:
    """Writes dead letters; a message's offset may only pass once `send` has returned."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(
            {**config, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
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
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            acked: asyncio.Future[KafkaError | None] = loop.create_future()

            def report(
                err: KafkaError | None,
                msg: Message,
                acked: asyncio.Future[KafkaError | None] = acked,
            ) -> None:
                loop.call_soon_threadsafe(_settle, acked, err)

            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    on_delivery=report,
                )
            except (BufferError, KafkaException) as exc:
                log.warning(
                    "dead-letter produce refused; retrying", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            error = await acked
            if error is None:
                return
            log.warning(
                "dead-letter write failed; retrying",
                extra={"topic": record.topic, "error": error.name()},
            )
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(timeout)


def _settle(future: asyncio.Future[KafkaError | None], error: KafkaError | None) -> None:
    if not future.done():
        future.set_result(error)
