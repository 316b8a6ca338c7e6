"""The processing side, on the event loop: parse, order, send, dead-letter, report back.

Each message becomes an item in the lanes of its entity (`ordering.LaneKeys`): it runs once
every earlier item sharing a lane with it has finished, items sharing none run concurrently
(the client bounds the requests on the wire; in bulk mode user updates share requests).
Every item ends in exactly one `complete(delivery, outcome)` unless its partition is revoked
first, in which case it is dropped uncommitted and the partition's next owner does it again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from consumer.bulk import BulkLimits
from consumer.bulk_updates import BulkUpdates
from consumer.coalesce import MAX_EVENTS, MAX_EVENTS_BULK, Coalesced, coalescible
from consumer.credentials import CredentialsHold
from consumer.device_memory import DeviceMemory, event_time, profiles_of
from consumer.dlq import DeadLetter, DeadLetterBreaker, dead_letter
from consumer.endpoints import Endpoint
from consumer.errors import (
    ConsumerError,
    InvalidEvent,
    PermanentError,
    TransientError,
)
from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, UserChanged, parse
from consumer.iterable import IterableClient, Payload
from consumer.messages import Delivery, Outcome
from consumer.messages import TopicPartition as Where
from consumer.metrics import Metrics
from consumer.ordering import Decision, DeviceGuard, DuplicateWindow, LaneKeys, Lanes
from consumer.redact import pii
from consumer.status import DEAD_LETTER_CIRCUIT, Status
from consumer.translate import Call, Translator

log = logging.getLogger(__name__)

T = TypeVar("T")
# Restored records applied to the device guard between two yields to the loop (~1 ms).
_DEAD: Final = frozenset({Outcome.DEAD_LETTERED, Outcome.INVALID})


class DeadLetterSink(Protocol):
    async def send(self, record: DeadLetter) -> None: ...


@dataclass(eq=False)
class _Item:
    delivery: Delivery
    event: Event | None
    error: InvalidEvent | None = None
    abandoned: bool = False
    done: bool = False
    # Made only when a drain waits for this item: an Event per message costs CPU.
    finished: asyncio.Event | None = None
    keys: tuple[str, ...] = ()  # its lanes; none for an invalid event (no entity)
    waiting: int = 0  # in how many lanes an earlier item is still ahead of it
    task: asyncio.Task[None] | None = None  # the task running it


@dataclass(eq=False, slots=True)
class _Run:
    """A user update (`items[0]`, the head) and the updates waiting behind it alone that it
    takes along, as late as it can: those waiting when its request is made (`_gather`)."""

    items: list[_Item]
    call: Call  # the head's own update
    merged: Coalesced
    size: int  # the members' message bytes
    seen: set[tuple[str, str]]  # the members' event ids
    closed: bool = False  # a follower could not join: nothing behind it may
    made: bool = False  # its update was made for a request


def _plain_update(translator: Translator, event: Event | None) -> Call | None:
    """The event's one `users/update` call if it may be coalesced, else None."""
    if event is None or not isinstance(event.data, UserChanged):
        return None
    calls = translator.calls(event)
    return calls[0] if len(calls) == 1 and coalescible(calls[0]) else None


def _event_id(event: Event | None) -> tuple[str, str]:
    return ("", "") if event is None else (event.source, event.id)


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    topics: dict[str, str]  # topic → event type it must carry
    dlq_suffix: str = ".dlq"
    max_event_bytes: int = 1024 * 1024
    credentials_probe: float = 30.0
    bulk: BulkLimits | None = None  # bulk mode's batch bounds; None sends users one by one


