"""The Kafka side driven through a fake consumer fed real confluent-kafka objects.

The fake answers like librdkafka does where it matters: commit reports arrive inside
`consume()`, a refused asynchronous commit is reported through `on_commit`, a refused
synchronous commit raises `KafkaException`, and the broker keeps only what it accepted.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin._metadata import ClusterMetadata, PartitionMetadata, TopicMetadata
from prometheus_client import CollectorRegistry

from consumer.backpressure import BufferLimits
from consumer.messages import Delivery, Outcome
from consumer.messages import TopicPartition as Where
from consumer.metrics import Metrics
from consumer.source import KafkaSource
from consumer.status import Status

Step = Callable[["FakeConsumer"], list[Message]]


class FakeConsumer:
    """A group member whose rebalances, messages and commit answers a test scripts."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.steps: deque[Step] = deque()
        self.refusals: deque[KafkaError] = deque()  # answers for the next commits
        self.reports: list[tuple[KafkaError | None, list[TopicPartition]]] = []
        self.broker: dict[Where, int] = {}  # what the group coordinator accepted
        self.owned: set[Where] = set()
        self.after_release: list[Where] = []  # commits sent for partitions not owned
        self.callbacks: dict[str, Any] = {}
        self.closed = False
        self.partition_counts: dict[str, int] = {"a": 4, "b": 2}
        # As librdkafka: a partition's pause outlives its revocation and re-assignment.
        self.paused: set[Where] = set()
        self.pauses = 0  # pause calls: each makes librdkafka drop what it prefetched
        self.asked: list[int] = []  # num_messages of each consume()

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self.asked.append(num_messages)
        reports, self.reports = self.reports, []
        for error, offsets in reports:
            self.config["on_commit"](error, offsets)
        return (self.steps.popleft()(self) if self.steps else [])[:num_messages]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pauses += 1
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> Any:
        self.after_release += [(tp.topic, tp.partition) for tp in offsets if not self._owns(tp)]
        refusal = self.refusals.popleft() if self.refusals else None
        if refusal is None:
            for tp in offsets:
                self.broker[(tp.topic, tp.partition)] = tp.offset
        answer = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
        if asynchronous:
            self.reports.append((refusal, answer))
            return None
        if refusal is not None:
            raise KafkaException(refusal)
        return answer

    def close(self) -> None:
        self.closed = True

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        metadata = ClusterMetadata()
        for name, count in self.partition_counts.items():
            found = TopicMetadata()
            found.topic, found.partitions = name, {p: PartitionMetadata() for p in range(count)}
            metadata.topics[name] = found
        return metadata

    def _owns(self, tp: TopicPartition) -> bool:
        return (tp.topic, tp.partition) in self.owned

    # -- what a test scripts --------------------------------------------------------------

    def assign(self, *partitions: Where) -> None:
        self.owned.update(partitions)
        self.callbacks["on_assign"](self, [TopicPartition(t, p) for t, p in partitions])

    def revoke(self, *partitions: Where) -> None:
        self.callbacks["on_revoke"](self, [TopicPartition(t, p) for t, p in partitions])
        self.owned.difference_update(partitions)

    def lose(self, *partitions: Where) -> None:
        self.owned.difference_update(partitions)
        self.callbacks["on_lost"](self, [TopicPartition(t, p) for t, p in partitions])


def message(topic: str, partition: int, offset: int) -> Message:
    return Message(
        topic=topic, partition=partition, offset=offset, key=b"k", value=b"{}", timestamp=(1, 1)
    )


class Harness:
    """A KafkaSource on a fake consumer; deliveries are kept for the test to complete."""

    def __init__(
        self,
        drain: Callable[[set[tuple[Where, int]], float], None] | None = None,
        limits: BufferLimits | None = None,
    ):
        self.delivered: list[Delivery] = []
        self.status = Status()
        self.fake: FakeConsumer | None = None
        self.stop = threading.Event()

        def connect(config: dict[str, Any]) -> FakeConsumer:
            self.fake = FakeConsumer(config)
            self.fake.steps.extend(self.steps)
            return self.fake

        self.steps: list[Step] = []
        self.assignments: list[tuple[set[Where], dict[str, int]]] = []
        self.source = KafkaSource(
            {},
            ["a", "b"],
            deliver=self.delivered.extend,
            drain=drain or (lambda partitions, timeout: None),
            metrics=Metrics(CollectorRegistry()),
            status=self.status,
            limits=limits or BufferLimits(1000, 1000),
            commit_interval=0.0,  # every step may commit: the test counts steps, not seconds
            drain_timeout=0.0,
            shutdown_grace=0.0,
            connect=connect,
            on_assignment=lambda owned, counts: self.assignments.append((owned, counts)),
        )

    def then(self, step: Callable[[FakeConsumer], object]) -> Harness:
        def run(fake: FakeConsumer) -> list[Message]:
            result = step(fake)
            return result if isinstance(result, list) else []

        self.steps.append(run)
        return self

    def idle(self, steps: int = 1) -> Harness:
        for _ in range(steps):
            self.then(lambda fake: None)
        return self

    def complete_all(self) -> Harness:
        def finish(fake: FakeConsumer) -> None:
            for delivery in self.delivered:
                self.source.complete(delivery, Outcome.OK)
            self.delivered.clear()

        return self.then(finish)

    def run(self) -> FakeConsumer:
        self.then(lambda fake: self.stop.set())
        thread = threading.Thread(target=self.source.run, args=(self.stop,))
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the source did not stop"
        assert self.fake is not None
        return self.fake


