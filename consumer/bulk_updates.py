"""Bulk mode: `users/update` calls gathered into `users/bulkUpdate` requests (SPEC §6).

Each caller awaits the outcome of its own entry, so a lane still runs one event at a time
and a user's next update cannot leave before the request carrying the previous one has
been answered. Waiting entries go, oldest first, once a request's worth (users or bytes)
is waiting or the oldest has waited its linger time, provided fewer than two requests are
out: behind Iterable's 5 requests/s, entries keep gathering into full requests instead of
queueing as half-empty ones. Per-record failures (`failedUpdates`) fail only their own
entries; failures the answer counts but names no entry for send the unnamed entries again
one by one. A request refused whole for its size (413) is halved; refused whole otherwise,
it is halved once, and a half refused again sends its entries as single `users/update`
calls: by then the cause is likely the request or many records, and singles have their own
500/s budget where bisecting costs ~2n bulk requests at 5/s. A user's next event waits in
its lane meanwhile, so bulk and single updates never overlap for one user (SPEC §6). A
caller that leaves (its partition revoked) stops the request carrying its entry, so that
entry is not retried on after the partition's next owner applied newer events; the other
entries it carried go again in a later request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from consumer.bulk import BulkBatch, BulkLimits, read_failures
from consumer.endpoints import Endpoint
from consumer.errors import PermanentError
from consumer.translate import Call

# The processor's send: a bulk request with its encoded body, or a single call (body None).
Send = Callable[[Call, bytes | None], Awaitable[object]]
# Requests out (paced or on the wire) before waiting entries hold on for an answer: behind
# the pace, a batch keeps filling rather than queueing half empty.
_MAX_WAITING = 2


@dataclass(eq=False, slots=True)
class _Entry:
    call: Call
    outcome: asyncio.Future[None]
    arrived: float
    request: asyncio.Task[None] | None = None  # the request carrying it, once sent
    grow: Callable[[], Call] | None = None  # its call made again as a request is assembled


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
        self._waiting: deque[_Entry] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._requests: dict[asyncio.Task[None], list[_Entry]] = {}
        # Requests stopped because a caller left: their entries still awaited go again.
        self._stopping: set[asyncio.Task[None]] = set()

    async def update(self, call: Call, grow: Callable[[], Call] | None = None) -> None:
        """Send one `users/update` payload in a batch; raise if Iterable refused it.

        `grow`, if given, makes the entry's call again each time a request being assembled
        reaches it (it may carry more of the user's events by then); the call a request
        takes is the one it keeps.
        """
        loop = asyncio.get_running_loop()
        entry = _Entry(call, loop.create_future(), self._clock(), grow=grow)
        self._waiting.append(entry)
        if self._timer is None or len(self._waiting) >= self._limits.max_users:
            self._dispatch()
        try:
            await entry.outcome
        except asyncio.CancelledError:
            # A caller gone (revoked, shutdown) stops its request: retried on, its entry
            # could land after the partition's next owner applied newer events. The
            # entries still awaited go again in a later request.
            request = entry.request
            if request is not None and not request.done():
                self._stopping.add(request)
                request.cancel()
            raise

    def _dispatch(self) -> None:
        """Send every batch that is due while fewer than `_MAX_WAITING` requests are out."""
        now, sent = self._clock(), False
        while self._waiting and len(self._requests) < _MAX_WAITING:
            oldest = self._waiting[0].arrived
            if len(self._waiting) < self._limits.max_users and now - oldest < self._limits.linger:
                break
            entries, body = self._take()
            if entries:
                task = asyncio.create_task(self._deliver(entries, body))
                self._requests[task] = entries
                for entry in entries:
                    entry.request = task
                task.add_done_callback(self._answered)
                sent = True
        if self._timer is not None and (sent or not self._waiting):
            self._timer.cancel()
            self._timer = None
        # Out of request slots, the next answer dispatches; otherwise the linger time does.
        if self._waiting and self._timer is None and len(self._requests) < _MAX_WAITING:
            delay = max(0.0, self._waiting[0].arrived + self._limits.linger - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._lingered)

    def _lingered(self) -> None:
        self._timer = None
        self._dispatch()

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._requests.pop(task, None)
        self._stopping.discard(task)
        self._dispatch()

    def _take(self) -> tuple[list[_Entry], bytes]:
        """The oldest waiting entries that fit one request; a user's second entry waits."""
        batch = BulkBatch(self._limits)
        taken: list[_Entry] = []
        kept: deque[_Entry] = deque()
        while self._waiting and not batch.full():
            entry = self._waiting.popleft()
            if entry.outcome.done():  # its caller is gone (revoked partition, shutdown)
                continue
            if entry.grow is not None:
                entry.call = entry.grow()
            if batch.add(entry.call.payload):
                entry.grow = None
                taken.append(entry)
            elif batch.holds(entry.call.payload):
                kept.append(entry)
            else:  # over the byte bound: it opens the next request
                kept.append(entry)
                break
        kept.extend(self._waiting)
        self._waiting = kept
        return taken, batch.body()

    async def _deliver(
        self, entries: list[_Entry], body: bytes | None = None, *, halved: bool = False
    ) -> None:
        """Send entries as one request; `halved`: they are half of a request refused whole."""
        if body is None:
            batch = BulkBatch(self._limits)
            for entry in entries:
                batch.add(entry.call.payload)
            body = batch.body()
        ids = tuple(i for entry in entries for i in entry.call.identifiers)
        request = Call(Endpoint.BULK_UPDATE, {}, ids)
        self._observe(len(entries))
        try:
            response = await self._send(request, body)
        except PermanentError as exc:
            await self._refused(entries, exc, halved)
            return
        except asyncio.CancelledError:
            self._stopped(entries)
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
            for entry in entries:
                _settle(entry, exc)
            return
        failures = read_failures(response, [entry.call.payload for entry in entries])
        unnamed: list[_Entry] = []
        for index, entry in enumerate(entries):
            reason = failures.refused.get(index)
            if reason is not None:
                _settle(entry, _record_refused(reason))
            elif failures.unaccounted:  # it may have failed unnamed: let Iterable say
                unnamed.append(entry)
            else:
                _settle(entry, None)
        if unnamed:
            await self._singly(unnamed)

    def _stopped(self, entries: list[_Entry]) -> None:
        """A request was cancelled: if a caller left, the entries still awaited wait again
        (oldest first) for the next request; otherwise (shutdown) their waiters hear of it."""
        again = [e for e in entries if e.request in self._stopping and not e.outcome.done()]
        for entry in entries:
            if entry not in again:
                entry.outcome.cancel()
        for entry in again:
            entry.request = None
        self._waiting.extendleft(reversed(again))

    async def _refused(self, entries: list[_Entry], error: PermanentError, halved: bool) -> None:
        """A request Iterable refused whole (4xx; 401/403 never reach here: `send` holds)."""
        if len(entries) == 1:
            _settle(entries[0], error)
        elif not halved or error.status == 413 or error.code == "BatchTooLarge":
            # Once for any refusal (one bad record leaves a half that passes), and again
            # while the size is what Iterable refuses.
            half = len(entries) // 2
            await asyncio.gather(
                self._deliver(entries[:half], halved=True),
                self._deliver(entries[half:], halved=True),
            )
        else:
            await self._singly(entries)

    async def _singly(self, entries: list[_Entry]) -> None:
        """Each entry as its own `users/update`: Iterable's answer is about that record."""
        await asyncio.gather(*(self._single(entry) for entry in entries))

    async def _single(self, entry: _Entry) -> None:
        if entry.outcome.done():  # its caller is gone (revoked partition, shutdown)
            return
        try:
            await self._send(entry.call, None)
        except asyncio.CancelledError:
            self._stopped([entry])
            raise
        except Exception as exc:  # noqa: BLE001 - the waiter must hear of the failure
            _settle(entry, exc)
        else:
            _settle(entry, None)


def _record_refused(reason: str) -> PermanentError:
    return PermanentError(
        Endpoint.BULK_UPDATE,
        f"Iterable refused this user's record ({reason})",
        status=200,
        code=reason,
    )


def _settle(entry: _Entry, error: BaseException | None) -> None:
    if entry.outcome.done():  # its caller was cancelled (revoked partition, shutdown)
        return
    if error is None:
        entry.outcome.set_result(None)
    else:
        entry.outcome.set_exception(error)
