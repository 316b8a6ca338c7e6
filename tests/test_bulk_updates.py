"""Bulk mode's batcher: what goes in one request, and whose failure is whose."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from consumer.bulk import BulkLimits
from consumer.bulk_updates import BulkUpdates
from consumer.endpoints import Endpoint
from consumer.errors import PermanentError, TransientError
from consumer.translate import Call

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeIterable:
    """Answers bulkUpdate like Iterable: a bad email fails its record, `boom` the request."""

    def __init__(self) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.transient = False

    async def send(self, call: Call, body: bytes) -> object:
        assert call.endpoint is Endpoint.BULK_UPDATE
        users = json.loads(body)["users"]
        self.requests.append(users)
        await asyncio.sleep(0)
        if self.transient:
            raise TransientError(Endpoint.BULK_UPDATE, "timed out")
        if any(u.get("dataFields", {}).get("boom") for u in users):
            raise PermanentError(Endpoint.BULK_UPDATE, "Invalid JSON body", status=400)
        bad = [u["email"] for u in users if "@" not in u.get("email", "@")]
        return {"successCount": len(users) - len(bad), "failedUpdates": {"invalidEmails": bad}}


def update(email: str, **fields: Any) -> Call:
    payload = {"email": email, "dataFields": fields}
    return Call(Endpoint.UPDATE, payload, (email,))


async def outcomes(bulk: BulkUpdates, calls: list[Call]) -> list[BaseException | None]:
    return await asyncio.gather(*(bulk.update(c) for c in calls), return_exceptions=True)


async def test_concurrent_updates_share_one_request() -> None:
    iterable = FakeIterable()
    sizes: list[int] = []
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send, observe=sizes.append)
    results = await outcomes(bulk, [update(f"u{n}@x.com", n=n) for n in range(50)])
    assert results == [None] * 50
    assert len(iterable.requests) == 1
    assert [u["dataFields"]["n"] for u in iterable.requests[0]] == list(range(50))
    assert sizes == [50]


async def test_a_lone_update_waits_its_linger_time_then_goes() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.05), iterable.send)
    lone = asyncio.create_task(bulk.update(update("a@x.com")))
    await asyncio.sleep(0)
    assert iterable.requests == []
    await lone
    assert [len(r) for r in iterable.requests] == [1]


async def test_a_full_batch_leaves_without_waiting_for_the_linger_time() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(max_users=10, linger=3600), iterable.send)
    async with asyncio.timeout(5):
        results = await outcomes(bulk, [update(f"u{n}@x.com") for n in range(30)])
    assert results == [None] * 30
    assert [len(r) for r in iterable.requests] == [10, 10, 10]


async def test_a_second_update_for_a_user_goes_in_a_later_request() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    calls = [update("a@x.com", n=1), update("b@x.com", n=1), update("a@x.com", n=2)]
    assert await outcomes(bulk, calls) == [None, None, None]
    assert [[(u["email"], u["dataFields"]["n"]) for u in r] for r in iterable.requests] == [
        [("a@x.com", 1), ("b@x.com", 1)],
        [("a@x.com", 2)],
    ]


async def test_a_refused_record_fails_only_its_own_update() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    results = await outcomes(bulk, [update("a@x.com"), update("not-an-email"), update("c@x.com")])
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], PermanentError)
    assert results[1].code == "invalidEmails"
    assert "not-an-email" not in str(results[1])


async def test_a_refused_request_is_halved_until_the_bad_record_stands_alone() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    calls = [update(f"u{n}@x.com", boom=n == 5) for n in range(16)]
    results = await outcomes(bulk, calls)
    failed = [n for n, result in enumerate(results) if result is not None]
    assert failed == [5]
    assert isinstance(results[5], PermanentError)
    assert results[5].status == 400
    # 1 + 2 + 2 + 2 + 2 requests: log2(16) halvings, not one request per record.
    assert len(iterable.requests) == 9
    accepted = {
        u["email"]
        for r in iterable.requests
        if not any(u["dataFields"]["boom"] for u in r)
        for u in r
    }
    assert accepted == {f"u{n}@x.com" for n in range(16) if n != 5}


async def test_a_failed_request_fails_every_update_in_it() -> None:
    iterable = FakeIterable()
    iterable.transient = True
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    results = await outcomes(bulk, [update("a@x.com"), update("b@x.com")])
    assert all(isinstance(r, TransientError) for r in results)


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.05), iterable.send)
    gone = asyncio.create_task(bulk.update(update("a@x.com")))
    stays = asyncio.create_task(bulk.update(update("b@x.com")))
    await asyncio.sleep(0)
    gone.cancel()
    await stays
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert len(iterable.requests) == 1


async def test_behind_unanswered_requests_waiting_updates_gather_into_full_ones() -> None:
    iterable, gate = FakeIterable(), asyncio.Event()

    async def slow(call: Call, body: bytes) -> object:
        await gate.wait()
        return await iterable.send(call, body)

    bulk = BulkUpdates(BulkLimits(max_users=100, linger=0.0), slow)
    callers = [asyncio.create_task(bulk.update(update(f"u{n}@x.com"))) for n in range(152)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*callers) == [None] * 152
    assert [len(r) for r in iterable.requests] == [1, 1, 100, 50]
