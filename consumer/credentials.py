"""The credentials hold: a 401/403 means the key is wrong for every call, so every call
waits until one probe, owned here, finds that Iterable accepts the key again.

The probe is not a call waiting for the hold: those belong to partitions that may be
revoked at any time, and with them gone nothing would ever try the key again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from consumer.endpoints import PROBE_EMAIL, Endpoint
from consumer.errors import CredentialsError, IterableError
from consumer.iterable import IterableClient
from consumer.metrics import Metrics
from consumer.status import CREDENTIALS, Status

log = logging.getLogger(__name__)

T = TypeVar("T")


class CredentialsHold:
    def __init__(
        self, client: IterableClient, status: Status, metrics: Metrics, probe_seconds: float
    ) -> None:
        self._client = client
        self._status = status
        self._metrics = metrics
        self._probe_seconds = probe_seconds
        self._ok = asyncio.Event()
        self._ok.set()
        self._generation = 0  # how often the hold was lifted
        self._probe: asyncio.Task[None] | None = None

    async def authorised(self, request: Callable[[], Awaitable[T]]) -> T:
        """Make a call once no hold is on; a 401/403 puts one on and waits."""
        while True:
            await self._ok.wait()
            generation = self._generation
            try:
                return await request()
            except CredentialsError as exc:
                # Refused with the old key while the probe found the key works: just resend.
                if generation == self._generation:
                    self._failed(exc)

    def _failed(self, exc: CredentialsError) -> None:
        self._metrics.credentials_failed.set(1)
        self._ok.clear()
        if self._status.hold(CREDENTIALS):
            log.error(
                "Iterable refuses every call; consumption paused until one succeeds",
                extra={
                    "error": str(exc),
                    "status": exc.status,
                    "code": exc.code,
                    "probe_seconds": self._probe_seconds,
                },
            )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_accepted())

    async def _probe_until_accepted(self) -> None:
        """While the hold is on, try a harmless lookup now and then; the first success lifts it."""
        while True:
            await asyncio.sleep(self._probe_seconds)
            try:
                await self._client.get(Endpoint.GET_BY_EMAIL, {"email": PROBE_EMAIL})
            except CredentialsError:
                continue
            except IterableError:
                pass  # answered by Iterable, so the key was accepted
            except Exception:
                log.exception("the credentials probe failed; trying again")
                continue
            break
        self._generation += 1
        self._ok.set()
        self._status.release(CREDENTIALS)
        self._metrics.credentials_failed.set(0)
        log.warning("Iterable accepts calls again; resuming")
