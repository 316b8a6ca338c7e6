"""Coalescing through the processor: a user's waiting updates go as one `users/update` (or
one bulk entry), end as the sequence would, and still finish one by one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest

from consumer.bulk import BulkLimits
from consumer.dev.emulator.store import ApiError, Project
from consumer.dev.scenario import normalise
from consumer.endpoints import Endpoint
from consumer.messages import Outcome
from tests.test_ordering_model import iterable, start
from tests.test_processor import Built, Handler, _condition, _delivery

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _emulated(project: Project, bodies: list[dict[str, Any]]) -> Handler:
    """The emulator's store, recording each request body it is sent."""
    inner = iterable(project, lambda body: 0)

    async def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return await inner.handle_async_request(request)

    return handle


def _sequential(data: list[dict[str, Any]], project: Project | None = None) -> list[Any]:
    """The oracle: every update applied alone, in order (refused ones change nothing)."""
    project = project or Project("hybrid")
    for payload in data:
        with contextlib.suppress(ApiError):  # a refused update changes nothing
            project.update(json.loads(json.dumps(payload)), 0.0)
    return normalise([user.as_json() for user in project.users])


def _built(project: Project, bodies: list[dict[str, Any]]) -> Built:
    return Built(_emulated(project, bodies))


def _updates(count: int, user: str = "u1", start_at: int = 0) -> list[dict[str, Any]]:
    return [
        {"userId": user, "dataFields": {"n": n, f"k{n % 3}": n, "prefs": {f"p{n % 2}": True}}}
        for n in range(start_at, start_at + count)
    ]


async def _run(built: Built, data: list[dict[str, Any]], **kwargs: Any) -> None:
    built.processor.submit([_delivery(i, d, **kwargs) for i, d in enumerate(data)])
    await _condition(lambda: len(built.finished) == len(data), "every message finished")


async def test_a_burst_for_one_user_goes_as_fewer_calls_with_the_same_final_profile() -> None:
    project, bodies = Project("hybrid"), []
    built = _built(project, bodies)
    data = _updates(20)
    await _run(built, data)
    assert built.finished == [(i, Outcome.OK) for i in range(20)]  # each finished, in order
    assert len(bodies) < 20
    assert normalise([u.as_json() for u in project.users]) == _sequential(data)
    samples = built.metrics.user_update_events.collect()[0].samples
    sums = [s.value for s in samples if s.name.endswith("_sum")]
    assert sums == [20]  # every event counted in some update


async def test_a_refused_event_in_a_run_is_dead_lettered_alone_and_the_rest_applied() -> None:
    project, bodies = Project("hybrid"), []
    project.update({"userId": "u1", "dataFields": {"tier": "gold"}}, 0.0)  # tier is a string
    built = _built(project, bodies)
    data = _updates(6)
    data[3]["dataFields"]["tier"] = 5  # refused: the field's type is string
    await _run(built, data)
    assert sorted(built.finished) == [
        (i, Outcome.DEAD_LETTERED if i == 3 else Outcome.OK) for i in range(6)
    ]
    assert [dict(letter.headers)["dlq.source.offset"] for letter in built.sink.letters] == [b"3"]
    oracle = Project("hybrid")
    oracle.update({"userId": "u1", "dataFields": {"tier": "gold"}}, 0.0)
    assert normalise([u.as_json() for u in project.users]) == _sequential(data, oracle)


async def test_a_revoked_partition_leaves_a_run_in_flight_uncommitted() -> None:
    release = asyncio.Event()
    calls: list[dict[str, Any]] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        await release.wait()
        return httpx.Response(200, json={"msg": "ok", "code": "Success", "params": None})

    built = Built(slow)
    built.processor.submit([_delivery(i, d) for i, d in enumerate(_updates(5))])
    await _condition(lambda: len(calls) == 1, "the coalesced call out")
    await built.processor.drain({(("user.changed", 0), 1)}, timeout=0.05)
    release.set()
    await asyncio.sleep(0.05)
    assert built.finished == []  # the next owner applies them all again


