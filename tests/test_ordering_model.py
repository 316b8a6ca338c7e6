"""A model of the ordering core: random event streams through the real processor (lanes,
device guard, duplicate window, translator, client) against the emulator's store, compared
with the oracle that applies every event once, in event-time order (with exclusive device
token ownership, under the rule that the newest registration owns the token).

Each call waits a random number of loop turns before and after Iterable applies it, so
completions interleave at random; a restart (after a drain, like a rebalance, or without,
like `kill -9`) kills every task (in-flight calls may or may not have been applied), restores
the guard from the finished device history and re-delivers every message from the committed
offset, as a new process would.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumer.backoff import Backoff
from consumer.bulk import BulkLimits
from consumer.dev.emulator import bodies
from consumer.dev.emulator.store import ApiError, Project
from consumer.dev.scenario import START, Produced, expected_state, normalise
from consumer.dev.topics import Record
from consumer.dlq import DeadLetter, DeadLetterBreaker
from consumer.endpoints import Endpoint
from consumer.iterable import ClientSettings, IterableClient
from consumer.messages import Delivery, Outcome
from consumer.metrics import Metrics
from consumer.offsets import PartitionOffsets
from consumer.ordering import DeviceGuard, DuplicateWindow
from consumer.processor import Processor, ProcessorSettings
from consumer.status import Status
from consumer.translate import DeviceOwnership, Translator

USERS, TOKENS = 2, 2
TOPICS = {t: t for t in ("user.changed", "device.registered", "push.permission.revoked")}
DEVICE_TOPICS = ("device.registered", "push.permission.revoked")
# Email changes re-applied from a replayed suffix are not idempotent in Iterable (an update
# naming an email that has moved on creates a profile), so restarts go with stable emails.
STABLE = ("id", "email", "both")
CHANGING = (*STABLE, "change", "change_id", "old")


# -- programs -------------------------------------------------------------------------------


def _user(variants: tuple[str, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    # Last: the object key the update writes (or none) and its mergeNestedObjects, so runs
    # of a user's updates coalesce, merge objects and end (`consumer.coalesce`).
    variant, user = st.sampled_from(variants), st.integers(0, USERS - 1)
    written = st.none() | st.tuples(st.sampled_from("xyz"), st.booleans())
    return st.tuples(st.just("user"), variant, user, written)


_LATE = st.integers(0, 4)  # how many later events a device event arrives behind


def _register(tokens: int) -> st.SearchStrategy[tuple[Any, ...]]:
    token, user = st.integers(0, tokens - 1), st.integers(0, USERS - 1)
    return st.tuples(st.just("register"), token, user, st.booleans(), _LATE)


def _revoke(tokens: int) -> st.SearchStrategy[tuple[Any, ...]]:
    token, scope = st.integers(0, tokens - 1), st.none() | st.integers(0, USERS - 1)
    return st.tuples(st.just("revoke"), token, scope, _LATE)


_DUPLICATE = st.tuples(st.just("duplicate"), st.integers(0, 1000))


@st.composite
def programs(
    draw: st.DrawFn, users: bool = True, tokens: int = TOKENS, min_size: int = 0
) -> list[tuple[Any, ...]]:
    restarts = draw(st.booleans())
    steps: list[st.SearchStrategy[tuple[Any, ...]]] = [_DUPLICATE]
    if users:
        steps.append(_user(STABLE if restarts else CHANGING))
    if tokens:  # revocations twice: the guard's cases need several events of one token
        steps.extend((_register(tokens), _revoke(tokens), _revoke(tokens)))
    if restarts:
        steps.append(st.tuples(st.just("restart"), st.booleans()))  # True: drained first
    return draw(st.lists(st.one_of(*steps), min_size=min_size, max_size=30))


@dataclass
class Stream:
    """A program made concrete: events in time order, and the order they arrive in."""

    events: list[Produced] = field(default_factory=list)  # originals, seq = time order
    # (topic, value), or a restart: "kill" or "rebalance"
    arrivals: list[tuple[str, bytes] | str] = field(default_factory=list)


def _email(user: int, version: int) -> str:
    return f"u{user}.{version}@x.io"


def build(program: list[tuple[Any, ...]]) -> Stream:
    """Events with times in program order; device events may arrive late, user events not."""
    stream = Stream()
    restarts = any(step[0] == "restart" for step in program)
    versions = [0] * USERS
    olds: list[list[str]] = [[] for _ in range(USERS)]
    slots: list[tuple[float, int, tuple[str, bytes] | str]] = []
    data: dict[str, Any]
    for user in range(USERS):  # every user exists before the stream starts
        data = {"userId": f"u{user}", "email": _email(user, 0)}
        stream.events.append(produced_event(len(stream.events), "user.changed", data))
    for step in program:
        seq, at = len(stream.events), float(len(slots))
        kind = step[0]
        if kind == "restart":
            slots.append((at - 0.25, len(slots), "rebalance" if step[1] else "kill"))
            continue
        if kind == "duplicate":
            originals = [s for s in slots if not isinstance(s[2], str)]
            if originals:
                key, _, message = originals[step[1] % len(originals)]
                assert not isinstance(message, str)
                # A duplicate comes any time later. Across a restart the window is gone, so
                # there a user event's duplicate is the next message of its partition (a
                # producer retry); a device event's the guard still judges.
                adjacent = restarts and message[0] == "user.changed"
                when = key + 0.125 if adjacent else at + 0.5
                slots.append((when, len(slots), message))
            continue
        if kind == "user":
            data = _user_data(step[1], step[2], seq, versions, olds)
            if len(step) > 3 and step[3] is not None:
                _with_object(data, *step[3], seq)
            late, event_type = 0, "user.changed"
        elif kind == "register":
            # Device calls name the profile by its userId (hybrid), which never changes here:
            # device events are ordered per token, not with the user's own events.
            _, token, user, with_email, late = step
            data = {
                "userId": f"u{user}",
                "device": {
                    "token": f"tok{token}",
                    "platform": "GCM",
                    "applicationName": "App",
                    "dataFields": {"seq": seq},
                },
            }
            if with_email:
                data["email"] = _email(user, versions[user])
            event_type = "device.registered"
        else:
            _, token, user, late = step
            data = {"token": f"tok{token}"}
            if user is not None:
                data["userId"] = f"u{user}"
            event_type = "push.permission.revoked"
        produced = produced_event(seq, event_type, data)
        stream.events.append(produced)
        assert produced.record.value is not None
        slots.append(
            (at + late + (0.5 if late else 0), len(slots), (event_type, produced.record.value))
        )
    stream.arrivals = [message for _, _, message in sorted(slots)]
    return stream


def _user_data(
    variant: str, user: int, seq: int, versions: list[int], olds: list[list[str]]
) -> dict[str, Any]:
    # Events naming an email write `email_n`, events naming the userId write `id_n`: an
    # event may run concurrently with one it shares no identifier with, and they commute.
    user_id, current = f"u{user}", _email(user, versions[user])
    if variant in ("change", "change_id"):
        versions[user] += 1
        olds[user].append(current)
        new = _email(user, versions[user])
        data: dict[str, Any] = {"email": new, "previousEmail": current}
        fields = {"email_n": seq}
        if variant == "change_id":
            data["userId"] = user_id
            fields["id_n"] = seq
        return {**data, "dataFields": fields}
    if variant == "id":
        return {"userId": user_id, "dataFields": {"id_n": seq}}
    if variant == "both":
        return {"userId": user_id, "email": current, "dataFields": {"id_n": seq, "email_n": seq}}
    email = olds[user][-1] if variant == "old" and olds[user] else current
    return {"email": email, "dataFields": {"email_n": seq}}


def _with_object(data: dict[str, Any], key: str, nested: bool, seq: int) -> None:
    """Each `*_n` field also written inside an object (`id_o`, `email_o`), merged or not."""
    fields = data["dataFields"]
    for name in [f for f in fields if f.endswith("_n")]:
        fields[name.replace("_n", "_o")] = {key: seq}
    data["mergeNestedObjects"] = nested


def produced_event(seq: int, event_type: str, data: dict[str, Any]) -> Produced:
    value = {
        "specversion": "1.0",
        "id": f"e{seq}",
        "source": "/model",
        "type": event_type,
        "time": (START + timedelta(milliseconds=seq)).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return Produced(event_type, Record(None, json.dumps(value).encode()), seq)


# -- Iterable -------------------------------------------------------------------------------


_POSTS: dict[str, Callable[[Project, dict[str, Any]], object]] = {
    "/api/users/update": lambda p, body: {"msg": p.update(body, 0.0), "code": "Success"},
    "/api/users/registerDeviceToken": lambda p, body: p.register_device(body, 0.0),
    "/api/users/disableDevice": lambda p, body: p.disable_device(body, 0.0),
    "/api/users/updateEmail": lambda p, body: p.update_email(body, 0.0),
    "/api/users/bulkUpdate": lambda p, body: p.bulk_update(body, 0.0),
}


def applied(project: Project, request: httpx.Request) -> httpx.Response:
    """Iterable's answer once the store applied (or refused) the request's body."""
    path = request.url.path
    try:
        result = _POSTS[path](project, bodies.check(path, json.loads(request.content)))
    except ApiError as exc:
        envelope = {"msg": exc.msg, "code": exc.code, "params": exc.params}
        return httpx.Response(exc.status, json=envelope)
    return httpx.Response(200, json=result or {"msg": "ok", "code": "Success"})


def iterable(project: Project, turns: Callable[[bytes], int]) -> httpx.MockTransport:
    """The emulator's store behind a transport; a call waits `turns(body)` loop turns before
    Iterable applies it and as many again before the answer."""

    async def wait(body: bytes) -> None:
        for _ in range(turns(body)):
            await asyncio.sleep(0)

    async def handle(request: httpx.Request) -> httpx.Response:
        await wait(request.content)
        answer = applied(project, request)
        if answer.status_code == 200:
            await wait(request.content)
        return answer

    return httpx.MockTransport(handle)


class _Letters:
    async def send(self, record: DeadLetter) -> None:
        pass


# -- the system under test -------------------------------------------------------------------


@dataclass
class Incarnation:
    """One process: a processor and the offsets it tracks."""

    processor: Processor
    offsets: dict[str, PartitionOffsets]
    client: IterableClient
    metrics: Metrics
    finished: list[Delivery] = field(default_factory=list)


def start(
    transport: httpx.MockTransport, bulk: bool, ownership: DeviceOwnership = "shared"
) -> Incarnation:
    offsets = {topic: PartitionOffsets() for topic in TOPICS}
    # Pacing is timing, not order: unpaced, the model runs thousands of calls in seconds.
    unpaced = dict.fromkeys(Endpoint, 1000000000.0)
    client = IterableClient(
        ClientSettings("https://api.test", "k", rates=unpaced, backoff=Backoff(0, 0)),
        transport=transport,
    )

    finished: list[Delivery] = []

    def complete(delivery: Delivery, outcome: Outcome) -> None:
        offsets[delivery.topic].done(delivery.offset)
        finished.append(delivery)

    metrics = Metrics(CollectorRegistry())
    processor = Processor(
        # No linger: waiting real time for a batch to fill adds nothing to the model.
        ProcessorSettings(topics=TOPICS, bulk=BulkLimits(linger=0.0) if bulk else None),
        translator=Translator("hybrid", device_ownership=ownership),
        client=client,
        dead_letters=_Letters(),
        guard=DeviceGuard(1000, exclusive=ownership == "exclusive"),
        duplicates=DuplicateWindow(1000),
        breaker=DeadLetterBreaker(0.9, 60, 1000, 60),
        metrics=metrics,
        status=Status(),
        complete=complete,
    )
    return Incarnation(processor, offsets, client, metrics, finished)


async def _kill() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run(
    stream: Stream, *, bulk: bool, seed: int, ownership: DeviceOwnership = "shared"
) -> list[dict[str, Any]]:
    """Deliver the stream to the processor; the profiles Iterable ends with."""
    rng = random.Random(seed)
    project = Project("hybrid")
    for produced in stream.events[:USERS]:
        data = json.loads(produced.record.value or b"")["data"]
        project.update(data, 0.0)
    transport = iterable(project, lambda body: rng.randrange(4))
    sent: list[Delivery] = []  # every message in its partitions, in arrival order
    now = start(transport, bulk, ownership)

    def deliver(delivery: Delivery) -> None:
        now.offsets[delivery.topic].add(delivery.offset, 0.0)
        now.processor.submit([delivery])

    for message in stream.arrivals:
        if isinstance(message, str):
            if message == "rebalance":
                await now.processor.drain({((topic, 0), 1) for topic in TOPICS}, timeout=1.0)
            await _kill()
            committed = {t: o.committable or 0 for t, o in now.offsets.items()}
            now = start(transport, bulk, ownership)
            history = [
                d for d in sent if d.topic in DEVICE_TOPICS and d.offset < committed[d.topic]
            ]
            now.processor.restore(history)
            for delivery in sent:
                if delivery.offset >= committed[delivery.topic]:
                    deliver(delivery)
            continue
        topic, value = message
        offset = sum(1 for d in sent if d.topic == topic)
        delivery = Delivery(topic, 0, offset, 1, None, value, (), 0.0)
        sent.append(delivery)
        deliver(delivery)
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
    for _ in range(100_000):
        if not any(o.pending for o in now.offsets.values()):
            break
        await asyncio.sleep(0)
    else:
        raise AssertionError("messages never finished")
    await now.client.aclose()
    return normalise([user.as_json() for user in project.users])


def _check(
    program: list[tuple[Any, ...]], *, bulk: bool, seed: int, ownership: DeviceOwnership = "shared"
) -> None:
    stream = build(program)
    found = asyncio.run(run(stream, bulk=bulk, seed=seed, ownership=ownership))
    assert found == expected_state(stream.events, "hybrid", ownership)


# Derandomized in CI: the same 200 streams every run, which find the known bugs in seconds.
MODEL = settings(
    max_examples=200,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
BULK = pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
OWNERSHIP = pytest.mark.parametrize("ownership", ["shared", "exclusive"])


@BULK
@MODEL
@given(program=programs(tokens=0), seed=st.integers(0, 2**32 - 1))
# Found by this test on the old lanes (issue 11 item 7), kept so they always run.
@example(program=[("user", "both", 0), ("user", "email", 0)], seed=8)
@example(program=[("user", "email", 0), ("user", "change", 0)], seed=8)
@example(program=[("user", "id", 0), ("user", "id", 0), ("duplicate", 0)], seed=0)
def test_user_events_end_as_if_applied_in_event_time_order(
    bulk: bool, program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=bulk, seed=seed)


# Device calls never go through bulk requests; one token makes its events meet more often
# (and, with two users, move between them).
@OWNERSHIP
@settings(MODEL, max_examples=600)
@given(program=programs(users=False, tokens=1, min_size=3), seed=st.integers(0, 2**32 - 1))
# Found by this test on the old guard (issue 11 item 6), kept so they always run: a late
# global revocation re-enabled a registration revoked since (scoped, or globally again).
@example(
    program=[("revoke", 0, None, 3), ("register", 0, 0, False, 0), ("revoke", 0, 0, 0)], seed=0
)
@example(
    program=[("revoke", 0, None, 3), ("register", 0, 0, False, 0), ("revoke", 0, None, 0)], seed=0
)
# Handoffs: A then B, with the older registration or an older global revocation arriving last;
# and (found by this test) a handoff to A arriving after A's newer revocation, which must
# still take the token from B.
@example(program=[("register", 0, 0, False, 2), ("register", 0, 1, False, 0)], seed=0)
@example(
    program=[("register", 0, 1, False, 0), ("register", 0, 0, False, 1), ("revoke", 0, 0, 0)],
    seed=0,
)
@example(
    program=[("revoke", 0, None, 3), ("register", 0, 0, False, 0), ("register", 0, 1, False, 0)],
    seed=0,
)
def test_device_events_end_as_if_applied_in_event_time_order(
    ownership: DeviceOwnership, program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=False, seed=seed, ownership=ownership)


# Bulk requests carry user updates only: exclusive ownership needs no bulk run of its own.
@pytest.mark.parametrize(
    ("bulk", "ownership"),
    [(False, "shared"), (True, "shared"), (False, "exclusive")],
    ids=["single", "bulk", "single-exclusive"],
)
@MODEL
@given(program=programs(), seed=st.integers(0, 2**32 - 1))
def test_mixed_events_end_as_if_applied_in_event_time_order(
    bulk: bool, ownership: DeviceOwnership, program: list[tuple[Any, ...]], seed: int
) -> None:
    _check(program, bulk=bulk, seed=seed, ownership=ownership)
