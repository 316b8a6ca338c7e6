"""Fault injection and rate limits for the emulator, adjustable while it runs."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from consumer.ratelimit import TokenBucket

# Iterable's documented per-project limits (requests/s), by rate-limit group.
DOCUMENTED_LIMITS: Final = {
    "users/update": 500.0,
    "users/registerDeviceToken": 500.0,
    "users/bulkUpdate": 5.0,
    "users/get": 100.0,
    "users/delete": 100.0,
}


def limit_group(method: str, path: str) -> str | None:
    """The rate-limit group of a request, or None for endpoints without a documented limit."""
    if method == "GET":
        return "users/get"
    if method == "DELETE":
        return "users/delete"
    group = path.removeprefix("/api/")
    return group if group in DOCUMENTED_LIMITS else None


@dataclass
class Faults:
    """What goes wrong, and how slowly. Times ending in `_until` are monotonic seconds."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    latency_distribution: str = "uniform"  # or "exponential" (jitter is then the mean)
    error_rates: dict[int, float] = field(default_factory=dict)
    hang_rate: float = 0.0
    hang_seconds: float = 300.0
    apply_then_fail_rate: float = 0.0
    outage_until: float = 0.0
    outage_status: int = 503
    throttle_until: float = 0.0
    retry_after: float | None = None
    non_json_errors: bool = False
    success_code_on_401: bool = False

    def update(self, patch: dict[str, Any], now: float) -> None:
        """Apply an admin patch; `outage_seconds`/`throttle_seconds` count from now."""
        for key, value in patch.items():
            if key == "outage_seconds":
                self.outage_until = now + float(value)
            elif key == "throttle_seconds":
                self.throttle_until = now + float(value)
            elif key == "error_rates":
                self.error_rates = {int(status): float(p) for status, p in value.items()}
            elif key in self.__dataclass_fields__ and not key.endswith("_until"):
                setattr(self, key, value)
            else:
                raise ValueError(f"unknown fault setting {key!r}")

    def as_json(self, now: float) -> dict[str, Any]:
        data = asdict(self)
        data["outage_seconds_left"] = max(0.0, self.outage_until - now)
        data["throttle_seconds_left"] = max(0.0, self.throttle_until - now)
        return data

    def delay(self, rng: random.Random) -> float:
        jitter = self.latency_jitter_ms
        if jitter <= 0:
            extra = 0.0
        elif self.latency_distribution == "exponential":
            extra = rng.expovariate(1 / jitter)
        else:
            extra = rng.uniform(0, jitter)
        return (self.latency_ms + extra) / 1000

    def injected_status(self, rng: random.Random) -> int | None:
        """A status to answer instead of doing the work, drawn from `error_rates`."""
        draw = rng.random()
        for status, probability in self.error_rates.items():
            if draw < probability:
                return status
            draw -= probability
        return None


class RateLimits:
    """One token bucket per rate-limit group; `None` switches a group's limit off."""

    def __init__(self, limits: dict[str, float | None], burst_seconds: float = 1.0) -> None:
        self.burst_seconds = burst_seconds
        self._buckets: dict[str, TokenBucket | None] = {}
        self.set(limits)

    def set(self, limits: dict[str, float | None]) -> None:
        for group, rate in limits.items():
            if group not in DOCUMENTED_LIMITS:
                raise ValueError(f"unknown rate-limit group {group!r}")
            self._buckets[group] = (
                None if rate is None else TokenBucket(rate, max(1.0, rate * self.burst_seconds))
            )

    def admit(self, group: str | None, now: float) -> bool:
        bucket = self._buckets.get(group) if group else None
        return bucket is None or bucket.try_take(now)

    def as_json(self) -> dict[str, float | None]:
        return {g: (b.rate if b else None) for g, b in self._buckets.items()}