async def test_an_email_change_ends_a_run_and_goes_alone() -> None:
    project, bodies = Project("hybrid"), []
    project.update({"userId": "u1", "email": "a@x.io"}, 0.0)
    built = _built(project, bodies)
    data = [
        {"userId": "u1", "dataFields": {"n": 0}},
        {"userId": "u1", "dataFields": {"n": 1}},
        {"userId": "u1", "email": "b@x.io", "previousEmail": "a@x.io", "dataFields": {"n": 2}},
        {"userId": "u1", "dataFields": {"n": 3}},
        {"userId": "u1", "dataFields": {"n": 4}},
    ]
    await _run(built, data)
    assert [b["dataFields"]["n"] for b in bodies] == [1, 2, 4]
    assert bodies[1]["dataFields"]["email"] == "b@x.io"
    assert project.users[0].email == "b@x.io"
    assert project.users[0].data_fields["n"] == 4


async def test_a_duplicate_in_a_burst_is_skipped_not_coalesced() -> None:
    project, bodies = Project("hybrid"), []
    built = _built(project, bodies)
    first = _delivery(0, {"userId": "u1", "dataFields": {"n": 0}})
    again = _delivery(2, {"userId": "u1", "dataFields": {"n": 0}}, event_id="e0")
    rest = [_delivery(1, {"userId": "u1", "dataFields": {"n": 1}}), again]
    built.processor.submit([first, *rest])
    await _condition(lambda: len(built.finished) == 3, "every message finished")
    assert sorted(built.finished) == [(0, Outcome.OK), (1, Outcome.OK), (2, Outcome.DUPLICATE)]
    assert project.users[0].data_fields["n"] == 1


async def test_users_interleaved_each_end_in_their_own_order() -> None:
    project, bodies = Project("hybrid"), []
    built = _built(project, bodies)
    one, two = _updates(10, "u1"), _updates(10, "u2", start_at=10)
    data = [update for pair in zip(one, two, strict=True) for update in pair]
    await _run(built, data)
    assert normalise([u.as_json() for u in project.users]) == _sequential(data)
    for user in ("u1", "u2"):
        seen = [b["dataFields"]["n"] for b in bodies if b["userId"] == user]
        assert seen == sorted(seen)
        assert len(seen) < 10


async def test_in_bulk_mode_a_users_entry_carries_its_waiting_events() -> None:
    project, bodies = Project("hybrid"), []
    for user in ("u1", "u2"):
        project.update({"userId": user}, 0.0)
    now = start(httpx.MockTransport(_emulated(project, bodies)), bulk=True)
    data = [update for n in range(8) for update in _updates(1, f"u{1 + n % 2}", start_at=n)]
    for offset, payload in enumerate(data):
        delivery = _delivery(offset, payload)
        now.offsets["user.changed"].add(offset, 0.0)
        now.processor.submit([delivery])
    await _condition(lambda: not now.offsets["user.changed"].pending, "every message finished")
    await now.client.aclose()
    assert len(bodies) < 8
    assert all("users" in b for b in bodies)
    oracle = Project("hybrid")
    for user in ("u1", "u2"):
        oracle.update({"userId": user}, 0.0)
    assert normalise([u.as_json() for u in project.users]) == _sequential(data, oracle)


# -- taken late: the followers waiting when the request goes ---------------------------------


def _held(
    project: Project, bodies: list[dict[str, Any]], hold: set[str]
) -> tuple[Handler, asyncio.Event]:
    """The emulator's store, recording each request body as it arrives; a request naming a
    user in `hold` waits for the event before the store sees it."""
    inner, release = iterable(project, lambda body: 0), asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if {u.get("userId") for u in body.get("users", [body])} & hold:
            await release.wait()
        return await inner.handle_async_request(request)

    return handle, release


def _paced(built: Built) -> int:
    """How many calls wait for their users/update pace turn."""
    return built.client._gates[Endpoint.UPDATE].pacer.waiting  # a sync point, not an outcome


