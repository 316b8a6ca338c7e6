"""A pod's pace follows the group's latest lag reading, and its partitions when there is none."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.endpoints import Endpoint
from consumer.pacing import GroupReading, LagReader, Reading, SharedPace

TYPES = {"users": "user.changed"}
LIMIT = 490.0


class FakeClient:
    def __init__(self) -> None:
        self.shares: dict[Endpoint, float] = {Endpoint.UPDATE: 1.0}

    def set_shares(self, shares: Mapping[Endpoint, float]) -> None:
        self.shares = dict(shares)

    def ceilings(self) -> dict[Endpoint, float]:
        return {Endpoint.UPDATE: LIMIT * self.shares[Endpoint.UPDATE]}


def _paced() -> tuple[SharedPace, FakeClient, dict[Endpoint, float]]:
    client, shown = FakeClient(), {}
    pace = SharedPace(client, TYPES, shown.__setitem__)
    pace.assigned({("users", 0), ("users", 1)}, {"users": 4})
    return pace, client, shown


def test_the_pod_with_the_backlog_takes_the_limit_and_shows_its_ceiling() -> None:
    pace, _, shown = _paced()
    everyone = {("users", p) for p in range(4)}
    backlog = GroupReading({("users", 0): 998, ("users", 1): 0}, everyone)
    pace.read(backlog)
    assert shown[Endpoint.UPDATE] == LIMIT / 2  # a rise waits for a second reading
    pace.read(backlog)
    assert shown[Endpoint.UPDATE] == pytest.approx(LIMIT * 1_000 / 1_002)


def test_a_share_falls_at_once() -> None:
    pace, _, shown = _paced()
    others = GroupReading({("users", 2): 998, ("users", 3): 0}, {("users", p) for p in range(4)})
    pace.read(others)
    assert shown[Endpoint.UPDATE] == pytest.approx(LIMIT * 2 / 1_002)


def test_without_a_reading_the_pod_paces_at_its_partitions_share() -> None:
    pace, _, shown = _paced()
    pace.read(GroupReading({("users", 0): 998}, {("users", p) for p in range(4)}))
    pace.read(None)
    assert shown[Endpoint.UPDATE] == LIMIT / 2


class NoOffsets:
    def committed(self, partitions: list[Any], timeout: float = -1) -> list[Any]:
        return []

    def poll(self, timeout: float = -1) -> None:
        pass

    def close(self) -> None:
        pass


class FailingAdmin:
    def list_topics(self, timeout: float = -1) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))


def test_a_failed_reading_is_reported_as_none() -> None:
    stop = threading.Event()
    readings: list[Reading] = []

    def report(reading: Reading) -> None:
        readings.append(reading)
        stop.set()

    reader = LagReader(
        {},
        "g",
        ["users"],
        report,
        interval=0.01,
        connect=lambda _: FailingAdmin(),  # type: ignore[arg-type,return-value]
        offsets=lambda *_: NoOffsets(),
    )
    reader.run(stop)
    assert readings == [None]  # the pace then falls back to partition shares (above)
