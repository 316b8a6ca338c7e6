"""The Kafka side: one thread owns the consumer, polls, tracks offsets, pauses, commits.

Messages go to the processor as they arrive; completions come back through a queue. A
partition's offset is committed only up to its contiguous finished prefix (`offsets`). On
revoke and at shutdown the processor drains the affected partitions (bounded wait) before
the final synchronous commit. Backpressure pauses partitions but keeps polling, so the
group membership survives and `max.poll.interval.ms` is never at risk.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, overload

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin._metadata import ClusterMetadata

from consumer.backpressure import BufferLimits, to_pause
from consumer.config import refused_property
from consumer.lookback import read_back
from consumer.messages import Delivery, Outcome, normalise_headers
from consumer.messages import TopicPartition as Where
from consumer.metrics import Metrics
from consumer.offsets import PartitionOffsets
from consumer.status import Status

log = logging.getLogger(__name__)
CLIENT_LOG: Final = logging.getLogger("librdkafka")

_BATCH: Final = 500
_POLL_TIMEOUT: Final = 0.05

# Both keep partition i of the two device topics (equal partition counts) on one member,
# which cross-topic device order needs (SPEC §5); the broker-side range assignor is also
# sticky and incremental (KIP-848), the classic one eager.
GROUP_PROTOCOLS: Final[dict[str, dict[str, str]]] = {
    "consumer": {"group.protocol": "consumer", "group.remote.assignor": "range"},
    "classic": {"group.protocol": "classic", "partition.assignment.strategy": "range"},
}


@dataclass(frozen=True, slots=True)
class Lookback:
    """Which topics to read back on assignment, how far, and who takes the result."""

    topics: list[str]
    records: int
    restore: Callable[[list[Delivery]], None]


def consumer_config(
    bootstrap: str,
    group: str,
    passthrough: dict[str, str],
    metrics: Metrics,
    protocol: str = "consumer",
) -> dict[str, Any]:
    """librdkafka settings that the delivery guarantees rely on, plus the passthrough."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        **GROUP_PROTOCOLS[protocol],
        "statistics.interval.ms": 5000,
        # librdkafka prefetches up to 64 MB by default on top of the service's own buffer;
        # 8 MB keeps that buffer fed (tens of thousands of events) at a fraction of the memory.
        "queued.max.messages.kbytes": 8192,
        # End-of-partition events tell the buffer which partitions have nothing to read.
        "enable.partition.eof": True,
        # Fetches bring every partition's messages one partition after another; 1 MB per
        # partition (the default) lets one topic's backlog fill the buffer before another
        # topic's first message arrives. Smaller slices interleave the topics.
        "max.partition.fetch.bytes": 65536,
        **passthrough,
        # Not overridable (config.kafka_passthrough refuses them): offsets move only here.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "stats_cb": metrics.kafka_statistics,
        # librdkafka's own log lines go into the service's log, not to stderr as text.
        "logger": CLIENT_LOG,
    }


Drain = Callable[[set[tuple[Where, int]], float], None]
Rebalance = Callable[[Any, list[TopicPartition]], None]