def _waiting_for_turn(built: Built) -> None:
    """Pace users/update at 1/s (the burst of one taken by a first call), so the next call
    waits its turn until `_go`."""
    built.client.set_shares({Endpoint.UPDATE: 0.0})


def _go(built: Built) -> None:
    built.client.set_shares({Endpoint.UPDATE: 1.0})  # 1,000/s: the waiting call goes


async def test_updates_arriving_while_the_head_waits_for_its_pace_turn_join_its_call() -> None:
    project, bodies = Project("hybrid"), []
    built = Built(_emulated(project, bodies), rates={Endpoint.UPDATE: 1000.0})
    _waiting_for_turn(built)
    data = [{"userId": "u2", "dataFields": {"n": -1}}, *_updates(6)]
    built.processor.submit([_delivery(0, data[0])])
    await _condition(lambda: len(bodies) == 1, "the first call out, taking the burst")
    built.processor.submit([_delivery(1, data[1])])
    await _condition(lambda: _paced(built) == 1, "u1's first update waiting for its turn")
    built.processor.submit([_delivery(i, d) for i, d in enumerate(data) if i > 1])
    _go(built)
    await _condition(lambda: len(built.finished) == len(data), "every message finished")
    assert built.finished == [(i, Outcome.OK) for i in range(len(data))]
    assert len(bodies) == 2  # u2's, and one for all six of u1's
    assert bodies[1]["dataFields"]["n"] == 5
    assert normalise([u.as_json() for u in project.users]) == _sequential(data)


async def test_a_revocation_while_the_head_waits_for_its_turn_leaves_the_run_uncommitted() -> None:
    project, bodies = Project("hybrid"), []
    built = Built(_emulated(project, bodies), rates={Endpoint.UPDATE: 1000.0})
    _waiting_for_turn(built)
    built.processor.submit([_delivery(0, {"userId": "u2"})])
    await _condition(lambda: len(bodies) == 1, "the first call out, taking the burst")
    built.processor.submit([_delivery(i, d) for i, d in enumerate(_updates(5), start=1)])
    await _condition(lambda: _paced(built) == 1, "u1's first update waiting for its turn")
    await built.processor.drain({(("user.changed", 0), 1)}, timeout=0.01)
    _go(built)
    # A later event of another partition finishes: anything of u1's sent would be before it.
    built.processor.submit([_delivery(0, {"userId": "u3"}, partition=1)])
    await _condition(lambda: len(built.finished) == 2, "the other partition's event")
    assert built.finished == [(0, Outcome.OK), (0, Outcome.OK)]  # u2's, then u3's
    assert [b["userId"] for b in bodies] == ["u2", "u3"]


async def test_a_drain_waits_for_the_updates_a_run_took_late_or_leaves_them_all() -> None:
    project, bodies = Project("hybrid"), []
    handle, release = _held(project, bodies, {"u1"})
    built = Built(handle, rates={Endpoint.UPDATE: 1000.0})
    _waiting_for_turn(built)
    built.processor.submit([_delivery(0, {"userId": "u2"})])
    await _condition(lambda: len(bodies) == 1, "the first call out, taking the burst")
    built.processor.submit([_delivery(1, _updates(1)[0])])
    await _condition(lambda: _paced(built) == 1, "u1's first update waiting for its turn")
    built.processor.submit([_delivery(i, d) for i, d in enumerate(_updates(4), start=2)])
    _go(built)
    await _condition(lambda: len(bodies) == 2, "u1's call out, with what it took late")
    await built.processor.drain({(("user.changed", 0), 1)}, timeout=0.01)
    release.set()
    built.processor.submit([_delivery(0, {"userId": "u3"}, partition=1)])
    await _condition(lambda: len(built.finished) == 2, "the other partition's event")
    assert built.finished == [(0, Outcome.OK), (0, Outcome.OK)]  # none of u1's five


