"""Token buckets and the client's per-endpoint pace; the emulator's enforcement.

Pure: the caller passes the time in, so tests need no clock and no sleeps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
_EPSILON = 1e-9  # float slack: a bucket refilled to exactly the ready time holds a token


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; starts full."""

    rate: float
    burst: float
    _tokens: float = field(init=False)
    _updated: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._tokens = self.burst

    def try_take(self, now: float) -> bool:
        """Take one token if there is one (the server's view: admit or reject)."""
        self._refill(now)
        if self._tokens >= 1 - _EPSILON:
            self._tokens -= 1
            return True
        return False

    def ready_at(self, now: float) -> float:
        """When the next whole token is there (now, if one is)."""
        self._refill(now)
        missing = 1 - self._tokens
        return now if missing <= _EPSILON else now + missing / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now


@dataclass(slots=True)
class AdaptiveRate:
    """The pace policy: a 429 cuts the rate once per storm, calm climbs it back.

    A storm is judged by calls sent at the current rate: 429s for calls sent before the
    last cut say nothing about the new rate, so they do not cut again. The floor is a
    share of the ceiling, not 1/s: replicas sharing a project's limit halve each other
    down to it at worst, and climb back from there.
    """

    ceiling: float
    floor_share: float = 0.1
    cut: float = 0.5
    recovery: float = 0.05  # fraction of the ceiling regained per second without a cut
    rate: float = field(init=False)
    _last_cut: float = field(init=False, default=float("-inf"))
    _last_recovery: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        if self.ceiling <= 0:
            raise ValueError("a pace needs a ceiling > 0")
        self.rate = self.ceiling

    @property
    def floor(self) -> float:
        return self.ceiling * self.floor_share

    def throttled(self, now: float, sent: float) -> bool:
        """A 429 for a call sent at `sent`: cut unless the call predates the last cut."""
        self.recover(now)
        if sent < self._last_cut or self.rate <= self.floor:
            return False
        self.rate = max(self.floor, self.rate * self.cut)
        self._last_cut = self._last_recovery = now
        return True

    def set_ceiling(self, ceiling: float) -> None:
        """A new ceiling (this pod's share of the project's limit moved). The rate keeps
        its place relative to the ceiling, so a pod recovering from 429s goes on
        recovering, and one at full pace takes the new ceiling at once."""
        if ceiling <= 0:
            raise ValueError("a pace needs a ceiling > 0")
        self.rate = self.rate * ceiling / self.ceiling
        self.ceiling = ceiling

    def recover(self, now: float) -> bool:
        """Climb back towards the ceiling for the calm since last asked. True if it changed."""
        if self.rate >= self.ceiling or now <= self._last_recovery:
            return False
        regained = (now - self._last_recovery) * self.recovery * self.ceiling
        self.rate = min(self.ceiling, self.rate + regained)
        self._last_recovery = now
        return True


class Pacer(Generic[T]):
    """Callers released one at a time, first come first served, at the current rate.

    Nothing is scheduled ahead: a waiter goes when a token is there, so the k-th in the
    queue goes about k / rate from now at whatever the rate is now, even if it changed.
    """

    __slots__ = ("_bucket", "_queue", "pace")

    def __init__(self, pace: AdaptiveRate, burst: float) -> None:
        self.pace = pace
        self._bucket = TokenBucket(pace.rate, burst)
        self._queue: deque[T] = deque()

    @property
    def rate(self) -> float:
        return self._bucket.rate

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def join(self, item: T, now: float) -> bool:
        """True if `item` may go now; otherwise it is queued behind everyone waiting."""
        self._adjust(now)
        if not self._queue and self._bucket.try_take(now):
            return True
        self._queue.append(item)
        return False

    def due(self, now: float, alive: Callable[[T], bool]) -> list[T]:
        """The queued callers whose turn has come, in arrival order; they leave the queue.

        Callers no longer `alive` (gave up waiting) are dropped without taking a token.
        """
        self._adjust(now)
        released: list[T] = []
        queue = self._queue
        while queue:
            if not alive(queue[0]):
                queue.popleft()
            elif self._bucket.try_take(now):
                released.append(queue.popleft())
            else:
                break
        return released

    def next_due(self, now: float) -> float | None:
        """When the head of the queue may go, or None when nobody waits."""
        return self._bucket.ready_at(now) if self._queue else None

    def throttled(self, now: float, sent: float) -> bool:
        """A 429 for a call sent at `sent`: maybe cut. True if the rate changed (the queue
        is then re-timed)."""
        changed = self.pace.throttled(now, sent)
        if changed:
            self._bucket.set_rate(self.pace.rate, now)
        return changed

    def set_ceiling(self, ceiling: float, now: float) -> None:
        """Pace at a new ceiling from now on; the queue is re-timed at the new rate."""
        self.pace.set_ceiling(ceiling)
        self._bucket.set_rate(self.pace.rate, now)

    def _adjust(self, now: float) -> None:
        if self.pace.recover(now):
            self._bucket.set_rate(self.pace.rate, now)