def test_a_commit_refused_in_a_rebalance_goes_out_again_for_every_partition_still_owned() -> None:
    harness = (
        Harness()
        .then(lambda fake: fake.assign(("a", 0), ("a", 1), ("b", 0)))
        .then(lambda fake: [message("a", 0, 5), message("a", 1, 7), message("b", 0, 2)])
        .then(lambda fake: fake.refusals.extend([KafkaError(KafkaError.ILLEGAL_GENERATION)]))
        .complete_all()
        .then(lambda fake: fake.revoke(("b", 0)))  # a rebalance takes one partition away
        .then(lambda fake: fake.refusals.append(KafkaError(KafkaError.REBALANCE_IN_PROGRESS)))
        .idle(4)
    )
    fake = harness.run()
    assert fake.broker[("a", 0)] == 6
    assert fake.broker[("a", 1)] == 8
    assert fake.after_release == []


def test_a_late_commit_report_and_the_shutdown_commit_nothing_for_a_released_partition() -> None:
    harness = (
        Harness()
        .then(lambda fake: fake.assign(("a", 0), ("a", 1)))
        .then(lambda fake: [message("a", 0, 0), message("a", 1, 0)])
        .complete_all()
        # The commit for a[1] is still out when a[1] is lost; its report comes late.
        .then(lambda fake: fake.refusals.append(KafkaError(KafkaError.REQUEST_TIMED_OUT)))
        .then(lambda fake: fake.lose(("a", 1)))
        .idle(3)
    )
    fake = harness.run()
    assert fake.broker[("a", 0)] == 1
    assert fake.after_release == []
    assert fake.closed


def test_a_drain_that_times_out_in_on_revoke_keeps_the_source_running() -> None:
    def drain(partitions: set[tuple[Where, int]], timeout: float) -> None:
        raise TimeoutError("the loop did not finish the drain in time")

    harness = Harness(drain)
    harness.then(lambda fake: fake.assign(("a", 0), ("a", 1)))
    harness.then(lambda fake: [message("a", 0, 0), message("a", 1, 0), message("a", 1, 1)])
    harness.then(lambda fake: harness.source.complete(harness.delivered[0], Outcome.OK))
    harness.then(lambda fake: fake.revoke(("a", 1)))
    harness.then(lambda fake: [message("a", 0, 1)])
    harness.complete_all().idle(2)
    fake = harness.run()
    assert fake.broker[("a", 0)] == 2  # work after the failed drain was still consumed
    assert ("a", 1) not in fake.broker
    assert fake.after_release == []


def test_an_offset_going_backwards_rebuilds_the_partition_and_keeps_consuming() -> None:
    harness = (
        Harness()
        .then(lambda fake: fake.assign(("a", 0)))
        .then(lambda fake: [message("a", 0, 10), message("a", 0, 11)])
        .complete_all()
        .idle()
        # The log was truncated (or the offset reset): the partition starts again at 3.
        .then(lambda fake: [message("a", 0, 3), message("a", 0, 4)])
        .complete_all()
        .idle(2)
    )
    fake = harness.run()
    assert harness.status.failure() is None
    assert fake.broker[("a", 0)] == 5


def test_a_completion_from_before_the_offsets_went_back_does_not_count() -> None:
    harness = Harness()
    harness.then(lambda fake: fake.assign(("a", 0)))
    harness.then(lambda fake: [message("a", 0, 3)])
    harness.then(lambda fake: [message("a", 0, 2), message("a", 0, 3)])  # went back
    # Only the first offset 3 (and not offset 2) has finished: nothing may be committed.
    harness.then(lambda fake: harness.source.complete(harness.delivered[0], Outcome.OK))
    harness.idle(2)
    fake = harness.run()
    assert ("a", 0) not in fake.broker


def _fatal_callback(fake: FakeConsumer) -> list[Message]:
    fake.config["error_cb"](KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True))
    return []


def _fatal_message(fake: FakeConsumer) -> list[Message]:
    # How librdkafka hands a fenced consumer's fatal error to the application.
    error = KafkaError(KafkaError._FATAL, "Fatal consumer error: Broker: Static consumer fenced")
    return [Message(topic="a", partition=0, offset=-1001, error=error)]


