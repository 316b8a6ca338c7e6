"""The processor with fakes: a MockTransport Iterable, a list for dead letters, no Kafka."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.backoff import Backoff
from consumer.dlq import DeadLetter, DeadLetterBreaker
from consumer.iterable import ClientSettings, IterableClient
from consumer.messages import Delivery, Outcome
from consumer.metrics import Metrics
from consumer.ordering import DeviceGuard, DuplicateWindow
from consumer.processor import Processor, ProcessorSettings
from consumer.status import Status
from consumer.translate import Translator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Sink:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, record: DeadLetter) -> None:
        self.letters.append(record)


def _delivery(offset: int, data: dict[str, Any], event_id: str | None = None) -> Delivery:
    value = {
        "specversion": "1.0",
        "id": event_id or f"e{offset}",
        "source": "/t",
        "type": "user.changed",
        "data": data,
    }
    return Delivery("user.changed", 0, offset, 1, None, json.dumps(value).encode(), (), 0.0)


def _processor(
    answer: httpx.Response, **settings: Any
) -> tuple[Processor, Sink, list[tuple[int, Outcome]]]:
    finished: list[tuple[int, Outcome]] = []
    client = IterableClient(
        ClientSettings(base_url="https://api.test", api_key="k", backoff=Backoff(0, 0), **settings),
        transport=httpx.MockTransport(lambda request: answer),
    )
    sink = Sink()
    processor = Processor(
        ProcessorSettings(topics={"user.changed": "user.changed"}),
        translator=Translator("hybrid"),
        client=client,
        dead_letters=sink,
        guard=DeviceGuard(100),
        duplicates=DuplicateWindow(100),
        breaker=DeadLetterBreaker(0.9, 60, 1000, 60),
        metrics=Metrics(CollectorRegistry()),
        status=Status(),
        complete=lambda delivery, outcome: finished.append((delivery.offset, outcome)),
    )
    return processor, sink, finished


async def _until(finished: list[tuple[int, Outcome]], count: int) -> None:
    for _ in range(500):
        if len(finished) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(finished)} of {count} finished")


OK = httpx.Response(200, json={"msg": "ok", "code": "Success", "params": None})


async def test_accepted_invalid_and_duplicate_messages_all_finish() -> None:
    processor, sink, finished = _processor(OK)
    processor.submit([_delivery(0, {"userId": "1"}), _delivery(1, {"email": "nope"})])
    await _until(finished, 2)
    processor.submit([_delivery(2, {"userId": "1"}, event_id="e0")])
    await _until(finished, 3)
    assert sorted(finished) == [(0, Outcome.OK), (1, Outcome.INVALID), (2, Outcome.DUPLICATE)]
    assert [dict(letter.headers)["dlq.error.class"] for letter in sink.letters] == [b"InvalidEvent"]


async def test_a_permanent_rejection_is_dead_lettered_with_its_status() -> None:
    rejected = httpx.Response(400, json={"msg": "bad", "code": "BadParams", "params": None})
    processor, sink, finished = _processor(rejected)
    processor.submit([_delivery(0, {"userId": "1"})])
    await _until(finished, 1)
    assert finished == [(0, Outcome.DEAD_LETTERED)]
    headers = dict(sink.letters[0].headers)
    assert (headers["dlq.http.status"], headers["dlq.iterable.code"]) == (b"400", b"BadParams")
    # The source message's Kafka timestamp travels along, so a replay keeps it.
    assert headers["dlq.source.timestamp"] == b"0.000"


async def test_with_a_retry_limit_an_exhausted_transient_failure_is_dead_lettered() -> None:
    processor, sink, finished = _processor(httpx.Response(503, text="down"), max_attempts=2)
    processor.submit([_delivery(0, {"userId": "1"})])
    await _until(finished, 1)
    assert finished == [(0, Outcome.DEAD_LETTERED)]
    assert dict(sink.letters[0].headers)["dlq.attempts"] == b"2"


async def test_drained_partitions_drop_their_queued_work() -> None:
    processor, _, finished = _processor(OK)
    processor.submit([_delivery(n, {"userId": "same"}) for n in range(5)])
    await processor.drain({(("user.changed", 0), 1)}, timeout=5)
    await asyncio.sleep(0.05)
    assert len(finished) <= 1  # at most the call already in flight finished
