"""What the probes report: polling progress, readiness, why consumption is held, and
whether the service has failed for good (a fatal Kafka error): then it must stop.

Shared by the Kafka thread and the event loop, so every change takes a lock.
"""

from __future__ import annotations

import threading
from typing import Final

CREDENTIALS: Final = "credentials"
DEAD_LETTER_CIRCUIT: Final = "dead_letter_circuit"
# Holds that make the service unready: an operator must look. Backpressure is not one.
FATAL: Final = frozenset({CREDENTIALS, DEAD_LETTER_CIRCUIT})


class Status:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: set[str] = set()
        self._started = False
        self._last_poll: float | None = None
        self._failure: str | None = None

    def hold(self, reason: str) -> bool:
        """Pause all consumption for `reason`; True if it was not held already."""
        with self._lock:
            new = reason not in self._holds
            self._holds.add(reason)
            return new

    def release(self, reason: str) -> bool:
        with self._lock:
            held = reason in self._holds
            self._holds.discard(reason)
            return held

    def holds(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._holds)

    def fail(self, reason: str) -> bool:
        """Record a failure the service cannot recover from; True if it is the first."""
        with self._lock:
            first = self._failure is None
            self._failure = self._failure or reason
            return first

    def failure(self) -> str | None:
        with self._lock:
            return self._failure

    def polled(self, now: float) -> None:
        with self._lock:
            self._last_poll = now
            self._started = True

    def live(self, now: float, timeout: float) -> bool:
        """The poll loop made progress within `timeout` (or has not started yet), and
        nothing failed for good."""
        with self._lock:
            if self._failure is not None:
                return False
            return self._last_poll is None or now - self._last_poll < timeout

    def ready(self) -> tuple[bool, list[str]]:
        with self._lock:
            reasons = sorted(self._holds & FATAL)
            if self._failure is not None:
                reasons.insert(0, "failed")
            if not self._started:
                reasons.insert(0, "starting")
            return not reasons, reasons