@pytest.mark.parametrize("report", [_fatal_callback, _fatal_message])
def test_a_fatal_kafka_error_stops_the_source_and_fails_liveness(report: Step) -> None:
    harness = Harness()
    harness.then(lambda fake: fake.assign(("a", 0)))
    harness.then(lambda fake: [message("a", 0, 0)])
    harness.then(report)
    harness.idle(50)  # it stops by itself long before these
    fake = harness.run()
    assert fake.steps, "the source kept polling after a fatal error"
    assert harness.status.failure() is not None
    assert not harness.status.live(0.0, 60.0)
    assert ("a", 0) not in fake.broker  # fenced: the partition belongs to someone else
    assert fake.closed


@pytest.mark.parametrize("code", [KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID])
def test_a_refused_synchronous_commit_on_revoke_does_not_stop_the_source(code: int) -> None:
    harness = (
        Harness()
        .then(lambda fake: fake.assign(("a", 0), ("a", 1)))
        .then(lambda fake: [message("a", 0, 0), message("a", 1, 0)])
        .complete_all()
        .then(lambda fake: fake.refusals.extend([KafkaError(code)] * 2))
        .then(lambda fake: fake.revoke(("a", 1)))
        .idle(3)
    )
    fake = harness.run()
    assert fake.broker[("a", 0)] == 1
    assert fake.after_release == []


def test_every_assignment_change_reports_what_is_owned_and_the_partition_counts() -> None:
    harness = (
        Harness()
        .then(lambda fake: fake.assign(("a", 0), ("a", 1), ("b", 0)))
        .idle()
        .then(lambda fake: fake.revoke(("a", 1)))
        .idle(2)
    )
    harness.run()
    counts = {"a": 4, "b": 2}
    assert harness.assignments[:2] == [
        ({("a", 0), ("a", 1), ("b", 0)}, counts),
        ({("a", 0), ("b", 0)}, counts),
    ]


def test_a_partition_paused_when_it_was_revoked_runs_again_when_it_comes_back() -> None:
    # librdkafka keeps a partition's pause across a revocation and a new assignment; a
    # source that forgot it had paused it would never resume it: a stall for good.
    harness = (
        Harness(limits=BufferLimits(1000, 2))
        .then(lambda fake: fake.assign(("a", 0)))
        .then(lambda fake: [message("a", 0, n) for n in range(3)])  # over its bound: paused
        .idle()
        .then(lambda fake: fake.revoke(("a", 0)))
        .then(lambda fake: fake.assign(("a", 0)))
        .idle(2)
    )
    fake = harness.run()
    assert ("a", 0) not in fake.paused


def test_a_partition_paused_when_it_was_lost_runs_again_when_it_comes_back() -> None:
    harness = (
        Harness(limits=BufferLimits(1000, 2))
        .then(lambda fake: fake.assign(("a", 0)))
        .then(lambda fake: [message("a", 0, n) for n in range(3)])
        .idle()
        .then(lambda fake: fake.lose(("a", 0)))
        .then(lambda fake: fake.paused.add(("a", 0)))  # resuming a lost one may not take
        .then(lambda fake: fake.assign(("a", 0)))
        .idle(2)
    )
    fake = harness.run()
    assert ("a", 0) not in fake.paused


def test_a_released_partition_is_reported_before_its_next_owner_can_have_it() -> None:
    # The next owner gets it once the revoke callback returns: the pace must drop first.
    seen_in_callback: list[set[Where]] = []
    harness = Harness().then(lambda fake: fake.assign(("a", 0), ("a", 1))).idle()
    harness.then(
        lambda fake: (fake.revoke(("a", 1)), seen_in_callback.append(harness.assignments[-1][0]))
    ).idle()
    harness.run()
    assert seen_in_callback == [{("a", 0)}]


def test_a_full_buffer_takes_messages_as_work_finishes_and_pauses_nothing() -> None:
    harness = Harness(limits=BufferLimits(total=30, per_partition=1000))  # fill 20, overflow 10
    batch = iter(range(1000))

    def messages(count: int) -> Step:
        return lambda fake: [message("a", 0, next(batch)) for _ in range(count)]

    def finish(count: int) -> Step:
        def run(fake: FakeConsumer) -> list[Message]:
            for delivery in harness.delivered[:count]:
                harness.source.complete(delivery, Outcome.OK)
            del harness.delivered[:count]
            return []

        return run

    harness.then(lambda fake: fake.assign(("a", 0))).then(messages(20))
    harness.then(messages(5)).then(finish(10)).then(messages(15)).run()
    fake = harness.fake
    assert fake is not None
    # Full: one message per poll (the overflow a stall may grow), then the 10 freed.
    # Full: one message per poll (the overflow a stall may grow), then the room freed.
    assert fake.asked == [20, 20, 1, 1, 9, 1]
    assert fake.pauses == 0
