"""The production client against the emulator over real HTTP, with faults injected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from consumer.backoff import Backoff
from consumer.bulk import BulkBatch, BulkLimits, Failures, read_failures
from consumer.dev.emulator.process import EmulatorProcess
from consumer.endpoints import Endpoint
from consumer.errors import CredentialsError, PermanentError
from consumer.iterable import ClientSettings, IterableClient

pytestmark = pytest.mark.anyio

QUICK = Backoff(base=0.01, cap=0.5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--rate-limit", "users/update=100", "--quiet") as process:
        yield process


@pytest.fixture
def fresh(emulator: EmulatorProcess) -> EmulatorProcess:
    emulator.reset()
    return emulator


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


@pytest.fixture
async def client(fresh: EmulatorProcess) -> AsyncIterator[IterableClient]:
    settings = ClientSettings(base_url=fresh.url, api_key=fresh.api_key, backoff=QUICK)
    client = IterableClient(settings)
    yield client
    await client.aclose()


async def test_an_update_lands_in_the_profile(
    fresh: EmulatorProcess, client: IterableClient
) -> None:
    await client.post(Endpoint.UPDATE, {"email": "a@example.com", "dataFields": {"n": 1}})
    assert fresh.user_by_email("a@example.com")["dataFields"] == {"n": 1}  # type: ignore[index]


async def test_a_429_storm_is_absorbed_and_the_client_stops_causing_429s(
    fresh: EmulatorProcess,
) -> None:
    # The client believes it may send 400/s; the project allows 100/s.
    settings = ClientSettings(
        base_url=fresh.url,
        api_key=fresh.api_key,
        backoff=QUICK,
        rates={Endpoint.UPDATE: 400.0},
        burst_seconds=0.05,
    )
    client = IterableClient(settings)
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with semaphore:
            await client.post(Endpoint.UPDATE, {"email": f"u{i}@example.com"})

    await asyncio.gather(*(one(i) for i in range(500)))
    await client.aclose()
    calls = fresh.calls()
    assert len(fresh.state()["users"]) == 500
    statuses = [c["status"] for c in calls]
    assert 429 in statuses[: len(statuses) // 2]
    late = statuses[len(statuses) // 2 :]
    assert late.count(429) / len(late) < 0.05
    assert client.current_rate(Endpoint.UPDATE) < 400


async def test_retry_after_is_honoured(fresh: EmulatorProcess) -> None:
    fresh.faults(throttle_seconds=0.3, retry_after=1)
    sleep = RecordingSleep()
    settings = ClientSettings(base_url=fresh.url, api_key=fresh.api_key, backoff=QUICK)
    client = IterableClient(settings, sleep=sleep)
    await client.post(Endpoint.UPDATE, {"email": "r@example.com"})
    await client.aclose()
    assert 1.0 in sleep.waits
    assert [c["status"] for c in fresh.calls()] == [429, 200]


async def test_a_ten_second_outage_is_retried_through_to_success(
    fresh: EmulatorProcess, client: IterableClient
) -> None:
    fresh.faults(outage_seconds=10)
    await client.post(Endpoint.UPDATE, {"email": "o@example.com", "dataFields": {"k": "v"}})
    statuses = [c["status"] for c in fresh.calls()]
    assert statuses[-1] == 200
    assert set(statuses[:-1]) == {503}
    assert fresh.user_by_email("o@example.com") is not None


async def test_hanging_requests_time_out_and_are_retried(fresh: EmulatorProcess) -> None:
    fresh.faults(hang_rate=1.0, hang_seconds=5)
    settings = ClientSettings(
        base_url=fresh.url, api_key=fresh.api_key, backoff=QUICK, read_timeout=0.3
    )
    client = IterableClient(settings)
    task = asyncio.create_task(client.post(Endpoint.UPDATE, {"email": "h@example.com"}))
    await asyncio.sleep(1.0)
    fresh.faults(hang_rate=0.0)
    await task
    await client.aclose()
    assert fresh.user_by_email("h@example.com") is not None


async def test_a_400_is_permanent_with_code_and_a_redacted_message(
    fresh: EmulatorProcess, client: IterableClient
) -> None:
    with pytest.raises(PermanentError) as caught:
        await client.post(Endpoint.UPDATE, {"email": "sayan"}, identifiers=["sayan"])
    assert (caught.value.status, caught.value.code) == (400, "InvalidEmailAddressError")
    assert caught.value.message.startswith("Invalid email: pii:")
    assert "sayan" not in str(caught.value)
    assert len(fresh.calls()) == 1


async def test_a_wrong_key_is_a_credentials_error(fresh: EmulatorProcess) -> None:
    client = IterableClient(ClientSettings(base_url=fresh.url, api_key="wrong", backoff=QUICK))
    with pytest.raises(CredentialsError) as caught:
        await client.post(Endpoint.UPDATE, {"email": "k@example.com"})
    await client.aclose()
    assert caught.value.code == "BadApiKey"
    assert len(fresh.calls()) == 1


async def test_bulk_partial_failure_maps_to_the_right_entries(
    fresh: EmulatorProcess, client: IterableClient
) -> None:
    await client.post(Endpoint.UPDATE, {"email": "typed@example.com", "dataFields": {"n": 1}})
    batch = BulkBatch(BulkLimits())
    users = [
        {"email": "fine@example.com", "dataFields": {"n": 2}},
        {"email": "typed2@example.com", "dataFields": {"n": "two"}},
        {"userId": "x" * 60},
        {"userId": "fine-2", "dataFields": {"n": 3}},
    ]
    for user in users:
        assert batch.add(user)
    response = await client.post(Endpoint.BULK_UPDATE, json.loads(batch.body()))
    assert read_failures(response, batch.users) == Failures(
        {1: "invalidDataEmails", 2: "invalidUserIds"}
    )
    assert fresh.user_by_email("fine@example.com") is not None
    assert fresh.user_by_id("fine-2") is not None
