"""Per-user order through the processor, however events name the user (SPEC §5): the
earlier event's call is slow, and the later one must still be applied after it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from consumer.dev.emulator.store import Project
from consumer.dev.scenario import Produced, expected_state, normalise
from consumer.messages import Delivery
from tests.test_ordering_model import iterable, produced_event, start

A, B = "a@x.io", "b@x.io"
CASES: dict[str, list[dict[str, Any]]] = {
    "an email after userId and email": [{"userId": "u1", "email": A}, {"email": A}],
    "userId and email after an email": [{"email": A}, {"userId": "u1", "email": A}],
    "an email change without userId after the old email": [
        {"email": A},
        {"email": B, "previousEmail": A},
    ],
    "the new email after a change without userId": [
        {"email": B, "previousEmail": A},
        {"email": B},
    ],
    # Linked by an earlier event naming both: `{email}` then `{userId}` of one user.
    "a userId after an email it was seen with": [
        {"userId": "u1", "email": A, "fast": True},
        {"email": A},
        {"userId": "u1"},
    ],
}


def _slow_unless_fast(body: bytes) -> int:
    # The first event's call (n == 1) takes many loop turns; the others answer at once.
    users = json.loads(body).get("users") or [json.loads(body)]
    return 50 if any(u.get("dataFields", {}).get("n") == 1 for u in users) else 0


async def _apply(events: list[Produced], *, bulk: bool) -> list[dict[str, Any]]:
    project = Project("hybrid")
    project.update({"userId": "u1", "email": A}, 0.0)
    incarnation = start(iterable(project, _slow_unless_fast), bulk)
    for offset, produced in enumerate(events):
        delivery = Delivery("user.changed", 0, offset, 1, None, produced.record.value, (), 0.0)
        incarnation.offsets["user.changed"].add(offset, 0.0)
        incarnation.processor.submit([delivery])
    for _ in range(10_000):
        if not incarnation.offsets["user.changed"].pending:
            break
        await asyncio.sleep(0)
    await incarnation.client.aclose()
    return normalise([user.as_json() for user in project.users])


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
@pytest.mark.parametrize("case", CASES)
def test_a_later_event_naming_the_same_user_is_applied_after_an_earlier_slow_one(
    case: str, bulk: bool
) -> None:
    events: list[Produced] = []
    n = 0
    for data in CASES[case]:
        fast = data.get("fast", False)
        fields = {"n": 0 if fast else (n := n + 1)}
        event = {k: v for k, v in data.items() if k != "fast"} | {"dataFields": fields}
        events.append(produced_event(len(events) + 1, "user.changed", event))
    setup = produced_event(0, "user.changed", {"userId": "u1", "email": A})
    assert asyncio.run(_apply(events, bulk=bulk)) == expected_state([setup, *events], "hybrid")


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_a_duplicate_that_arrives_while_its_original_runs_is_not_applied_again(
    bulk: bool,
) -> None:
    slow = produced_event(1, "user.changed", {"userId": "u1", "dataFields": {"n": 1}})
    newer = produced_event(2, "user.changed", {"userId": "u1", "dataFields": {"n": 2}})
    setup = produced_event(0, "user.changed", {"userId": "u1", "email": A})
    assert asyncio.run(_apply([slow, newer, slow], bulk=bulk)) == expected_state(
        [setup, slow, newer], "hybrid"
    )


def test_a_drain_drops_the_revoked_partitions_waiting_events_and_unblocks_the_others() -> None:
    # Partition 0: a slow event of u1, then one naming u1 and b; partition 1: one naming b.
    values = [
        (0, {"userId": "u1", "dataFields": {"n": 1}}),
        (0, {"userId": "u1", "email": B, "dataFields": {"n": 2}}),
        (1, {"email": B, "dataFields": {"n": 3}}),
    ]

    async def scenario() -> tuple[list[dict[str, Any]], set[tuple[int, int]]]:
        project = Project("hybrid")
        incarnation = start(iterable(project, _slow_unless_fast), bulk=False)
        for offset, (partition, data) in enumerate(values):
            value = produced_event(offset, "user.changed", data).record.value
            delivery = Delivery("user.changed", partition, offset, 1, None, value, (), 0.0)
            incarnation.processor.submit([delivery])
        for _ in range(5):  # the first call is on the wire
            await asyncio.sleep(0)
        await incarnation.processor.drain({(("user.changed", 0), 1)}, timeout=5)
        for _ in range(1000):
            if len(incarnation.finished) == 2:
                break
            await asyncio.sleep(0)
        await incarnation.client.aclose()
        users = normalise([user.as_json() for user in project.users])
        return users, {(d.partition, d.offset) for d in incarnation.finished}

    users, finished = asyncio.run(scenario())
    assert finished == {(0, 0), (1, 2)}  # the waiting partition-0 event is left to its next owner
    assert sorted(u["dataFields"]["n"] for u in users) == [1, 3]


def test_a_call_abandoned_by_a_drain_still_lets_the_events_behind_it_run() -> None:
    # Partition 0's event of u1 never gets an answer; partition 1's event of u1 waits for it.
    values = [
        (0, {"userId": "u1", "dataFields": {"n": 1}}),
        (1, {"userId": "u1", "dataFields": {"n": 2}}),
    ]

    async def scenario() -> tuple[list[dict[str, Any]], set[tuple[int, int]]]:
        project = Project("hybrid")
        never = asyncio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            if json.loads(request.content)["dataFields"]["n"] == 1:
                await never.wait()
            return await answer.handle_async_request(request)

        answer = iterable(project, lambda body: 0)
        incarnation = start(httpx.MockTransport(hang), bulk=False)
        for offset, (partition, data) in enumerate(values):
            value = produced_event(offset, "user.changed", data).record.value
            delivery = Delivery("user.changed", partition, offset, 1, None, value, (), 0.0)
            incarnation.processor.submit([delivery])
        for _ in range(5):  # the first call is on the wire
            await asyncio.sleep(0)
        # A short drain timeout: the call never answers, so the drain gives up on it.
        await incarnation.processor.drain({(("user.changed", 0), 1)}, timeout=0.05)
        for _ in range(1000):
            if incarnation.finished:
                break
            await asyncio.sleep(0)
        await incarnation.client.aclose()
        users = normalise([user.as_json() for user in project.users])
        return users, {(d.partition, d.offset) for d in incarnation.finished}

    users, finished = asyncio.run(scenario())
    assert finished == {(1, 1)}
    assert [u["dataFields"]["n"] for u in users] == [2]