class KafkaConsumer(Protocol):
    """The part of `confluent_kafka.Consumer` the source uses (tests pass a fake)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        on_lost: Rebalance | None = None,
    ) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    @overload
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = ...
    ) -> None: ...
    @overload
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...
    def close(self) -> None: ...
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata: ...


# What this member owns now, and each subscribed topic's partition count (for pacing).
OnAssignment = Callable[[set[Where], dict[str, int]], None]


class KafkaSource:
    """Runs in its own thread; every call on the `Consumer` happens there."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: list[str],
        *,
        deliver: Callable[[list[Delivery]], None],
        drain: Drain,
        metrics: Metrics,
        status: Status,
        limits: BufferLimits,
        commit_interval: float,
        drain_timeout: float,
        shutdown_grace: float,
        lookback: Lookback | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        connect: Callable[[dict[str, Any]], KafkaConsumer] = Consumer,
        on_assignment: OnAssignment | None = None,
    ) -> None:
        self._config = config
        self._connect = connect
        self._topics = topics
        self._deliver = deliver
        self._drain = drain
        self._metrics = metrics
        self._status = status
        self._limits = limits
        self._commit_interval = commit_interval
        self._drain_timeout = drain_timeout
        self._shutdown_grace = shutdown_grace
        self._lookback = lookback
        self._clock = clock
        self._wall = wall
        self._completions: queue.SimpleQueue[tuple[Delivery, Outcome]] = queue.SimpleQueue()
        self._trackers: dict[Where, PartitionOffsets] = {}
        self._epochs: dict[Where, int] = {}
        self._paused: set[Where] = set()
        self._at_end: set[Where] = set()  # read to the end (EOF event); no share needed
        self._restore_pending: set[int] = set()
        self._last_commit = 0.0
        self._fenced = False  # a fatal consumer error: the group no longer takes our commits
        self._on_assignment = on_assignment
        self._assignment_changed = False
        self._partition_counts: dict[str, int] = {}
        self._fresh: set[Where] = set()  # assigned in the last consume(), to resume after it

    # -- called from any thread -----------------------------------------------------------

    def complete(self, delivery: Delivery, outcome: Outcome) -> None:
        self._completions.put((delivery, outcome))

    # -- the poll thread ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        try:
            consumer = self._connect(
                {**self._config, "on_commit": self._committed, "error_cb": self._client_error}
            )
        except KafkaException as exc:
            raise refused_property(exc.args[0].str(), self._config) from None
        consumer.subscribe(
            self._topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        try:
            while not stop.is_set() and self._status.failure() is None:
                self._step(consumer)
        finally:
            self._shutdown(consumer)

    def _client_error(self, error: KafkaError) -> None:
        """librdkafka's error callback: most errors it recovers from; a fatal one ends us."""
        if error.fatal():
            self._fatal(error)
        else:
            log.warning("kafka client error", extra={"code": error.name()})

    def _fatal(self, error: KafkaError) -> None:
        self._fenced = True
        if self._status.fail(f"kafka consumer: {error.name()}"):
            log.error(
                "fatal Kafka consumer error; stopping",
                extra={"code": error.name(), "reason": error.str()},
            )

    def _step(self, consumer: KafkaConsumer) -> None:
        self._apply_completions()
        # Full: wait (one poll's time at most) for completions to free a batch's room, so a
        # full buffer takes batches as work finishes instead of pausing (pausing makes
        # librdkafka throw away what it prefetched and fetch it again).
        self._await_room(min(_BATCH, max(1, self._limits.total // 10)), _POLL_TIMEOUT)
        self._update_pauses(consumer)
        # Never more than the room left; when full, one message per poll (membership needs
        # the polls) into the top of the bound, which pauses everything once reached.
        messages = consumer.consume(
            num_messages=max(1, min(_BATCH, self._room())), timeout=_POLL_TIMEOUT
        )
        self._resume_fresh(consumer)
        self._report_assignment(consumer)
        self._restore()
        self._status.polled(self._clock())
        self._metrics.last_poll.set(self._wall())
        deliveries = [d for d in (self._accept(m) for m in messages) if d is not None]
        if deliveries:
            self._deliver(deliveries)
        if self._clock() - self._last_commit >= self._commit_interval:
            self._commit(consumer, set(self._trackers), asynchronous=True)
            self._update_lag_seconds()

    def _accept(self, message: Message) -> Delivery | None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._at_end.add((message.topic() or "", message.partition() or 0))
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # librdkafka hands a fatal consumer error (a fenced group.instance.id) to
                # the application as a message, not through error_cb.
                self._fatal(error)
            else:
                log.warning("kafka message error", extra={"code": error.name()})
            return None
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return None
        where = (topic, partition)
        self._at_end.discard(where)
        tracker = self._trackers.get(where)
        if tracker is None:
            return None
        if offset <= tracker.last_added:
            tracker = self._start_over(where, offset, tracker.last_added)
        _, timestamp_ms = message.timestamp()
        timestamp = timestamp_ms / 1000 if timestamp_ms > 0 else self._wall()
        tracker.add(offset, timestamp)
        self._metrics.child(self._metrics.consumed, topic).inc()
        key, value = message.key(), message.value()
        return Delivery(
            topic=topic,
            partition=partition,
            offset=offset,
            epoch=self._epochs[where],
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=normalise_headers(message.headers()),
            timestamp=timestamp,
        )

    def _start_over(self, where: Where, offset: int, last: int) -> PartitionOffsets:
        """The log was truncated or the offset reset: track the partition afresh.

        A new epoch, so completions of messages handed out before do not count: offsets
        are being reused, and only what is read from here on may move the commit point.
        """
        log.warning(
            "offsets went backwards (log truncated or offset reset); tracking afresh",
            extra={"topic": where[0], "partition": where[1], "offset": offset, "last": last},
        )
        self._metrics.offset_resets.labels(topic=where[0]).inc()
        self._epochs[where] += 1
        tracker = self._trackers[where] = PartitionOffsets()
        return tracker

    def _room(self) -> int:
        return self._limits.fill - sum(t.pending for t in self._trackers.values())

    def _await_room(self, wanted: int, timeout: float) -> None:
        """Apply completions as they come until `wanted` fit in the buffer, or `timeout`."""
        if self._room() >= wanted or self._status.holds():
            return
        deadline = self._clock() + timeout
        while (left := deadline - self._clock()) > 0:
            try:
                self._apply(*self._completions.get(timeout=left))
            except queue.Empty:
                break
            self._apply_completions()
            if self._room() >= wanted:
                break

    def _apply_completions(self) -> None:
        while True:
            try:
                delivery, outcome = self._completions.get_nowait()
            except queue.Empty:
                break
            self._apply(delivery, outcome)
        pending = sum(t.pending for t in self._trackers.values())
        self._metrics.buffered.set(pending)

    def _apply(self, delivery: Delivery, outcome: Outcome) -> None:
        where = delivery.where
        tracker = self._trackers.get(where)
        # A completion from an earlier assignment of this partition no longer counts.
        if tracker is None or self._epochs.get(where) != delivery.epoch:
            return
        self._metrics.child(self._metrics.processed, delivery.topic, outcome.value).inc()
        tracker.done(delivery.offset)

    def _update_pauses(self, consumer: KafkaConsumer) -> None:
        wanted = to_pause(
            {where: tracker.pending for where, tracker in self._trackers.items()},
            at_end=self._at_end,
            paused=self._paused,
            limits=self._limits,
            held=bool(self._status.holds()),
        )
        pause = [w for w in wanted if w not in self._paused]
        resume = [w for w in self._paused if w not in wanted]
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in pause])
            self._paused.update(pause)
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in resume])
            self._paused.difference_update(resume)
        self._metrics.paused.set(len(self._paused))

    def _commit(
        self, consumer: KafkaConsumer, partitions: set[Where], *, asynchronous: bool
    ) -> None:
        """Commit every partition whose commit point moved past what the broker confirmed.

        An asynchronous commit is confirmed in `_committed`; one that fails (a rebalance
        in progress, a coordinator moving) stays uncommitted and goes out again next time.
        """
        self._last_commit = self._clock()
        offsets = [
            TopicPartition(t, p, tracker.committable)
            for t, p in sorted(partitions)
            if (tracker := self._trackers.get((t, p))) is not None
            and tracker.uncommitted
            and tracker.committable is not None
        ]
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._committed(None, consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as exc:
            self._committed(exc.args[0], offsets)

    def _committed(self, error: KafkaError | None, offsets: list[TopicPartition]) -> None:
        """librdkafka's commit report (runs inside consume() or commit(), on this thread)."""
        if error is not None:
            self._metrics.commits.labels(result="failed").inc()
            log.warning("offset commit failed; will retry", extra={"error": error.name()})
            return
        self._metrics.commits.labels(result="ok").inc()
        for tp in offsets:
            tracker = self._trackers.get((tp.topic, tp.partition))
            if tp.error is not None or tracker is None:
                continue
            tracker.committed = tp.offset
            self._metrics.committed.labels(topic=tp.topic, partition=str(tp.partition)).set(
                tp.offset
            )

    def _update_lag_seconds(self) -> None:
        now = self._wall()
        for (topic, partition), tracker in self._trackers.items():
            oldest = tracker.oldest_pending_timestamp()
            lag = max(0.0, now - oldest) if oldest is not None else 0.0
            self._metrics.lag_seconds.labels(topic=topic, partition=str(partition)).set(lag)

    # -- rebalance callbacks (they run inside consume(), on this thread) ---------------------

    def _assigned(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            where = (tp.topic, tp.partition)
            self._epochs[where] = self._epochs.get(where, 0) + 1
            self._trackers[where] = PartitionOffsets()
            self._fresh.add(where)
        self._changed()
        self._metrics.rebalances.labels(kind="assign").inc()
        log.info("partitions assigned", extra={"partitions": _names(partitions)})
        if self._lookback is not None:
            # Read back after consume() returns: a second client used inside a rebalance
            # callback upsets confluent-kafka's per-thread call state.
            self._restore_pending.update(
                tp.partition for tp in partitions if tp.topic in self._lookback.topics
            )

    def _resume_fresh(self, consumer: KafkaConsumer) -> None:
        """A partition assigned anew starts unpaused, whatever librdkafka remembers of it
        (a pause from before it was lost, when resuming it could not be done)."""
        if not self._fresh:
            return
        fresh = [TopicPartition(t, p) for t, p in sorted(self._fresh) if (t, p) in self._trackers]
        self._fresh.clear()
        try:
            consumer.resume(fresh)
        except KafkaException as exc:
            log.warning("could not resume assigned partitions", extra={"error": str(exc)})

    def _report_assignment(self, consumer: KafkaConsumer) -> None:
        """After a rebalance, tell the pacing what this member owns, reading partition
        counts not known yet (outside the callback, which must not make broker requests)."""
        if not self._assignment_changed or self._on_assignment is None:
            return
        for topic in set(self._topics) - set(self._partition_counts):
            try:
                found = consumer.list_topics(topic, timeout=5).topics.get(topic)
            except KafkaException as exc:
                log.warning("could not read partition counts", extra={"error": str(exc)})
                continue
            if found is not None and found.error is None and found.partitions:
                self._partition_counts[topic] = len(found.partitions)
        self._report()

    def _report(self) -> None:
        if self._on_assignment is not None:
            self._assignment_changed = False
            self._on_assignment(set(self._trackers), dict(self._partition_counts))

    def _changed(self) -> None:
        """The assignment changed: with the counts known, report at once (no broker request),
        so a released partition's share is given up before its next owner paces for it."""
        self._assignment_changed = True
        if set(self._topics) <= set(self._partition_counts):
            self._report()

    def _restore(self) -> None:
        """Rebuild the device guard's memory before the new partitions' messages go out."""
        lookback, numbers = self._lookback, set(self._restore_pending)
        self._restore_pending.clear()
        if lookback is None or not numbers:
            return
        history = read_back(self._config, lookback.topics, numbers, lookback.records)
        if history:
            lookback.restore(history)
            log.info("device ordering memory restored", extra={"events": len(history)})

    def _revoked(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels(kind="revoke").inc()
        self._release(consumer, partitions, self._drain_timeout, commit=True)
        log.info("partitions revoked", extra={"partitions": _names(partitions)})

    def _lost(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: stop their work, commit nothing.
        self._metrics.rebalances.labels(kind="lost").inc()
        self._release(consumer, partitions, 0.0, commit=False)
        log.warning("partitions lost", extra={"partitions": _names(partitions)})

    def _release(
        self,
        consumer: KafkaConsumer,
        partitions: list[TopicPartition],
        timeout: float,
        *,
        commit: bool,
    ) -> None:
        wheres = {(tp.topic, tp.partition) for tp in partitions} & set(self._trackers)
        if not wheres:
            return
        try:
            self._drain({(w, self._epochs[w]) for w in wheres}, timeout)
        except Exception as exc:  # noqa: BLE001 - whatever the drain did, the partitions go
            # What finished is still committed below; what did not is left to the next owner.
            log.warning(
                "drain failed; unfinished work left uncommitted", extra={"error": repr(exc)}
            )
        try:
            self._apply_completions()
            if commit:
                self._commit(consumer, wheres, asynchronous=False)
        finally:
            self._unpause(consumer, wheres)
            self._forget(wheres)

    def _unpause(self, consumer: KafkaConsumer, wheres: set[Where]) -> None:
        """librdkafka keeps a pause across a revocation and a later re-assignment, where
        this source would no longer know it paused the partition: a stall for good."""
        paused = [TopicPartition(t, p) for t, p in sorted(wheres & self._paused)]
        if not paused:
            return
        try:
            consumer.resume(paused)
        except KafkaException as exc:  # lost partitions may be gone already
            log.warning("could not resume released partitions", extra={"error": str(exc)})

    def _forget(self, wheres: set[Where]) -> None:
        """After this, nothing is ever committed for these partitions by this member."""
        for where in wheres:
            del self._trackers[where]
            self._epochs[where] += 1
            self._paused.discard(where)
            self._at_end.discard(where)
            for gauge in (
                self._metrics.lag_seconds,
                self._metrics.lag_records,
                self._metrics.committed,
            ):
                with contextlib.suppress(KeyError):  # never set for this partition
                    gauge.remove(where[0], str(where[1]))
        self._changed()

    def _shutdown(self, consumer: KafkaConsumer) -> None:
        """Finish in-flight work (bounded), commit, leave the group."""
        log.info(
            "shutting down: draining in-flight work", extra={"grace_seconds": self._shutdown_grace}
        )
        assigned = [TopicPartition(t, p) for t, p in self._trackers]
        try:
            if self._fenced:  # another member owns our partitions now: like on_lost
                self._release(consumer, assigned, 0.0, commit=False)
            else:
                self._release(consumer, assigned, self._shutdown_grace, commit=True)
        finally:
            consumer.close()


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
