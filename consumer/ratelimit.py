"""Token buckets: the client's per-endpoint pacing, and the emulator's enforcement.

Pure: the caller passes the time in, so tests need no clock and no sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def reserve(self, now: float) -> float:
        """Take one token, going into debt if needed; return how long to wait before using it.

        Reservations queue fairly: each caller waits for the tokens reserved before it.
        """
        self._refill(now)
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

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
    """A bucket whose rate halves on a 429 and climbs back by `recovery` per second of calm.

    Multiplicative decrease keeps a 429 storm short; the slow additive climb keeps the
    client from hunting up and down around the server's real limit.
    """

    ceiling: float
    burst: float
    floor: float = 1.0
    recovery: float = 0.05  # fraction of the ceiling regained per second without a 429
    bucket: TokenBucket = field(init=False)
    _last_cut: float = field(init=False, default=float("-inf"))
    _last_recovery: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.ceiling, self.burst)

    @property
    def rate(self) -> float:
        return self.bucket.rate

    def reserve(self, now: float) -> float:
        self._recover(now)
        return self.bucket.reserve(now)

    def throttled(self, now: float) -> None:
        """Iterable said 429: halve the rate (at most once per 100 ms, one storm = one cut)."""
        if now - self._last_cut < 0.1:
            return
        self.bucket.set_rate(max(self.floor, self.bucket.rate / 2), now)
        self._last_cut = self._last_recovery = now

    def _recover(self, now: float) -> None:
        if self.bucket.rate >= self.ceiling or now <= self._last_recovery:
            return
        regained = (now - self._last_recovery) * self.recovery * self.ceiling
        self.bucket.set_rate(min(self.ceiling, self.bucket.rate + regained), now)
        self._last_recovery = now
