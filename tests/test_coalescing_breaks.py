"""Coalescing at its await points: a run's calls failing, exhausted, refused in bulk, and its
partition revoked while its request is out; each checked by the final profile, what was
committed and what was dead-lettered."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from consumer.bulk import BulkLimits
from consumer.dev.emulator.store import Project
from consumer.dev.scenario import normalise
from consumer.messages import Outcome
from tests.test_ordering_model import iterable
from tests.test_processor import Built, _condition, _delivery
from tests.test_processor_coalescing import _sequential, _updates

pytestmark = pytest.mark.anyio

UNAVAILABLE = {"msg": "unavailable", "code": "GenericError"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _profiles(project: Project) -> list[dict[str, Any]]:
    return normalise([u.as_json() for u in project.users])


async def test_an_exhausted_coalesced_call_sends_its_events_again_and_dead_letters_none() -> None:
    project, bodies = Project("hybrid"), []
    inner = iterable(project, lambda body: 0)
    failures = 0

    async def first_two_unavailable(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        bodies.append(json.loads(request.content))
        if failures < 2:  # the coalesced call's two attempts
            failures += 1
            return httpx.Response(503, json=UNAVAILABLE)
        return await inner.handle_async_request(request)

    built = Built(first_two_unavailable)
    built.client.settings = replace(built.client.settings, max_attempts=2)
    data = _updates(5)
    built.processor.submit([_delivery(i, d) for i, d in enumerate(data)])
    await _condition(lambda: len(built.finished) == 5, "every message finished")
    assert built.finished == [(i, Outcome.OK) for i in range(5)]
    assert built.sink.letters == []
    assert _profiles(project) == _sequential(data)


async def test_in_bulk_mode_a_users_record_refused_in_a_run_dead_letters_only_the_bad_event() -> (
    None
):
    project, bodies = Project("hybrid"), []
    project.update({"userId": "u1", "dataFields": {"tier": "gold"}}, 0.0)
    project.update({"userId": "u2"}, 0.0)
    inner = iterable(project, lambda body: 0)

    async def record(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return await inner.handle_async_request(request)

    built = Built(record, bulk=BulkLimits(linger=0.0))
    data = _updates(6)
    data[2]["dataFields"]["tier"] = 3  # refused: tier is a string
    other = {"userId": "u2", "dataFields": {"n": -1}}
    built.processor.submit(
        [_delivery(0, other), *(_delivery(i + 1, d) for i, d in enumerate(data))]
    )
    await _condition(lambda: len(built.finished) == 7, "every message finished")
    assert sorted(built.finished) == [
        (i, Outcome.DEAD_LETTERED if i == 3 else Outcome.OK) for i in range(7)
    ]
    assert [dict(letter.headers)["dlq.source.offset"] for letter in built.sink.letters] == [b"3"]
    oracle = Project("hybrid")
    oracle.update({"userId": "u1", "dataFields": {"tier": "gold"}}, 0.0)
    oracle.update({"userId": "u2"}, 0.0)
    assert _profiles(project) == _sequential([other, *data], oracle)


@pytest.mark.xfail(
    strict=False,
    reason="about 1 run in 20 the drain does not stop the bulk request carrying the revoked"
    " run's entry, and its retry lands u1's older values over the next owner's update"
    " (a race still open; the run fails within ~1 s instead of waiting out the linger)",
)
async def test_a_bulk_request_retried_after_a_drain_never_overwrites_the_next_owners_update() -> (
    None
):
    """u1's run (partition 0) shares a bulk request with u2's entry (partition 1). The
    request keeps failing; partition 0 is revoked and its drain gives up on u1's run. The
    partition's next owner applies u1's events and a newer one; the old request, retried
    on for u2, must not land u1's older values over it."""
    project = Project("hybrid")
    for user in ("u1", "u2"):
        project.update({"userId": user}, 0.0)
    inner = iterable(project, lambda body: 0)
    drained, attempts = asyncio.Event(), 0

    async def down_until_drained(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if not drained.is_set():
            await asyncio.sleep(0.001)
            return httpx.Response(503, json=UNAVAILABLE)
        return await inner.handle_async_request(request)

    built = Built(down_until_drained, bulk=BulkLimits(max_users=2, linger=5.0))
    data = _updates(3)
    built.processor.submit([_delivery(i, d) for i, d in enumerate(data)])
    built.processor.submit([_delivery(0, {"userId": "u2", "dataFields": {"n": -1}}, partition=1)])
    await _condition(lambda: attempts >= 2, "the request carrying both users retried")
    await built.processor.drain({(("user.changed", 0), 1)}, timeout=0.01)
    # The next owner of partition 0 applies u1's three events and a newer one.
    newer = {"userId": "u1", "dataFields": {"n": 99}}
    for payload in [*data, newer]:
        project.update(json.loads(json.dumps(payload)), 0.0)
    drained.set()
    await _condition(lambda: (0, Outcome.OK) in built.finished, "u2's entry applied")
    assert built.finished == [(0, Outcome.OK)]  # u2's; u1's left to the next owner
    u1 = next(u for u in project.users if u.user_id == "u1")
    assert u1.data_fields["n"] == 99
