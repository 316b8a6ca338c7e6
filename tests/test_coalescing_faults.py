"""Coalescing under faults: random updates of two users through the real processor, with
Iterable failing calls at random (before or after applying them), refusing updates whose
field types conflict, and the partition revoked and assigned again at random points (a
drain that waits, or one that gives up at once). Compared with the sequential oracle: the
final profiles, exactly the refused events dead-lettered, and every offset committed."""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumer.backoff import Backoff
from consumer.bulk import BulkLimits
from consumer.dev.emulator.store import ApiError, Project
from consumer.dev.scenario import normalise
from consumer.dlq import DeadLetter, DeadLetterBreaker
from consumer.endpoints import Endpoint
from consumer.iterable import ClientSettings, IterableClient
from consumer.messages import Delivery, Outcome
from consumer.metrics import Metrics
from consumer.offsets import PartitionOffsets
from consumer.ordering import DeviceGuard, DuplicateWindow
from consumer.processor import Processor, ProcessorSettings
from consumer.status import Status
from consumer.translate import Translator
from tests.test_ordering_model import TOPICS, applied, produced_event

USERS = 2
WHERE = ("user.changed", 0)

# -- programs -------------------------------------------------------------------------------

# A top-level scalar written as a number, a string or null: the project types it by its
# first value and refuses the other type after (dead-lettered alone). Objects keep one type
# per inner key, so the difference the README admits (types of fields only inside a
# replaced object) never arises.
_SCALAR = st.sampled_from([1, 2, "s", "t", None])
_OBJECT = st.dictionaries(st.sampled_from("xyz"), st.just(0), min_size=1, max_size=2)
_UPDATE = st.tuples(
    st.just("update"),
    st.integers(0, USERS - 1),
    st.fixed_dictionaries({"a": _SCALAR, "b": _SCALAR, "o": _OBJECT}),
    st.sets(st.sampled_from(["a", "b", "o"]), min_size=1),
    st.booleans(),  # mergeNestedObjects
)
_DRAIN = st.tuples(st.just("drain"), st.sampled_from([0.0, 5.0]))
_DUPLICATE = st.tuples(st.just("duplicate"), st.integers(0, 1000))
_PAUSE = st.tuples(st.just("pause"), st.integers(0, 6))


def programs(drains: bool) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    steps = [_UPDATE, _UPDATE, _UPDATE, _DUPLICATE, _PAUSE, _PAUSE]
    if drains:
        steps.append(_DRAIN)
    return st.lists(st.one_of(*steps), min_size=1, max_size=40)


def _payload(step: tuple[Any, ...]) -> dict[str, Any]:
    _, user, values, written, nested = step
    return {
        "userId": f"u{user}",
        # Each user's own fields: users run concurrently, so a type one user's event sets
        # first is a race the oracle cannot know.
        "dataFields": {f"{key}{user}": values[key] for key in sorted(written)},
        "mergeNestedObjects": nested,
    }


# -- Iterable with faults -------------------------------------------------------------------


def _iterable(project: Project, rng: random.Random, faults: bool) -> httpx.MockTransport:
    async def turns() -> None:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)

    async def handle(request: httpx.Request) -> httpx.Response:
        await turns()
        roll = rng.random() if faults else 1.0
        if roll < 0.15:  # refused before applying
            return httpx.Response(503, json={"msg": "unavailable", "code": "GenericError"})
        answer = applied(project, request)
        if answer.status_code != 200:
            return answer
        await turns()
        if roll < 0.25:  # applied, but the answer is lost
            return httpx.Response(503, json={"msg": "unavailable", "code": "GenericError"})
        return answer

    return httpx.MockTransport(handle)


class _Letters:
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def send(self, record: DeadLetter) -> None:
        assert record.value is not None
        self.ids.append(json.loads(record.value)["id"])


def _message(step: tuple[Any, ...], values: list[bytes], drains: bool) -> bytes | None:
    """The next message: a new update, or again one sent before (None: nothing sent yet)."""
    if step[0] == "update":
        produced = produced_event(len(values), "user.changed", _payload(step))
        assert produced.record.value is not None
        return produced.record.value
    if not values:
        return None
    # Across a drain the window is gone: there a duplicate is the next message (a producer
    # retry), as in the ordering model.
    return values[-1] if drains else values[step[1] % len(values)]


# -- the run --------------------------------------------------------------------------------


