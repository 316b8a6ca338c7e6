"""Bulk mode's batcher: what goes in one request, and whose failure is whose."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from consumer.bulk import BulkLimits
from consumer.bulk_updates import BulkUpdates
from consumer.endpoints import Endpoint
from consumer.errors import CredentialsError, PermanentError, TransientError
from consumer.translate import Call

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeIterable:
    """Answers like Iterable: a bad email fails its record, `boom` the whole request (and
    a single update of it), `unnamed` fails its record without naming it; `refuse_bulk`
    refuses every bulkUpdate whole (a request Iterable cannot take), `max_users` refuses
    larger ones with 413. Counts bulk requests and single `users/update` calls."""

    def __init__(self) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.singles: list[dict[str, Any]] = []
        self.transient = False
        self.refuse_bulk = False
        self.max_users: int | None = None
        self.applied: set[str] = set()

    async def send(self, call: Call, body: bytes | None) -> object:
        await asyncio.sleep(0)
        if call.endpoint is Endpoint.UPDATE:
            assert body is None
            self.singles.append(call.payload)
            if call.payload["dataFields"].get("boom") or call.payload["dataFields"].get("unnamed"):
                raise PermanentError(Endpoint.UPDATE, "Invalid data", status=400, code="BadParams")
            self.applied.add(call.payload["email"])
            return {"code": "Success"}
        assert call.endpoint is Endpoint.BULK_UPDATE
        assert body is not None
        users = json.loads(body)["users"]
        self.requests.append(users)
        if self.transient:
            raise TransientError(Endpoint.BULK_UPDATE, "timed out")
        if self.max_users is not None and len(users) > self.max_users:
            raise PermanentError(Endpoint.BULK_UPDATE, "too large", status=413)
        if self.refuse_bulk or any(u.get("dataFields", {}).get("boom") for u in users):
            raise PermanentError(Endpoint.BULK_UPDATE, "Invalid JSON body", status=400)
        bad = [u["email"] for u in users if "@" not in u.get("email", "@")]
        unnamed = [u for u in users if u.get("dataFields", {}).get("unnamed")]
        self.applied.update(u["email"] for u in users if u not in unnamed and "@" in u["email"])
        return {
            "successCount": len(users) - len(bad) - len(unnamed),
            "failCount": len(bad) + len(unnamed),
            "failedUpdates": {"invalidEmails": bad},
        }


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


async def test_a_bad_record_in_a_refused_request_fails_alone() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    calls = [update(f"u{n}@x.com", boom=n == 5) for n in range(16)]
    results = await outcomes(bulk, calls)
    failed = [n for n, result in enumerate(results) if result is not None]
    assert failed == [5]
    assert isinstance(results[5], PermanentError)
    assert results[5].status == 400
    assert iterable.applied == {f"u{n}@x.com" for n in range(16) if n != 5}
    # The request, its two halves; the refused half's 8 records alone, at 500/s.
    assert (len(iterable.requests), len(iterable.singles)) == (3, 8)


async def test_a_request_refused_whole_costs_three_bulk_requests_not_two_per_record() -> None:
    iterable = FakeIterable()
    iterable.refuse_bulk = True
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    results = await outcomes(bulk, [update(f"u{n}@x.com", boom=n == 7) for n in range(1000)])
    # ~2,000 requests at 5/s (7 minutes) by halving; now 3, then each record alone.
    assert len(iterable.requests) == 3
    assert len(iterable.singles) == 1000
    assert [n for n, result in enumerate(results) if result is not None] == [7]
    assert len(iterable.applied) == 999


async def test_a_request_too_large_is_halved_until_it_fits_and_stays_bulk() -> None:
    iterable = FakeIterable()
    iterable.max_users = 100
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    results = await outcomes(bulk, [update(f"u{n}@x.com") for n in range(400)])
    assert results == [None] * 400
    assert iterable.singles == []
    assert len(iterable.applied) == 400
    assert sorted(len(r) for r in iterable.requests if len(r) <= 100) == [100] * 4


async def test_wrong_credentials_fail_the_request_without_splitting_it() -> None:
    requests: list[bytes | None] = []

    async def refusing(call: Call, body: bytes | None) -> object:
        requests.append(body)
        raise CredentialsError(Endpoint.BULK_UPDATE, "Invalid API key", status=401)

    bulk = BulkUpdates(BulkLimits(linger=0.01), refusing)
    results = await outcomes(bulk, [update(f"u{n}@x.com") for n in range(8)])
    assert all(isinstance(r, CredentialsError) for r in results)
    assert len(requests) == 1


async def test_a_failure_counted_but_not_named_is_never_reported_ok() -> None:
    iterable = FakeIterable()
    bulk = BulkUpdates(BulkLimits(linger=0.01), iterable.send)
    calls = [update(f"u{n}@x.com", unnamed=n == 2) for n in range(5)] + [update("bad")]
    results = await outcomes(bulk, calls)
    # `failCount` 2, one named: the named one fails with its reason; the other four are
    # sent alone, and Iterable's answer to each says which one failed.
    assert isinstance(results[5], PermanentError)
    assert results[5].code == "invalidEmails"
    assert isinstance(results[2], PermanentError)
    assert results[2].code == "BadParams"
    assert [n for n, result in enumerate(results) if result is None] == [0, 1, 3, 4]
    assert len(iterable.requests) == 1
    assert sorted(s["email"] for s in iterable.singles) == [f"u{n}@x.com" for n in range(5)]


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