class Processor:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        translator: Translator,
        client: IterableClient,
        dead_letters: DeadLetterSink,
        guard: DeviceGuard,
        duplicates: DuplicateWindow,
        breaker: DeadLetterBreaker,
        metrics: Metrics,
        status: Status,
        complete: Callable[[Delivery, Outcome], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._translator = translator
        self._client = client
        self._dead_letters = dead_letters
        self._guard = guard
        self._duplicates = duplicates
        self._breaker = breaker
        self._metrics = metrics
        self._status = status
        self._complete = complete
        self._clock = clock
        self._wall = wall
        self._lane_keys = LaneKeys()
        self._lanes: Lanes[_Item] = Lanes()
        self._running: set[_Item] = set()
        self._revoked: dict[Where, int] = {}  # partition → newest revoked epoch
        self._credentials = CredentialsHold(client, status, metrics, settings.credentials_probe)
        self._circuit_closed = asyncio.Event()
        self._circuit_closed.set()
        self._gated: set[asyncio.Event] = set()  # work waiting at the circuit, to wake
        # Per partition, dead letters waiting for their outcome to be counted (offset heap).
        self._parked: dict[Where, list[tuple[int, int, asyncio.Event]]] = {}
        self._parking = itertools.count()
        # Per partition, the epoch whose offsets the breaker counts now (since a reset).
        self._counting: dict[Where, int] = {}
        self._memory = DeviceMemory(guard, translator, settings.max_event_bytes)
        self._max_run = MAX_EVENTS if settings.bulk is None else MAX_EVENTS_BULK
        self._bulk = (
            BulkUpdates(settings.bulk, self._send, observe=metrics.bulk_users.observe)
            if settings.bulk is not None
            else None
        )

    # -- intake ---------------------------------------------------------------------------

    def submit(self, deliveries: list[Delivery]) -> None:
        """Queue messages in their lanes (called on the loop, in arrival order)."""
        for delivery in deliveries:
            item = self._item(delivery)
            if item.event is not None:
                item.keys = self._lane_keys(item.event)
            if self._lanes.add(item):
                self._start(item)

    def _start(self, item: _Item) -> None:
        item.task = asyncio.create_task(self._run_lane(item))

    def _item(self, delivery: Delivery) -> _Item:
        if self._breaker.expect(delivery.where, delivery.offset):
            # Offsets went back: dead letters of the earlier read would wait forever to be
            # counted, holding their lanes, and the re-read waits in those lanes.
            self._counting[delivery.where] = delivery.epoch
            for *_, wake in self._parked.pop(delivery.where, []):
                wake.set()
        try:
            event = parse(
                delivery.value,
                delivery.headers,
                expected_type=self._settings.topics.get(delivery.topic),
                max_bytes=self._settings.max_event_bytes,
            )
        except InvalidEvent as exc:
            return _Item(delivery, None, exc)
        return _Item(delivery, event)

    async def _run_lane(self, first: _Item) -> None:
        """Run an item, then one it lets run (any others it frees get tasks of their own).

        A user update takes along the updates waiting behind it alone as its request is
        made, to send as one (`_run`, `_gather`).
        """
        task = asyncio.current_task()
        item: _Item | None = first
        while item is not None:
            if self._is_revoked(item.delivery):
                item = self._next(item)
                continue
            # Judged when it may run, not on arrival: its original may have been running then.
            if item.event is not None and self._duplicates.seen(item.event, item.delivery.where):
                self._finish(item.delivery, Outcome.DUPLICATE)
                item = self._next(item)
                continue
            run = self._run(item)
            members = [item] if run is None else run.items  # a run grows while it waits
            item.task = task
            self._running.add(item)
            try:
                if run is None:
                    self._settle(item, await self._process_until_done(item))
                else:
                    await self._process_run(run)
            except asyncio.CancelledError:
                if not any(member.abandoned for member in members):
                    raise
                if task is not None:
                    task.uncancel()
            finally:
                for member in members:
                    if not member.done:
                        self._settle(member, None)
            item = self._next(item)

    def _settle(self, item: _Item, outcome: Outcome | None) -> None:
        """An item stopped running: finished with `outcome`, or dropped (None)."""
        self._running.discard(item)
        item.done = True
        if item.finished is not None:
            item.finished.set()
        if outcome is not None:
            self._finish(item.delivery, outcome)

    def _next(self, item: _Item) -> _Item | None:
        ready = self._lanes.release(item)
        for other in ready[1:]:
            self._start(other)
        return ready[0] if ready else None

    # -- runs of user updates -------------------------------------------------------------

    def _run(self, head: _Item) -> _Run | None:
        """A run for a user update that may take others along; None for any other item."""
        call = _plain_update(self._translator, head.event)
        if call is None:
            return None
        size = len(head.delivery.value or b"")
        return _Run([head], call, Coalesced(call.payload), size, {_event_id(head.event)})

    def _gather(self, run: _Run) -> Call:
        """Take along the updates waiting behind the run's head now; the run's update.

        Called as its request is made: taken, they are running (a drain waits for or
        abandons them with the head). Nothing joins once the head's partition is revoked.
        """
        head, room = run.items[0], self._max_run - len(run.items)
        run.made = True
        if room > 0 and not run.closed and not self._is_revoked(head.delivery):
            followers = self._lanes.take(head, lambda item: self._joins(run, item), room)
            for follower in followers:
                follower.task = head.task
                self._running.add(follower)
            run.items.extend(followers)
        if len(run.items) == 1:
            return run.call
        return Call(Endpoint.UPDATE, run.merged.payload, run.call.identifiers)

    def _joins(self, run: _Run, item: _Item) -> bool:
        """Whether `item` joins the run (merged into it if so); the first that does not
        closes the run: it would not join later either."""
        try:
            joined = self._merge(run, item)
        except Exception:
            log.exception("unexpected error coalescing user updates; sending them apart")
            joined = False
        run.closed = not joined
        return joined

    def _merge(self, run: _Run, item: _Item) -> bool:
        delivery, event, head = item.delivery, item.event, run.items[0].delivery
        if event is None or (delivery.where, delivery.epoch) != (head.where, head.epoch):
            return False  # a revocation drops or keeps a partition's items together
        if _event_id(event) in run.seen or self._duplicates.seen(event, delivery.where):
            return False  # a duplicate is judged after its original ran, as it would be
        size = run.size + len(delivery.value or b"")
        if size > self._settings.max_event_bytes:
            return False
        update = _plain_update(self._translator, event)
        if update is None or not run.merged.add(update.payload):
            return False
        run.size = size
        run.seen.add(_event_id(event))
        return True

    async def _process_run(self, run: _Run) -> None:
        """Send a run as one update; if that fails, process its events one by one, so only
        a bad one is dead-lettered (and a good one not reported applied unless it was)."""
        await self._circuit_gate(run.items[0])
        try:
            await self._send_run(run)
        except Exception as exc:  # transient: ITERABLE_MAX_ATTEMPTS; others retried singly
            if not isinstance(exc, PermanentError | TransientError):
                log.exception("unexpected error sending user updates; sending them singly")
            await self._run_failed(run, exc)
            return
        for item in run.items:
            assert item.event is not None  # noqa: S101 - a run holds parsed user updates
            self._duplicates.remember(item.event, item.delivery.where)
            self._settle(item, Outcome.OK)

    async def _send_run(self, run: _Run) -> None:
        """The run's update, made as late as its request: in bulk mode when the request is
        assembled, else once the call's pace turn came (once: a retry sends the same)."""
        try:
            if self._bulk is not None:
                await self._bulk.update(run.call, grow=lambda: self._gather(run))
                return
            made: Call | None = None

            def payload() -> dict[str, object]:
                nonlocal made
                made = made or self._gather(run)
                return made.payload

            await self._send(run.call, payload=payload)
        finally:
            if run.made:
                self._metrics.user_update_events.observe(len(run.items))

    async def _run_failed(self, run: _Run, exc: Exception) -> None:
        """The run's update failed: a head alone is given up on as `_process` would; a run's
        events go again one by one, so only a bad one is dead-lettered."""
        if isinstance(exc, PermanentError | TransientError) and len(run.items) == 1:
            await self._give_up(run.items[0], exc, attempts=exc.attempts)
            self._settle(run.items[0], Outcome.DEAD_LETTERED)
            return
        for item in run.items:
            self._settle(item, await self._process_until_done(item))

    # -- one message ----------------------------------------------------------------------

    async def _process_until_done(self, item: _Item) -> Outcome:
        """Process; an unexpected error is logged and retried, never skipped (no loss)."""
        while True:
            try:
                return await self._process(item)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:
                log.exception(
                    "unexpected error processing a message; retrying",
                    extra={
                        "topic": item.delivery.topic,
                        "partition": item.delivery.partition,
                        "offset": item.delivery.offset,
                    },
                )
                await asyncio.sleep(1.0)

    async def _process(self, item: _Item) -> Outcome:
        await self._circuit_gate(item)
        if item.event is None:
            assert item.error is not None  # noqa: S101 - an item has an event or an error
            await self._give_up(item, item.error, attempts=0)
            return Outcome.INVALID
        event, data = item.event, item.event.data
        device = data if isinstance(data, DeviceRegistered | PushPermissionRevoked) else None
        profiles, when = profiles_of(self._translator, device), event_time(event, item.delivery)
        decision = Decision(stale=False)
        if device is not None:
            await self._memory.restored()  # the guard's memory of these partitions first
            decision = self._guard.decide(device, profiles, when)
            if decision.stale:
                return Outcome.STALE
        calls = self._translator.calls(event)
        if decision.disable_only:  # a handoff's disableDevice alone: its registration is stale
            calls, profiles = calls[:1], ()
        for index, call in enumerate(calls):
            try:
                await self._dispatch(call)
            except (PermanentError, TransientError) as exc:  # transient: ITERABLE_MAX_ATTEMPTS
                user_id = getattr(data, "userId", None)
                if (
                    isinstance(exc, PermanentError)
                    and call.email_change
                    and await self._email_change_applied(call, user_id)
                ):
                    continue
                if index and isinstance(device, DeviceRegistered):  # a handoff's disable went out
                    self._guard.disabled_everywhere(device.device.token, when)
                await self._give_up(item, exc, attempts=exc.attempts)
                return Outcome.DEAD_LETTERED
        await self._replay(decision.replay)
        if device is not None:
            self._guard.applied(device, profiles, when)
            if decision.handoff:
                self._handed_off(item.delivery, decision.taken_from, profiles)
        self._duplicates.remember(event, item.delivery.where)
        return Outcome.OK

    def _handed_off(
        self, delivery: Delivery, taken_from: tuple[str, ...], profiles: tuple[str, ...]
    ) -> None:
        """Count a handoff; log one that moved the token from a profile known to hold it."""
        self._metrics.child(self._metrics.handoffs, "known" if taken_from else "unknown").inc()
        if taken_from:
            log.info(
                "device token handed off to another profile",
                extra={
                    "topic": delivery.topic,
                    "partition": delivery.partition,
                    "offset": delivery.offset,
                    "from": sorted({_redacted(p) for p in taken_from}),
                    "to": _redacted(profiles[0]),
                },
            )

    async def _dispatch(self, call: Call) -> None:
        """User updates go through the bulk batcher in bulk mode, everything else alone."""
        if call.endpoint is Endpoint.UPDATE:
            self._metrics.user_update_events.observe(1)
            if self._bulk is not None:
                await self._bulk.update(call)
                return
        await self._send(call)

    async def _send(
        self, call: Call, body: bytes | None = None, *, payload: Payload | None = None
    ) -> object:
        """Send until Iterable accepts or refuses for good; wrong credentials are waited out.

        `payload`: made when the call goes instead of `call.payload` (`IterableClient.post`).
        """
        sent = call.payload if payload is None else payload
        return await self._credentials.authorised(lambda: self._post(call, sent, body))

    async def _post(self, call: Call, payload: Payload, body: bytes | None) -> object:
        self._metrics.in_flight.inc()
        try:
            return await self._client.post(call.endpoint, payload, call.identifiers, body)
        finally:
            self._metrics.in_flight.dec()

    async def _replay(self, registrations: tuple[DeviceRegistered, ...]) -> None:
        """Re-send registrations that are newer than the global revocation just applied (no
        handoff's disableDevice: that revocation disabled every profile already)."""
        for registration in registrations:
            try:
                await self._dispatch(self._translator.register(registration))
            except PermanentError as exc:
                log.warning("re-sending a newer registration failed", extra={"code": exc.code})

    async def _email_change_applied(self, call: Call, user_id: str | None) -> bool:
        """A replayed change is done when the old email is gone and the new one exists.

        With a userId, the new email's profile must be that user's, not someone else's.
        """
        assert call.email_change is not None  # noqa: S101 - only called for email changes
        old, new = call.email_change
        try:
            old_user = await self._by_email(old)
            new_user = await self._by_email(new)
        except PermanentError:
            return False
        if old_user is not None or new_user is None:
            return False
        return user_id is None or new_user.get("userId") == user_id

    async def _by_email(self, email: str) -> dict[str, object] | None:
        """The profile with this email, or None (waits out a credentials hold like any call)."""
        found = await self._credentials.authorised(
            lambda: self._client.get(Endpoint.GET_BY_EMAIL, {"email": email}, (email,))
        )
        user = found.get("user") if isinstance(found, dict) else None
        return user if isinstance(user, dict) and user else None

    async def _give_up(self, item: _Item, error: ConsumerError, attempts: int) -> None:
        """Dead-letter once the breaker has judged it in offset order, never while open.

        Counted before it is sent, so a bad deploy is judged on the stream's dead letters
        before the buffered ones go out, not after.
        """
        delivery, now = item.delivery, self._clock()
        self._breaker.record(delivery.where, delivery.offset, True, now)
        self._judged(delivery, now)
        await self._circuit_gate(item, counted=True)
        await self._dead_letter(delivery, error, attempts)

    async def _circuit_gate(self, item: _Item, *, counted: bool = False) -> None:
        """While the dead-letter circuit is open no work starts and nothing is dead-lettered.

        With `counted`, also wait until the breaker counted this message's outcome. An item
        whose partition is revoked meanwhile is abandoned (left for the partition's next
        owner), as a drain abandons calls that outlive it.
        """
        delivery = item.delivery
        while True:
            head = self._breaker.head(delivery.where) if counted else None
            uncounted = (
                head is not None
                and delivery.offset >= head
                and delivery.epoch >= self._counting.get(delivery.where, 0)
            )
            if self._circuit_closed.is_set() and not uncounted:
                return
            if self._is_revoked(delivery):
                item.abandoned = True
                raise asyncio.CancelledError
            wake = asyncio.Event()
            self._gated.add(wake)
            if uncounted:
                parked = self._parked.setdefault(delivery.where, [])
                heapq.heappush(parked, (delivery.offset, next(self._parking), wake))
            try:
                await wake.wait()
            finally:
                self._gated.discard(wake)

    def _wake_gates(self) -> None:
        for wake in self._gated:
            wake.set()

    def _judged(self, delivery: Delivery, now: float) -> None:
        """After an outcome was recorded: update the circuit, wake dead letters now counted."""
        self._check_breaker(now)
        parked = self._parked.get(delivery.where)
        if not parked:
            return
        head = self._breaker.head(delivery.where)
        while parked and (head is None or parked[0][0] < head):
            heapq.heappop(parked)[2].set()

    async def _dead_letter(self, delivery: Delivery, error: ConsumerError, attempts: int) -> None:
        record = dead_letter(
            dlq_topic=delivery.topic + self._settings.dlq_suffix,
            source_topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
            key=delivery.key,
            value=delivery.value,
            headers=delivery.headers,
            error=error,
            attempts=attempts,
            failed_at=self._wall(),
            source_timestamp=delivery.timestamp,
        )
        await self._dead_letters.send(record)
        self._metrics.dead_letters.labels(topic=delivery.topic).inc()
        log.info(
            "message dead-lettered",
            extra={
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "error": str(error),
                "key": pii(delivery.key.decode("utf-8", "replace")) if delivery.key else None,
            },
        )

    def _finish(self, delivery: Delivery, outcome: Outcome) -> None:
        # A dead letter's outcome was recorded before it was sent; recording again is a no-op.
        dead = None if outcome is Outcome.DUPLICATE else outcome in _DEAD
        now = self._clock()
        self._breaker.record(delivery.where, delivery.offset, dead, now)
        self._judged(delivery, now)
        if log.isEnabledFor(logging.DEBUG):  # one line per message: the demo's outcome table
            log.debug(
                "message finished",
                extra={
                    "topic": delivery.topic,
                    "partition": delivery.partition,
                    "offset": delivery.offset,
                    "outcome": outcome.value,
                },
            )
        self._complete(delivery, outcome)

    def check_breaker(self) -> None:
        """Hold consumption while the dead-letter circuit is open; release it after."""
        self._check_breaker(self._clock())

    def _check_breaker(self, now: float) -> None:
        is_open = self._breaker.is_open(now)
        if is_open != self._circuit_closed.is_set():
            return  # no change (checked per message: no lock taken)
        if is_open:
            self._circuit_closed.clear()
            if self._status.hold(DEAD_LETTER_CIRCUIT):
                self._metrics.circuit_open.set(1)
                log.error("dead-letter circuit open: too many dead letters; consumption paused")
        else:
            self._circuit_closed.set()
            self._wake_gates()
            if self._status.release(DEAD_LETTER_CIRCUIT):
                self._metrics.circuit_open.set(0)
                log.warning("dead-letter circuit closed; resuming")

    def restore(self, history: list[Delivery]) -> None:
        """Feed device events finished before an assignment into the guard (`DeviceMemory`);
        called on the loop before the new partitions' messages are submitted."""
        self._memory.restore(history)

    # -- revocation and shutdown ----------------------------------------------------------

    def _is_revoked(self, delivery: Delivery) -> bool:
        return delivery.epoch <= self._revoked.get(delivery.where, 0)

    async def drain(self, partitions: set[tuple[Where, int]], timeout: float) -> None:
        """Let in-flight work of these partitions finish (up to `timeout`); drop the rest."""
        for where, epoch in partitions:
            self._revoked[where] = max(epoch, self._revoked.get(where, 0))
        self._wake_gates()  # work waiting at an open circuit gives up its place
        try:
            await self._settle_revoked(timeout)
        finally:
            # After in-flight work finished: a call finishing late must not re-add entries.
            for where, _ in partitions:
                self._duplicates.forget(where)
                self._breaker.forget(where)
                self._parked.pop(where, None)
                self._counting.pop(where, None)

    async def _settle_revoked(self, timeout: float) -> None:
        for item in self._lanes.drop(lambda i: self._is_revoked(i.delivery)):
            self._start(item)
        running = [item for item in self._running if self._is_revoked(item.delivery)]
        if not running:
            return
        for item in running:
            item.finished = item.finished or asyncio.Event()
        waits = [asyncio.create_task(_finished(item)) for item in running]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        lanes: set[asyncio.Task[None]] = set()
        for item in running:
            if not item.done and item.task is not None:
                item.abandoned = True
                lanes.add(item.task)
        for lane in lanes:  # once per task: a run's items share one, which uncancels once
            lane.cancel()
        if pending:
            log.warning(
                "revoked partitions had calls still running; left uncommitted",
                extra={"calls": len(pending)},
            )


async def _finished(item: _Item) -> None:
    assert item.finished is not None  # noqa: S101 - made by the drain before waiting
    await item.finished.wait()


def _redacted(profile: str) -> str:
    """A guard profile ("email:…", "userId:…") as the kind and the redacted value."""
    kind, _, value = profile.partition(":")
    return f"{kind}:{pii(value)}"