async def test_a_retry_sends_the_body_of_the_first_attempt_not_what_arrived_since() -> None:
    project, bodies = Project("hybrid"), []
    inner = _emulated(project, bodies)
    data = _updates(6)
    failed = False
    built: Built

    async def once_unavailable(request: httpx.Request) -> httpx.Response:
        nonlocal failed
        if failed:
            return await inner(request)
        failed = True
        bodies.append(json.loads(request.content))
        # More of the user's updates arrive while the first attempt is out.
        built.processor.submit([_delivery(i, d) for i, d in enumerate(data) if i >= 3])
        return httpx.Response(503, json={"msg": "unavailable", "code": "GenericError"})

    built = Built(once_unavailable)
    built.processor.submit([_delivery(i, d) for i, d in enumerate(data) if i < 3])
    await _condition(lambda: len(built.finished) == len(data), "every message finished")
    assert built.finished == [(i, Outcome.OK) for i in range(len(data))]
    assert bodies[1] == bodies[0]  # the retry: exactly what the first attempt sent
    assert bodies[0]["dataFields"]["n"] == 2
    assert [b["dataFields"]["n"] for b in bodies[2:]] == [5]  # the later ones, one call
    assert normalise([u.as_json() for u in project.users]) == _sequential(data)


async def test_in_bulk_mode_an_entry_takes_the_updates_that_arrived_while_it_waited() -> None:
    project, bodies = Project("hybrid"), []
    handle, release = _held(project, bodies, {"u2", "u3"})
    built = Built(handle, bulk=BulkLimits(linger=0.0))
    others = [_delivery(0, {"userId": "u2"}), _delivery(1, {"userId": "u3"})]
    built.processor.submit(others)
    await _condition(lambda: len(bodies) == 2, "two bulk requests out: the next entry waits")
    data = _updates(6)
    built.processor.submit([_delivery(2, data[0])])
    bulk = built.processor._bulk  # a sync point, not an outcome
    await _condition(lambda: bulk is not None and len(bulk._waiting) == 1, "u1's entry waiting")
    built.processor.submit([_delivery(i + 2, d) for i, d in enumerate(data) if i > 0])
    release.set()
    await _condition(lambda: len(built.finished) == 8, "every message finished")
    assert sorted(built.finished) == [(i, Outcome.OK) for i in range(8)]
    assert len(bodies) == 3
    assert [u["dataFields"]["n"] for u in bodies[2]["users"]] == [5]  # all six in one entry
    assert normalise([u.as_json() for u in project.users]) == _sequential(
        [{"userId": "u2"}, {"userId": "u3"}, *data]
    )


def _over_100(built_metrics: Any) -> tuple[float, float]:
    """(updates carrying more than 100 events, events counted) from the histogram."""
    samples = built_metrics.user_update_events.collect()[0].samples
    count = next(s.value for s in samples if s.name.endswith("_count"))
    upto_100 = next(s.value for s in samples if s.labels.get("le") == "100.0")
    return count - upto_100, next(s.value for s in samples if s.name.endswith("_sum"))


async def test_a_run_carries_at_most_100_events_alone_and_1000_in_bulk_mode() -> None:
    data = _updates(400)
    project, bodies = Project("hybrid"), []
    single = _built(project, bodies)
    await _run(single, data)
    assert _over_100(single.metrics) == (0, 400)
    assert normalise([u.as_json() for u in project.users]) == _sequential(data)

    project, bodies = Project("hybrid"), []
    project.update({"userId": "u1"}, 0.0)
    bulk = start(httpx.MockTransport(_emulated(project, bodies)), bulk=True)
    for offset in range(len(data)):
        bulk.offsets["user.changed"].add(offset, 0.0)
    bulk.processor.submit([_delivery(offset, payload) for offset, payload in enumerate(data)])
    await _condition(lambda: not bulk.offsets["user.changed"].pending, "every message finished")
    await bulk.client.aclose()
    over, events = _over_100(bulk.metrics)
    assert over >= 1
    assert events == 400
    oracle = Project("hybrid")
    oracle.update({"userId": "u1"}, 0.0)
    assert normalise([u.as_json() for u in project.users]) == _sequential(data, oracle)
