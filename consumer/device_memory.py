"""What the device guard is fed: which profiles a device event names, when it happened,
and, on assignment, the device events finished before it (the look-back).

Restoring parses on a worker thread and feeds the guard in slices, so the event loop never
stalls for long (a look-back holds up to 10,000 records per partition); device events wait
until every restore under way is applied.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Final

from consumer.errors import InvalidEvent
from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, parse
from consumer.messages import Delivery
from consumer.ordering import DeviceGuard
from consumer.translate import Translator

log = logging.getLogger(__name__)

_SLICE: Final = 200  # guard updates between yields to the loop

_Restored = tuple[datetime, DeviceRegistered | PushPermissionRevoked, tuple[str, ...]]


def profiles_of(
    translator: Translator, device: DeviceRegistered | PushPermissionRevoked | None
) -> tuple[str, ...]:
    """The profile identifiers a device event names, the one its call sends first."""
    if device is None:
        return ()
    named = {"email": device.email, "userId": device.userId}
    sent = translator.device_identifier(device.email, device.userId)
    if sent is None:
        return ()
    others = [f"{k}:{v}" for k, v in named.items() if v is not None and k != sent[0]]
    return (f"{sent[0]}:{sent[1]}", *others)


def event_time(event: Event, delivery: Delivery) -> datetime:
    return event.time or datetime.fromtimestamp(delivery.timestamp, UTC)


class DeviceMemory:
    """Restores the device guard's memory from the look-back, off the loop."""

    def __init__(self, guard: DeviceGuard, translator: Translator, max_event_bytes: int) -> None:
        self._guard = guard
        self._translator = translator
        self._max_event_bytes = max_event_bytes
        self._restoring = 0
        self._restored = asyncio.Event()
        self._restored.set()
        self._tasks: set[asyncio.Task[None]] = set()

    def restore(self, history: list[Delivery]) -> None:
        """Start feeding these finished device events into the guard, in time order."""
        self._restoring += 1
        self._restored.clear()
        task = asyncio.create_task(self._restore(history))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def restored(self) -> None:
        """Wait until every restore under way has been applied."""
        await self._restored.wait()

    async def _restore(self, history: list[Delivery]) -> None:
        try:
            known = await asyncio.to_thread(self._restorable, history)
            for start in range(0, len(known), _SLICE):
                for when, data, profiles in known[start : start + _SLICE]:
                    self._guard.applied(data, profiles, when)
                await asyncio.sleep(0)
        except Exception:
            log.exception("restoring the device ordering memory failed; it starts empty")
        finally:
            self._restoring -= 1
            if not self._restoring:
                self._restored.set()

    def _restorable(self, history: list[Delivery]) -> list[_Restored]:
        """The device events in `history`, parsed, in event-time order (pure; any thread)."""
        known: list[_Restored] = []
        for delivery in history:
            try:
                event = parse(delivery.value, delivery.headers, max_bytes=self._max_event_bytes)
            except InvalidEvent:
                continue
            if isinstance(event.data, DeviceRegistered | PushPermissionRevoked):
                data = event.data
                known.append(
                    (event_time(event, delivery), data, profiles_of(self._translator, data))
                )
        known.sort(key=lambda restored: restored[0])
        return known
