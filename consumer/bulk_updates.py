"""Bulk mode: `users/update` calls gathered into `users/bulkUpdate` requests (SPEC §6).

Each caller awaits the outcome of its own entry, so a lane still runs one event at a time
and a user's next update cannot leave before the batch carrying the previous one has been
answered. A batch goes when it is full (users or bytes), when its linger time has passed,
or when a caller brings a second entry for a user it already holds. A whole request that
Iterable refuses is split in halves until the refused entries stand alone; per-record
failures (`failedUpdates`) fail only their own entries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from consumer.bulk import BulkBatch, BulkLimits, failed_entries
from consumer.endpoints import Endpoint
from consumer.errors import PermanentError
from consumer.translate import Call

Send = Callable[[Call, bytes], Awaitable[object]]


@dataclass(eq=False, slots=True)
class _Entry:
    call: Call
    outcome: asyncio.Future[None]


@dataclass(eq=False, slots=True)
class _Open:
    batch: BulkBatch
    entries: list[_Entry] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class BulkUpdates:
    """Collects `users/update` payloads into `users/bulkUpdate` requests."""

    def __init__(
        self,
        limits: BulkLimits,
        send: Send,
        *,
        observe: Callable[[int], None] = lambda users: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._send = send
        self._observe = observe
        self._clock = clock
        self._open: _Open | None = None
        self._requests: set[asyncio.Task[None]] = set()

    async def update(self, call: Call) -> None:
        """Send one `users/update` payload in a batch; raise if Iterable refused it."""
        loop = asyncio.get_running_loop()
        entry = _Entry(call, loop.create_future())
        current = self._open
        if current is not None and current.batch.holds(call.payload):
            self._flush()
            current = None
        if current is None or not current.batch.add(call.payload):
            self._flush()
            current = self._start(loop)
            current.batch.add(call.payload)  # an empty batch takes any one user
        current.entries.append(entry)
        if current.batch.full():
            self._flush()
        await entry.outcome

    def _start(self, loop: asyncio.AbstractEventLoop) -> _Open:
        opened = _Open(BulkBatch(self._limits, opened_at=self._clock()))
        opened.timer = loop.call_later(self._limits.linger, self._linger_over, opened)
        self._open = opened
        return opened

    def _linger_over(self, opened: _Open) -> None:
        if self._open is opened:
            self._flush()

    def _flush(self) -> None:
        opened, self._open = self._open, None
        if opened is None or not opened.entries:
            return
        if opened.timer is not None:
            opened.timer.cancel()
        task = asyncio.create_task(self._deliver(opened.entries, opened.batch.body()))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _deliver(self, entries: list[_Entry], body: bytes | None = None) -> None:
        if body is None:
            batch = BulkBatch(self._limits, opened_at=self._clock())
            for entry in entries:
                batch.add(entry.call.payload)
            body = batch.body()
        ids = tuple(i for entry in entries for i in entry.call.identifiers)
        request = Call(Endpoint.BULK_UPDATE, {}, ids)
        self._observe(len(entries))
        try:
            response = await self._send(request, body)
        except PermanentError as exc:
            if len(entries) == 1:
                _settle(entries[0], exc)
                return
            # One bad record can sink the whole request: halve until it stands alone.
            half = len(entries) // 2
            await asyncio.gather(self._deliver(entries[:half]), self._deliver(entries[half:]))
            return
        except asyncio.CancelledError:
            for entry in entries:
                entry.outcome.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
            for entry in entries:
                _settle(entry, exc)
            return
        failed = failed_entries(response, [entry.call.payload for entry in entries])
        for index, entry in enumerate(entries):
            reason = failed.get(index)
            if reason is None:
                _settle(entry, None)
            else:
                _settle(
                    entry,
                    PermanentError(
                        Endpoint.BULK_UPDATE,
                        f"Iterable refused this user's record ({reason})",
                        status=200,
                        code=reason,
                    ),
                )

    async def aclose(self) -> None:
        """Send what is open and wait for every request to be answered."""
        self._flush()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)


def _settle(entry: _Entry, error: BaseException | None) -> None:
    if entry.outcome.done():  # its caller was cancelled (revoked partition, shutdown)
        return
    if error is None:
        entry.outcome.set_result(None)
    else:
        entry.outcome.set_exception(error)
