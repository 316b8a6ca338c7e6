"""Each pod's pace from facts every member reads from Kafka: assignment and lag (SPEC §6).

A reader thread with its own admin client reads, every second, the group's members'
assignments and the end offsets of every partition of the subscribed topics, and through a
consumer of the group that never joins it, the group's committed offsets; the event loop
combines the latest reading with this member's latest assignment into the client's shares
(`shares.endpoint_shares`). A failed reading falls back to partition shares. Pods read on
the wall clock's whole seconds, so at nearly the same moment; what differs (a commit between
two pods' readings, an assignment newer than a reading) may briefly make their shares add up
to a little more than one: the pace's headroom under Iterable's limit and the 429 back-off
cover that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Final, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from consumer.endpoints import Endpoint
from consumer.shares import FED_BY, Where, endpoint_shares, partition_lags

log = logging.getLogger(__name__)

READ_INTERVAL: Final = 1.0
_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class GroupReading:
    lags: dict[Where, int]  # records the group has still to finish, per partition
    owned: set[Where]  # partitions some member owns (not between owners)


Reading = GroupReading | None  # None: the reading failed


class Paced(Protocol):
    """The client's side: its shares, and the ceilings they give (`IterableClient`)."""

    def set_shares(self, shares: Mapping[Endpoint, float]) -> None: ...
    def ceilings(self) -> dict[Endpoint, float]: ...


class SharedPace:
    """On the event loop: the latest assignment and lag readings → the client's shares.

    A share falls at once but rises one reading late (the lesser of what the last two
    readings give): a pod a reading behind the others then still takes no more than the
    group's earlier reading gave it, so the pods' shares add up to at most one."""

    def __init__(
        self,
        client: Paced,
        event_types: Mapping[str, str],
        show: Callable[[Endpoint, float], None],
        fed_by: Mapping[Endpoint, tuple[str, ...]] = FED_BY,
    ) -> None:
        self._client = client
        self._event_types = event_types
        self._fed_by = fed_by
        self._show = show
        self._assigned: set[Where] = set()
        self._counts: dict[str, int] = {}
        self._readings: tuple[Reading, Reading] = (None, None)  # the one before, the latest
        for endpoint, ceiling in client.ceilings().items():
            show(endpoint, ceiling)

    def assigned(self, owned: set[Where], partition_counts: dict[str, int]) -> None:
        self._assigned, self._counts = owned, partition_counts
        self._apply()

    def read(self, reading: Reading) -> None:
        self._readings = (self._readings[1], reading)
        if self._counts:  # before the first assignment this pod owns nothing to pace
            self._apply()

    def _apply(self) -> None:
        before, latest = (self._shares(reading) for reading in self._readings)
        self._client.set_shares({e: min(share, before[e]) for e, share in latest.items()})
        for endpoint, ceiling in self._client.ceilings().items():
            self._show(endpoint, ceiling)

    def _shares(self, reading: Reading) -> dict[Endpoint, float]:
        lags, owned = (reading.lags, reading.owned) if reading else (None, None)
        return endpoint_shares(
            self._assigned, self._counts, self._event_types, lags, owned, fed_by=self._fed_by
        )


class Committed(Protocol):
    def committed(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]: ...
    def poll(self, timeout: float = -1) -> object: ...
    def close(self) -> None: ...


def committed_reader(config: dict[str, Any], group: str) -> Consumer:
    """A consumer of the group that never subscribes, so never joins it.

    Not `AdminClient.list_consumer_group_offsets`: on a NOT_COORDINATOR answer (a new
    group, or the coordinator moving) librdkafka dereferences the admin client's missing
    group handle and the process dies with SIGSEGV (librdkafka #5040, still in 2.16). A
    consumer's `committed()` asks for the coordinator again instead.
    """
    return Consumer({**config, "group.id": group, "enable.auto.commit": False})


class LagReader:
    """Its own thread and clients: never the poll thread, never a rebalance callback."""

    def __init__(
        self,
        config: dict[str, Any],
        group: str,
        topics: list[str],
        report: Callable[[Reading], None],
        *,
        interval: float = READ_INTERVAL,
        connect: Callable[[dict[str, Any]], AdminClient] = AdminClient,
        offsets: Callable[[dict[str, Any], str], Committed] = committed_reader,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._config, self._group, self._topics = config, group, topics
        self._report, self._interval, self._connect = report, interval, connect
        self._offsets, self._wall = offsets, wall

    def run(self, stop: threading.Event) -> None:
        admin = self._connect(self._config)
        try:
            offsets = self._offsets(self._config, self._group)
        except KafkaException:
            # A consumer property the passthrough got wrong: the Kafka source, a consumer
            # built from the same settings, refuses it too and reports it as the one line.
            return
        try:
            self._read_until(stop, admin, offsets)
        finally:
            offsets.close()

    def _read_until(self, stop: threading.Event, admin: AdminClient, offsets: Committed) -> None:
        failing = False
        # On the wall clock's whole intervals: every pod reads the same moment's offsets
        # (clocks agree to milliseconds), so their shares add up to one, not more.
        while not stop.wait(self._interval - self._wall() % self._interval):
            try:
                reading: Reading = read_lags(admin, offsets, self._group, self._topics)
            except (KafkaException, FutureTimeout) as exc:
                reading = None
                if not failing:  # once per outage, not every reading
                    log.warning(
                        "could not read the group's lag; pacing by partitions",
                        extra={"error": str(exc)},
                    )
            failing = reading is None
            offsets.poll(0)  # its librdkafka log lines reach the logger only through a poll
            if not stop.is_set():
                self._report(reading)


def read_lags(
    admin: AdminClient, offsets: Committed, group: str, topics: list[str]
) -> GroupReading:
    metadata = admin.list_topics(timeout=_TIMEOUT).topics
    wanted = [
        TopicPartition(topic, partition)
        for topic in topics
        if (found := metadata.get(topic)) is not None and found.error is None
        for partition in found.partitions
    ]
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in (offsets.committed(wanted, timeout=_TIMEOUT) if wanted else [])
        if tp.error is None
    }
    described = admin.describe_consumer_groups([group], request_timeout=_TIMEOUT)[group]
    owned = {
        (tp.topic, tp.partition)
        for member in described.result(_TIMEOUT).members
        for tp in member.assignment.topic_partitions or []
    }
    ends = _offsets(admin, wanted, OffsetSpec.latest())  # type: ignore[no-untyped-call]
    fresh = [tp for tp in wanted if committed.get((tp.topic, tp.partition), -1) < 0]
    earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    starts = _offsets(admin, fresh, earliest) if fresh else {}
    return GroupReading(partition_lags(ends, committed, starts), owned)


def _offsets(admin: AdminClient, partitions: list[TopicPartition], spec: Any) -> dict[Where, int]:
    futures = admin.list_offsets(dict.fromkeys(partitions, spec), request_timeout=_TIMEOUT)
    return {(tp.topic, tp.partition): f.result(_TIMEOUT).offset for tp, f in futures.items()}


def post(loop: asyncio.AbstractEventLoop, call: Callable[..., None]) -> Callable[..., None]:
    """`call`, run on `loop` from another thread; dropped once the loop has closed."""

    def posted(*args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while we were reading
            loop.call_soon_threadsafe(call, *args)

    return posted
