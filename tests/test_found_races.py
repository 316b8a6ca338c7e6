"""Races found by trying to break the processor: rebalances, offset resets, gates.

Each test states the outcome an operator relies on (every message finishes, nothing
is lost); a strict xfail names a bug still open.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from consumer.dev.scenario import expected_state
from consumer.messages import Outcome
from tests.test_lanes import A, B, _apply
from tests.test_ordering_model import produced_event
from tests.test_processor import OK, REJECTED, Built, _condition, _delivery

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_dead_letter_parked_when_the_offsets_reset_does_not_stall_its_partition() -> None:
    # The log is truncated (or the offset reset) while a rejected event waits for the
    # breaker to count the one before it: the source re-reads both under a new epoch.
    release = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["userId"] == "slow":
            await release.wait()
            return OK
        return REJECTED

    built = Built(handle)
    first = [_delivery(0, {"userId": "slow"}), _delivery(1, {"userId": "bad"})]
    built.processor.submit(first)
    await asyncio.sleep(0.05)  # offset 1 was refused and waits for offset 0 to be counted
    built.processor.submit(
        [_delivery(0, {"userId": "slow"}, epoch=2), _delivery(1, {"userId": "bad"}, epoch=2)]
    )
    release.set()
    await _condition(lambda: len(built.finished) == 4, "both reads of both offsets to finish")
    assert sorted(o for _, o in built.finished).count(Outcome.DEAD_LETTERED) >= 1


C = "c@x.io"


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_an_email_taken_over_from_another_user_keeps_the_new_owners_events_in_order(
    bulk: bool,
) -> None:
    # u2 leaves b for c; later u1 (a) takes b without naming its userId. The lanes must
    # link b to u1 now, so `{email: b}` and a later `{userId: u1}` stay in order.
    steps: list[tuple[dict[str, Any], int]] = [
        ({"userId": "u1", "email": A}, 0),
        ({"userId": "u2", "email": B}, 0),
        ({"userId": "u2", "email": C, "previousEmail": B}, 0),
        ({"email": B, "previousEmail": A}, 0),
        ({"email": B}, 1),  # slow
        ({"userId": "u1"}, 2),
    ]
    events = [
        produced_event(seq + 1, "user.changed", data | {"dataFields": {"n": n}})
        for seq, (data, n) in enumerate(steps)
    ]
    setup = produced_event(0, "user.changed", {"userId": "u1", "email": A})
    assert asyncio.run(_apply(events, bulk=bulk)) == expected_state([setup, *events], "hybrid")
