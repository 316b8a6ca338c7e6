"""Retry timing: exponential backoff with full jitter, and `Retry-After` parsing. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full jitter: wait a uniform time in [0, min(cap, base * 2**attempt)]."""

    base: float = 0.2
    cap: float = 10.0
    # A server's Retry-After is honoured up to this: a maintenance page or a proxy saying
    # "come back tomorrow" must not hold every call, and its partition, for a day.
    retry_after_cap: float = 300.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before retry number `attempt` (0-based); a server's Retry-After is a floor
        (up to `retry_after_cap`)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 32))
        jittered = rng.uniform(0, ceiling)
        if retry_after is None:
            return jittered
        return max(jittered, min(retry_after, self.retry_after_cap))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
