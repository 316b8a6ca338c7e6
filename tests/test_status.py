"""What the probes answer: a failure for good fails liveness and readiness at once."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from consumer.probes import make_app
from consumer.status import Status


def _probe(status: Status, path: str, now: float = 10.0) -> tuple[int, object]:
    async def get() -> tuple[int, object]:
        app = make_app(CollectorRegistry(), status, liveness_timeout=60.0, clock=lambda: now)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            return response.status, await response.json()

    return asyncio.run(get())


def test_a_polling_service_is_live_and_ready() -> None:
    status = Status()
    status.polled(9.0)
    assert _probe(status, "/livez") == (200, {"live": True})
    assert _probe(status, "/readyz") == (200, {"ready": True, "reasons": []})


def test_a_fatal_failure_fails_livez_and_readyz_although_polling_goes_on() -> None:
    status = Status()
    status.polled(9.0)
    assert status.fail("kafka FENCED_INSTANCE_ID")
    status.polled(10.0)
    assert _probe(status, "/livez") == (503, {"live": False, "reason": "failed"})
    assert _probe(status, "/readyz") == (503, {"ready": False, "reasons": ["failed"]})


def test_the_first_failure_is_the_one_reported() -> None:
    status = Status()
    assert status.fail("kafka FENCED_INSTANCE_ID")
    assert not status.fail("dead-letter producer _FATAL")
    assert status.failure() == "kafka FENCED_INSTANCE_ID"