async def _run(
    program: list[tuple[Any, ...]], *, bulk: bool, seed: int, faults: bool
) -> tuple[list[dict[str, Any]], list[str], list[str], list[bytes]]:
    """(final profiles, dead-lettered event ids, late completions, the events in order)."""
    rng = random.Random(seed)
    project = Project("hybrid")
    for user in range(USERS):
        project.update({"userId": f"u{user}"}, 0.0)
    client = IterableClient(
        ClientSettings(
            "https://api.test",
            "k",
            rates=dict.fromkeys(Endpoint, 1e9),
            backoff=Backoff(0, 0),
        ),
        transport=_iterable(project, rng, faults),
    )
    letters = _Letters()
    epoch = 1
    offsets: dict[int, PartitionOffsets] = {epoch: PartitionOffsets()}
    revoked: set[int] = set()
    late: list[str] = []

    def complete(delivery: Delivery, outcome: Outcome) -> None:
        if delivery.epoch in revoked:  # its partition was drained: it must stay unfinished
            late.append(f"offset {delivery.offset} epoch {delivery.epoch}: {outcome.value}")
            return
        offsets[delivery.epoch].done(delivery.offset)

    processor = Processor(
        ProcessorSettings(topics=TOPICS, bulk=BulkLimits(linger=0.0) if bulk else None),
        translator=Translator("hybrid"),
        client=client,
        dead_letters=letters,
        guard=DeviceGuard(1000),
        duplicates=DuplicateWindow(1000),
        breaker=DeadLetterBreaker(0.99, 60, 100_000, 60),
        metrics=Metrics(CollectorRegistry()),
        status=Status(),
        complete=complete,
    )
    values: list[bytes] = []  # every message of the partition, by offset
    drains = any(step[0] == "drain" for step in program)
    committed = 0

    def deliver(offset: int) -> None:
        offsets[epoch].add(offset, 0.0)
        processor.submit(
            [Delivery("user.changed", 0, offset, epoch, None, values[offset], (), 0.0)]
        )

    for step in program:
        kind = step[0]
        if kind == "pause":
            for _ in range(step[1]):
                await asyncio.sleep(0)
        elif kind == "drain":
            await processor.drain({(WHERE, epoch)}, timeout=step[1])
            revoked.add(epoch)
            committed = offsets[epoch].committable or committed
            epoch += 1
            offsets[epoch] = PartitionOffsets()
            for offset in range(committed, len(values)):
                deliver(offset)
        else:
            value = _message(step, values, drains)
            if value is None:
                continue
            values.append(value)
            deliver(len(values) - 1)
    for _ in range(200_000):
        if not offsets[epoch].pending:
            break
        await asyncio.sleep(0)
    else:
        raise AssertionError(f"{offsets[epoch].pending} messages never finished")
    await client.aclose()
    return normalise([u.as_json() for u in project.users]), letters.ids, late, values


def _oracle(values: list[bytes]) -> tuple[list[dict[str, Any]], set[str]]:
    """Each distinct event applied alone, in order: the profiles, and the refused ids."""
    project = Project("hybrid")
    for user in range(USERS):
        project.update({"userId": f"u{user}"}, 0.0)
    refused: set[str] = set()
    seen: set[str] = set()
    for value in values:
        event = json.loads(value)
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        try:
            project.update(json.loads(json.dumps(event["data"])), 0.0)
        except ApiError:
            refused.add(event["id"])
    return normalise([u.as_json() for u in project.users]), refused


FAULTS = settings(
    max_examples=int(os.environ.get("FAULT_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check(program: list[tuple[Any, ...]], *, bulk: bool, seed: int, faults: bool) -> None:
    found, letters, late, values = asyncio.run(_run(program, bulk=bulk, seed=seed, faults=faults))
    expected, refused = _oracle(values)
    assert late == []  # nothing of a drained partition finished after its drain
    assert found == expected
    # A dead letter is not remembered as applied: a duplicate of it, or a re-delivery after a
    # drain, is refused and dead-lettered again.
    assert set(letters) == refused


@FAULTS
@given(program=programs(drains=False), seed=st.integers(0, 2**32 - 1))
def test_single_mode_with_failing_calls_ends_as_the_sequence_and_dead_letters_only_refusals(
    program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=False, seed=seed, faults=True)


@FAULTS
@given(program=programs(drains=False), seed=st.integers(0, 2**32 - 1))
def test_bulk_mode_with_failing_requests_ends_as_the_sequence_and_dead_letters_only_refusals(
    program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=True, seed=seed, faults=True)


@FAULTS
@given(program=programs(drains=True), seed=st.integers(0, 2**32 - 1))
def test_single_mode_revoked_and_assigned_again_mid_run_ends_as_the_sequence(
    program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=False, seed=seed, faults=True)


@FAULTS
@given(program=programs(drains=True), seed=st.integers(0, 2**32 - 1))
def test_bulk_mode_revoked_and_assigned_again_mid_run_ends_as_the_sequence(
    program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=True, seed=seed, faults=True)
